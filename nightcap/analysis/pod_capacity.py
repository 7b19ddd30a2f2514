"""One pod, one number: the capacity a run plans on for one pod shape, and what later stages found when they met it.

The first stage that finds the knee of a pod shape (tune for the chosen size, else a ramp) confirms it on fresh
windows (`nightcap.search.confirm`); that is `capacity.per_pod`, measured once. Every later stage that meets the same
pod (same CPU, memory, concurrency and replica count) measures a few fresh windows at the same users and
*verifies* it instead of searching again:

- the windows agree with the figure (their difference within its own 95% interval): they join it. The figure is
  then the mean of every fresh window that measured the pod in the run, and its interval comes from batch means
  over that sequence of windows (`confidence.over_time`), which holds the machine's drift between stages: one
  stage's few windows cannot see it (five runs' confirmations alone disagreed by more than their intervals);
- they disagree: the two configurations are measured interleaved (A, B, A, B) to decide, `settle`:
  - same configuration (only time differs): more windows now; if those agree with the figure, the first ones
    were a transient; if not, the machine changed since: **unstable**;
  - another generator count: the pairs' ratio (drift cancels within a pair) decides: within 1 and the figure
    holds → a transient; above 1 with more generators → one generator limited the load, and the figure becomes
    the stage's windows; otherwise **unstable**.
  An unstable figure keeps both estimates and plans on the lower, never on a midpoint nobody measured.
- a ramp that walks past the figure's users to the SLO capacity finds levels wholly above its interval: the knee
  was placed on a flat step that one noisy window made (tune compares candidates on one window a level). The best
  of them is measured on fresh windows; when those lie wholly above the figure too, they are the figure (`move_up`,
  outcome "higher"), and the earlier one stays in the check's note.

Pure: windows in, decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from nightcap.analysis.confidence import Estimate, agree, between_windows, over_time, paired_ratio
from nightcap.steps import StepRow

Outcome = Literal["agrees", "transient", "bottleneck", "unstable", "higher"]

# Differences within 2% are not acted on even when the intervals can tell them apart (a deterministic reference
# server gives intervals of ± 0.5%): no plan changes by 2%, and re-measuring or calling a pod unstable over it
# would cost more than it tells.
MARGIN = 0.02


def _agree(a: Estimate, b: Estimate) -> bool:
    return agree(a, b) or abs(a.mean - b.mean) <= MARGIN * max(a.mean, b.mean)


def _same(ratio: Estimate) -> bool:
    """A ratio of two configurations whose interval reaches 1 ± MARGIN: they measure the same."""
    if ratio.low is None:
        return abs(ratio.mean - 1.0) <= MARGIN
    return ratio.low <= 1.0 + MARGIN and ratio.high >= 1.0 - MARGIN  # type: ignore[operator]


@dataclass(frozen=True)
class PodKey:
    """A pod shape on a replica count: what makes two measurements measure the same thing."""

    cpu: float | None
    memory: int | None
    concurrency: int | None
    replicas: int

    def same_shape(self, other: "PodKey") -> bool:
        cpu = (self.cpu is None and other.cpu is None) or (
            self.cpu is not None and other.cpu is not None and abs(self.cpu - other.cpu) < 5e-4)
        return cpu and self.memory == other.memory and self.concurrency == other.concurrency

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "concurrency": self.concurrency}


POD_STAGES = ("tune", "single_client", "multi_client", "scaling")  # the stages whose closed-loop steps measure pods


def pod_steps(steps: Iterable[StepRow], pod: PodKey, stages: Sequence[str] = POD_STAGES) -> list[StepRow]:
    """Every closed-loop step of `pod`'s shape, on any replica count, from the stages that measure pods.

    What a table by core count reads: the scaling stage alone takes one pod only as far as its figure's users,
    so its "users within the SLO" for one pod stopped there (8) while the ramp had found 32 in the same run.
    """
    return [s for s in steps if s.stage in stages and s.load != "open"
            and pod.same_shape(PodKey(s.cpu, s.memory, s.concurrency, s.replicas))]


@dataclass(frozen=True)
class FigureWindow:
    """One fresh window at a figure's users: its goodput and own 95% half-width over `batches` sub-windows."""

    stage: str
    purpose: str  # confirm, verify, pair (an interleaved window), recheck (more windows of the same configuration)
    workers: int
    users: int
    rps: float
    half_width: float | None
    batches: int
    step: int | None = None  # the steps.csv row

    @property
    def estimate(self) -> Estimate:
        if self.half_width is None or self.batches < 2:
            return Estimate(self.rps, None, 1)
        return Estimate(self.rps, self.half_width, self.batches, float(self.batches - 1))

    @classmethod
    def of(cls, row: Any, stage: str, purpose: str, workers: int) -> "FigureWindow":
        """From a measured window (a StepRow, or anything with users, rps, rps_halfwidth, batches)."""
        return cls(stage, purpose, workers, int(row.users), float(row.rps), getattr(row, "rps_halfwidth", None),
                   int(getattr(row, "batches", 0) or 0), getattr(row, "step", None))


def estimate_of(windows: Sequence[FigureWindow]) -> Estimate:
    return between_windows([w.estimate for w in windows])


@dataclass
class Check:
    """What a stage found when it met the figure: its own windows' estimate and the outcome."""

    stage: str
    workers: int
    estimate: Estimate
    outcome: Outcome
    note: str
    ratio: Estimate | None = None  # stage / figure configuration over interleaved pairs, when measured

    def to_dict(self) -> dict[str, Any]:
        e, r = self.estimate, self.ratio
        return {"stage": self.stage, "workers": self.workers, "rps": round(e.mean, 2), "ci": _ci(e),
                "windows": e.n, "outcome": self.outcome, "note": self.note,
                "ratio": None if r is None else {"value": round(r.mean, 4), "ci": _ci(r, 4), "pairs": r.n}}


def _ci(e: Estimate, digits: int = 2) -> list[float] | None:
    return None if e.low is None else [round(e.low, digits), round(e.high, digits)]  # type: ignore[arg-type]


@dataclass
class PodFigure:
    """capacity.per_pod: one pod shape's goodput on its plateau, on `key.replicas` pods, from fresh windows."""

    key: PodKey
    users: int  # where the windows were measured: on the plateau, at or above the knee
    stage: str  # the stage whose windows the figure is (confirmed by)
    workers: int  # generator processes of those windows
    windows: list[FigureWindow]
    window_s: float
    checks: list[Check] = field(default_factory=list)
    other: Estimate | None = None  # unstable: what the disagreeing stage measured (on key.replicas pods)
    other_stage: str | None = None
    spread_from: int | None = None  # the first windows whose spread decided how many to measure (Stein)
    knee_users: int | None = None  # the fewest users the search found on the plateau (None: `users`)
    joined: int = 0  # windows of later stages that agreed and joined the figure (the last `joined` of `windows`)

    @property
    def estimate(self) -> Estimate:
        """Goodput of all `key.replicas` pods at `users`, over every window the figure rests on: the confirming
        stage's alone (Stein's interval when their first ones decided how many), or, once later stages' windows
        joined, all of them in the order measured (`over_time`)."""
        if not self.joined:
            return between_windows([w.estimate for w in self.windows], spread_from=self.spread_from)
        ordered = sorted(self.windows, key=lambda w: (w.step is None, w.step or 0))
        return over_time([w.estimate for w in ordered])

    @property
    def stages_measured(self) -> list[str]:
        """The stages whose windows the figure rests on, in recipe order."""
        return sorted({w.stage for w in self.windows}, key=_stage_order)

    def join(self, windows: Sequence[FigureWindow]) -> None:
        """Windows that agreed with the figure become part of it."""
        self.windows.extend(windows)
        self.joined += len(windows)

    @property
    def status(self) -> str:
        return "unstable" if self.other is not None else "confirmed"

    @property
    def planning(self) -> Estimate:
        """What plans use: the figure, or the lower of the two when unstable."""
        e = self.estimate
        return self.other if self.other is not None and self.other.mean < e.mean else e

    @property
    def per_pod(self) -> Estimate:
        return self.planning.scaled(1.0 / self.key.replicas)

    def to_dict(self) -> dict[str, Any]:
        e, plan = self.estimate, self.per_pod
        return {
            "pod": self.key.to_dict(), "replicas": self.key.replicas, "users": self.users,
            "knee_users": self.knee_users or self.users,
            "rps": round(plan.mean, 2), "ci": _ci(plan), "status": self.status,
            "measured_rps": round(e.mean, 2), "measured_ci": _ci(e), "stage": self.stage, "workers": self.workers,
            "windows": len(self.windows), "window_s": self.window_s,
            "confirm_windows": len(self.windows) - self.joined, "measured_by": self.stages_measured,
            "stages": sorted({self.stage, *(c.stage for c in self.checks)}, key=_stage_order),
            "checks": [c.to_dict() for c in self.checks],
            "unstable": None if self.other is None else {
                "stage": self.other_stage, "rps": round(self.other.mean, 2), "ci": _ci(self.other),
                "figure_rps": round(e.mean, 2), "figure_ci": _ci(e), "planning_rps": round(self.planning.mean, 2)},
        }


STAGE_ORDER = ("tune", "single_client", "multi_client", "scaling")


def _stage_order(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def verify(figure: PodFigure, fresh: Sequence[FigureWindow]) -> Check | None:
    """A stage's fresh windows at the figure's users: the check when they agree, None when they disagree (the
    caller measures interleaved windows and calls `settle`)."""
    if not fresh:
        return None
    est = estimate_of(fresh)
    if not _agree(figure.estimate, est):
        return None
    check = _record(figure, Check(fresh[0].stage, fresh[0].workers, est, "agrees",
                                  f"{len(fresh)} window(s) at {figure.users} users agree with the figure"))
    figure.join(fresh)
    return check


def settle(figure: PodFigure, fresh: Sequence[FigureWindow], reference: Sequence[FigureWindow],
           stage_windows: Sequence[FigureWindow]) -> Check:
    """Decide a disagreement from windows measured after it.

    `fresh`: the stage's windows that disagreed. Same configuration as the figure (`reference` empty):
    `stage_windows` are more of the stage's windows now; if they agree with the figure the first ones were a
    transient, else the machine changed since (unstable). Another generator count: `reference` (the figure's
    configuration) and `stage_windows` alternate in pairs, and `compare_configs` decides.
    """
    stage, workers = fresh[0].stage, fresh[0].workers
    if not reference:
        mine = [*fresh, *stage_windows]
        if stage_windows and _agree(figure.estimate, estimate_of(stage_windows)):
            check = _record(figure, Check(stage, workers, estimate_of(mine), "transient",
                                          f"{len(fresh)} window(s) disagreed, {len(stage_windows)} more agreed"))
            figure.join(stage_windows)  # the windows that agreed; the transient ones stay out
            return check
        return _unstable(figure, stage, workers, estimate_of(mine), None,
                         f"{len(mine)} window(s) now disagree with the figure measured earlier: the machine or the "
                         "target changed between them")
    check = compare_configs(figure, reference, stage_windows)
    if check.outcome == "bottleneck":
        figure.windows.extend(fresh)  # the stage's configuration measured more all along
    elif check.outcome == "agrees":
        check.outcome, check.note = "transient", f"{len(fresh)} window(s) disagreed; then {check.note}"
    return check


def _record(figure: PodFigure, check: Check) -> Check:
    figure.checks.append(check)
    return check


def _unstable(figure: PodFigure, stage: str, workers: int, now: Estimate, ratio: Estimate | None,
              why: str) -> Check:
    """Both figures kept; plans use the lower (an earlier unstable one stays if it is lower still)."""
    if figure.other is None or now.mean < figure.other.mean:
        figure.other, figure.other_stage = now, stage
    return _record(figure, Check(stage, workers, now, "unstable", why + "; planning on the lower", ratio))


def compare_configs(figure: PodFigure, reference: Sequence[FigureWindow],
                    stage_windows: Sequence[FigureWindow]) -> Check:
    """Paired windows of the figure's configuration and a stage's (several generators vs one): the ratio with its
    interval, and the figure's fate as `settle` decides. The reference windows also verify the figure in time."""
    ratio = paired_ratio([w.estimate for w in reference], [w.estimate for w in stage_windows])
    stage, workers = stage_windows[0].stage, stage_windows[0].workers
    now = estimate_of(stage_windows)
    pairs = f"{len(stage_windows)} pair(s): {workers} vs {figure.workers} generator(s)"
    if _same(ratio):
        both = [*reference, *stage_windows]
        if _agree(figure.estimate, estimate_of(both)):
            check = _record(figure, Check(stage, workers, now, "agrees",
                                          f"{pairs} within their interval (ratio {ratio.mean:.3f})", ratio))
            figure.join([w for pair in zip(reference, stage_windows) for w in pair])
            return check
        return _unstable(figure, stage, workers, estimate_of(both), ratio,
                         f"{pairs} agree with each other (ratio {ratio.mean:.3f}) but not with the figure measured "
                         "earlier: the machine or the target changed between them")
    if ratio.mean > 1.0 and workers > figure.workers:
        figure.windows = list(stage_windows)
        figure.stage, figure.workers, figure.spread_from, figure.joined = stage, workers, None, 0
        return _record(figure, Check(stage, workers, now, "bottleneck",
                                     f"{pairs}: {ratio.mean - 1:+.1%} with more generators: one generator limited "
                                     f"the load, the figure is now {stage}'s", ratio))
    return _unstable(figure, stage, workers, now, ratio, f"{pairs} differ by {ratio.mean - 1:+.1%}")


def move_up(figure: PodFigure, fresh: Sequence[FigureWindow], knee_users: int | None,
            spread_from: int | None) -> Check | None:
    """Fresh windows at more users than the figure's, measured because a ramp found levels above it: when their
    interval lies wholly above the figure's (and by more than MARGIN), they replace it and the check says from what;
    None (the figure kept) when they do not, or when the figure is already unstable (two estimates are enough)."""
    if not fresh or figure.other is not None:
        return None
    old, now = figure.estimate, between_windows([w.estimate for w in fresh], spread_from=spread_from)
    if not _wholly_above(old, now.mean, now.half_width) or _agree(old, now):
        return None
    stage, workers, users = fresh[0].stage, fresh[0].workers, fresh[0].users
    note = (f"{len(fresh)} fresh window(s) at {users} users measured {now.mean:.1f} rps, wholly above the figure "
            f"{old.mean:.1f} rps that {figure.stage} confirmed at {figure.users} users: the knee sat higher, and the "
            f"figure is now {stage}'s")
    figure.windows, figure.users, figure.stage, figure.workers = list(fresh), users, stage, workers
    figure.spread_from, figure.joined, figure.knee_users = spread_from, 0, knee_users
    return _record(figure, Check(stage, workers, now, "higher", note))


def levels_above(figure: Estimate, levels: Sequence[Any]) -> list[Any]:
    """Good levels a later stage measured whose goodput lies wholly above the figure's 95% interval (the level's own
    interval does not reach it): the stage's own numbers contradict "the pod saturates at the figure", so the report
    must say so. Non-overlap, not `agree`, so that one noisy window does not raise it."""
    return [lv for lv in levels
            if lv.good and not lv.generator_bound and _wholly_above(figure, lv.rps, lv.rps_halfwidth)]


def _wholly_above(figure: Estimate, rps: float, half_width: float | None) -> bool:
    """`rps` ± `half_width` lies entirely above the figure's 95% interval (a side without one counts as exact)."""
    return rps - (half_width or 0.0) > figure.mean + (figure.half_width or 0.0)
