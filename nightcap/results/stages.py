"""What each stage measured, as typed results kept on the run (`RunContext.results`).

A stage flow returns its result and stores it here; a later stage that needs an earlier one's figures reads
them from these objects (sizing and autoscale read `scaling` and the headline ramp), never from summary keys.
`summary.py` turns them into summary.json, `report.py` into report.md's lines and sections, and the artifacts
are built from the same summary. Plain data: no Prefect, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nightcap.analysis.autoscale_metrics import AutoscaleSample, AutoscaleSummary
from nightcap.analysis.autoscale_plan import AutoscaleFit, Expectation
from nightcap.analysis.canary import CanaryFigure, CanarySettings
from nightcap.analysis.confidence import Estimate
from nightcap.analysis.operating_point import OperatingPointCheck
from nightcap.analysis.pod_capacity import Check, PodFigure, PodKey
from nightcap.analysis.regression_result import RegressionResult
from nightcap.analysis.sizing import PerPod, SizingInputs, SizingRow, ValidationRow
from nightcap.analysis.tune_pairs import CpuPairs
from nightcap.analysis.tuning import CandidateResult
from nightcap.analysis.usl import UslFit
from nightcap.search.confirm import Confirmation
from nightcap.search.levels import SearchResult
from nightcap.search.warm_start import WarmStart


@dataclass
class Saturation:
    """A saturation point with the pods it was measured on; the operating point is `headroom` of its rate."""

    rps: float | None
    users: int | None
    replicas: int
    found: bool = True
    stop_reason: str = ""
    operating_rps: float | None = None
    operating_users: int | None = None
    operating_p95_ms: float | None = None  # p95 at the operating rate
    slo_users: int | None = None
    slo_rps: float | None = None
    rps_halfwidth: float | None = None  # 95% half-widths of the rates above (None: not measured in sub-windows)
    operating_halfwidth: float | None = None
    slo_halfwidth: float | None = None
    operating_check: OperatingPointCheck | None = None  # the open-loop verification at operating_rps
    status: str = "search"  # confirmed / unstable: capacity.per_pod's; search: a search's level, not confirmed
    windows: int = 0  # fresh windows behind rps (confirmed figures)

    @classmethod
    def of(cls, s: SearchResult, replicas: int, operating_p95_ms: float | None, with_slo: bool = True) -> "Saturation":
        """A search's saturation point, operating point and (when it looked for it) SLO capacity (not confirmed)."""
        return cls(s.saturation_rps, s.saturation_users, replicas, s.found, s.stop_reason, s.operating_rps,
                   s.operating_users, operating_p95_ms, s.slo_users if with_slo else None,
                   s.slo_rps if with_slo else None, s.saturation_halfwidth, s.operating_halfwidth,
                   s.slo_halfwidth if with_slo else None)

    @classmethod
    def of_figure(cls, fig: PodFigure, headroom: float, search: SearchResult | None,
                  check: OperatingPointCheck | None, closed_p95_ms: float | None = None) -> "Saturation":
        """capacity.per_pod on its replicas as the run's saturation point: the planning figure (the lower one when
        unstable) with the knee's users, the operating point at `headroom` of it (its p95 measured there open loop, else
        `closed_p95_ms`, interpolated along a closed-loop ramp), and the SLO capacity the search walked to.

        With an open-loop check the operating point is the rate it offered: later stages' windows join the figure
        after the check and move it by up to RECHECK, 5% (`tasks.measure.ensure_operating_check`), and a p95 is
        only stated for the rate it was measured at."""
        plan = fig.planning
        op = plan.scaled(headroom)
        if check is not None and plan.mean > 0:  # the rate the check offered: the figure may have moved since
            op = plan.scaled(check.verified.rate_rps / plan.mean)
        p95 = check.verified.p95_ms if check is not None else closed_p95_ms
        knee = fig.knee_users or fig.users  # the concurrency that saturates; the figure's windows ran deeper in
        return cls(plan.mean, knee, fig.key.replicas, True, search.stop_reason if search else "",
                   op.mean, max(1, math.floor(knee * headroom)), p95,
                   search.slo_users if search else None, search.slo_rps if search else None,
                   plan.half_width, op.half_width, search.slo_halfwidth if search else None, check,
                   fig.status, len(fig.windows))


@dataclass
class RampResult:
    """single_client or multi_client: the search (or the verification of the pod's confirmed figure) with
    `workers` generator processes."""

    stage: str
    workers: int
    replicas: int
    search: SearchResult  # the levels this stage measured while choosing (the knee, the SLO capacity walk)
    operating_p95_ms: float | None
    generator_bound_steps: int
    plot: str | None = None
    warm_start: WarmStart | None = None  # whether last night's knee was verified instead of searched, and why
    # the operating rate offered open loop, and the back-off below it when it missed the SLO (None: this stage
    # did not check it: the run's figure was already checked at that rate)
    operating_check: OperatingPointCheck | None = None
    confirmation: Confirmation | None = None  # this stage confirmed the pod's figure on fresh windows
    check: Check | None = None  # this stage met an already confirmed figure: what its windows found
    ratio: Estimate | None = None  # multi_client: goodput with `workers` generators / one, over paired windows

    @property
    def saturation(self) -> Saturation:
        """The search's own point (not confirmed): what the stage chose, before the fresh windows."""
        sat = Saturation.of(self.search, self.replicas, self.operating_p95_ms)
        sat.operating_check = self.operating_check
        return sat

    @property
    def single_client_was_bottleneck(self) -> bool | None:
        """multi_client: more generators measured more, beyond the pairs' interval (None: not compared)."""
        if self.ratio is None:
            return None
        return bool(self.ratio.low is not None and self.ratio.low > 1.0)

    @property
    def inconclusive(self) -> str | None:
        """A ramp answers with a saturation point: none met the SLO, or the search stopped before the knee."""
        s = self.search
        if not s.saturation_rps:
            return "no load level met the SLO" + (f" ({s.stop_reason})" if s.stop_reason else "")
        if not s.found:
            return (f"no saturation point was found ({s.stop_reason}): {s.saturation_rps:.1f} rps at "
                    f"{s.saturation_users} users is a lower bound")
        return None


@dataclass
class TuneResult:
    """The pod sizes measured on `replicas` pods and the one chosen (None when none met the SLO)."""

    candidates: list[CandidateResult]
    candidates_measured: int
    grid_size: int
    replicas: int
    planner_notes: list[str]
    reason: str
    limits_enforced: bool
    best: CandidateResult | None
    best_search: SearchResult | None  # the chosen candidate's (cheap) saturation search
    headroom: float
    plot: str | None = None
    warm_start: WarmStart | None = None  # last night's choice and its grid neighbours measured first, and why
    # the chosen candidate's knee on fresh windows: its figure (candidates are compared on their searches, which
    # chose it; reporting the winner's search figure would carry the pick's upward bias)
    confirmation: Confirmation | None = None
    cpu_pairs: CpuPairs | None = None  # the chosen CPU size settled against another in alternating windows

    @property
    def inconclusive(self) -> str | None:
        """Tuning answers with a pod size whose throughput was measured at its knee (a lower bound ranks wrongly)."""
        if self.best is None:
            return f"no pod size was chosen: {self.reason}"
        s = self.best_search
        if s is not None and s.saturation_rps and not s.found:
            return (f"the chosen pod's search stopped before its knee ({s.stop_reason}): its "
                    f"{self.best.rps_per_core:.0f} rps per core is a lower bound, so the choice may be wrong")
        return None

    def figure_rps(self, figure: PodFigure | None) -> float | None:
        """The chosen pod's figure on `replicas` pods: capacity.per_pod's for it (`figure`, with every later window
        that joined tune's confirmation), else the confirmation's own; None when nothing confirmed it."""
        if figure is not None:
            return figure.planning.mean
        return self.confirmation.rps if self.confirmation is not None and self.confirmation.good else None

    def candidate_rows(self, figure_rps: float | None) -> list[dict[str, Any]]:
        """The candidates as they were compared (their searches' figures: `chosen_on_rps`); the chosen one's
        `saturation_rps` and `rps_per_core` are its figure as the run ends (`figure_rps`), as everywhere else."""
        rows = []
        for r in self.candidates:
            cores = (r.candidate.cpu or 1.0) * self.replicas
            # what the choice compared, per core: beside the chosen row's confirmed rps_per_core, the table shows
            # why it was chosen (a confirmed figure lower than another candidate's search figure is not a contradiction)
            row = {**r.to_dict(), "chosen_on_rps": r.saturation_rps,
                   "chosen_on_rps_per_core": round(r.saturation_rps / cores, 2) if r.saturation_rps else None}
            if r is self.best and figure_rps is not None:
                row.update(saturation_rps=round(figure_rps, 2), rps_per_core=round(figure_rps / cores, 2))
            rows.append(row)
        return rows

    @property
    def saturation(self) -> Saturation | None:
        """The tuned pod's saturation point from its search (the choosing figure, one window per level)."""
        if self.best is None or self.best_search is None or not self.best_search.saturation_rps:
            return None
        return Saturation.of(self.best_search, self.replicas, self.best.p95_ms, with_slo=False)


@dataclass
class ScalingRow:
    """N pods at their knee: goodput over the windows measured there, and efficiency against one pod from the
    windows paired with them (N pods, one pod, one pod, N pods, ...), so drift between windows cancels."""

    replicas: int
    saturation_rps: float
    saturation_users: int | None
    rps_per_pod: float
    efficiency: float | None
    slo_users: int | None
    stop_reason: str
    rps_halfwidth: float | None = None  # 95% half-width of saturation_rps, between its windows
    batches: int = 0  # the windows it was measured over
    efficiency_ci: list[float] | None = None  # 95% interval of the efficiency, from the pairs' ratios
    pairs: int = 0  # (one pod, N pods) window pairs behind the efficiency
    # one pod's goodput in those pairs: the efficiency's denominator, which can differ from the run's per-pod figure
    paired_one_pod_rps: float | None = None


@dataclass
class ScalingResult:
    """Saturation at 1..N pods of the tuned size, USL fits, and SLO capacity per core count."""

    rows: list[ScalingRow]
    usl: UslFit
    usl_users_one_pod: UslFit
    one_pod_max_users: int
    by_cores: list[dict[str, Any]]
    plots: list[str] = field(default_factory=list)

    @property
    def inconclusive(self) -> str | None:
        """Scaling answers with throughput per pod at 1..N pods: efficiency needs one pod and at least one more.

        A USL that does not fit is not this: the rows answer, and the report says "no fit" beside them.
        """
        missing = [r for r in self.rows if not r.saturation_rps]
        if missing:
            first = missing[0]
            return (f"no load level met the SLO at {', '.join(str(r.replicas) for r in missing)} replica(s)"
                    + (f" ({first.stop_reason})" if first.stop_reason else "") + ": throughput per pod is unknown there")
        if len(self.rows) < 2:
            return (f"only {len(self.rows)} replica count was measured (scaling.max_replicas, or the CPUs allocatable "
                    "to replicas, allowed no more): efficiency needs at least two")
        return None


@dataclass
class SizingResult:
    """Pods, cores, nodes and cost per configured target; empty rows with a note when none is configured."""

    rows: list[SizingRow]
    per_pod: PerPod | None
    latency_s: float | None  # the mean latency the rows use (see latency_from)
    headroom: float
    node_allocatable_cpu: float
    cpu_per_pod: float
    note: str = ""
    pod: SizingInputs | None = None  # what one pod was measured to do: the model's inputs
    latency_from: str = ""
    validation: list[ValidationRow] = field(default_factory=list)  # the model beside scaling's measured pods

    @property
    def inconclusive(self) -> str | None:
        """Sizing answers with pods per target; with nothing to size from (or for) it has none."""
        if self.note:
            return self.note
        return None if self.rows else "no sizing row was computed"


@dataclass
class AutoscaleResult:
    """The autoscaling timeline: the offered phases, the samples and the timings computed from them (None: no
    sample was taken), the pod shape and bounds the platform allowed (`fit`), what the backlog arithmetic
    expected, and why the stage could not answer (`inconclusive`, one sentence; None when it did)."""

    timings: AutoscaleSummary | None
    phases: list[dict[str, Any]]
    per_pod: PerPod
    hpa: dict[str, Any]
    nodes_note: str
    reconnect_s: float
    samples: list[AutoscaleSample]
    plot: str | None = None
    connections: str = "per-request"  # autoscale.connections: how arrivals reach new pods
    fit: AutoscaleFit | None = None
    expected: Expectation | None = None
    inconclusive: str | None = None


@dataclass
class RegressionOutcome:
    """Tonight against the baseline nights and the change points of the last nights (None `result` when there
    is no history store). The trend plot is drawn for every run with a history, in the parent flow."""

    result: RegressionResult | None
    baseline_runs: int = 0
    nights: int = 0  # the nights the change points were looked for in, tonight included
    note: str = ""
    version_change: str | None = None  # "wine v3 replaced wine v2", when tonight served another model version

    @property
    def regressed(self) -> bool:
        return bool(self.result and self.result.regressed)

    @property
    def inconclusive(self) -> str | None:
        """No comparison was possible (no history store). Too few earlier nights is not this: the check answered
        "insufficient history", which every new target sees for its first nights and which mends itself."""
        return None if self.result is not None else f"nothing was compared: {self.note or 'no history store'}"


@dataclass
class CanaryResult:
    """Tonight's platform canary, measured before the model (None `figure`: not measured, `note` says why)."""

    settings: CanarySettings
    figure: CanaryFigure | None = None
    duration_s: float | None = None
    note: str = ""
    windows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StageResults:
    """The typed results of the stages that ran so far (None: not run, or failed before it had a result)."""

    tune: TuneResult | None = None
    single_client: RampResult | None = None
    multi_client: RampResult | None = None
    scaling: ScalingResult | None = None
    sizing: SizingResult | None = None
    autoscale: AutoscaleResult | None = None
    regression: RegressionOutcome | None = None
    canary: CanaryResult | None = None  # not a stage of `stages`: measured before the deploy for the regression check
    # capacity.per_pod: one confirmed figure per pod shape and replica count, verified by every later stage
    pods: dict[PodKey, PodFigure] = field(default_factory=dict)
    run_pod: PodKey | None = None  # the pod the run deploys (the tuned shape on platform.replicas)
    # the open-loop check at headroom x the run's figure (the stage that ran it last), None until one ran
    operating: OperatingPointCheck | None = None
    operating_stage: str | None = None

    def tuned_rps(self) -> float | None:
        """The figure of the pod tune chose, on tune's replicas, as the run ends (`TuneResult.figure_rps`): the
        tuning table's chosen row and `tuning.best` give it (None: tune chose none, or confirmed none)."""
        if self.tune is None or self.tune.best is None:
            return None
        c = self.tune.best.candidate
        key = PodKey(c.cpu, c.memory, c.concurrency, self.tune.replicas)
        figure = next((f for k, f in self.pods.items() if k.replicas == key.replicas and k.same_shape(key)), None)
        return self.tune.figure_rps(figure)

    def figure(self) -> PodFigure | None:
        """The run's pod's confirmed figure on platform.replicas, else one of the same pod shape on other replicas
        (tune's, on tune.replicas, when no later stage ran); None when no stage confirmed one."""
        if self.run_pod is None:
            return None
        exact = self.pods.get(self.run_pod)
        if exact is not None:
            return exact
        return next((f for k, f in self.pods.items() if k.same_shape(self.run_pod)), None)

    def per_pod(self) -> PerPod | None:
        """One pod of the run's shape, as sizing and autoscaling plan on it: capacity.per_pod (its planning
        figure: the lower one when unstable), with the SLO users the ramp walked to and the open-loop rate the
        operating-point check met the SLO at, per pod (the check ran on the figure's replicas)."""
        fig = self.figure()
        if fig is None:
            return None
        n, ramp, check = fig.key.replicas, self.slo_search(), self.operating
        slo = ramp.search.slo_users if ramp else None
        window = check.sizing_window if check is not None else None
        return PerPod(fig.per_pod.mean, max(1, round((fig.knee_users or fig.users) / n)), None if slo is None else slo / n,
                      f"capacity.per_pod ({fig.stage}, {fig.status}, {len(fig.windows)} fresh windows on {n} pod(s))",
                      rps_low=fig.per_pod.low, slo_rate_rps=window.rate_rps / n if window is not None else None,
                      backed_off=check is not None and not check.met)

    def slo_search(self) -> RampResult | None:
        """The ramp whose search walked past the knee to the SLO capacity (single-client first)."""
        for ramp in (self.single_client, self.multi_client):
            if ramp is not None and ramp.search.slo_users is not None:
                return ramp
        return None

    def headline(self, headroom: float = 0.7) -> tuple[str | None, Saturation | None]:
        """The run's saturation point: capacity.per_pod of the run's pod (the stage that confirmed it); without a
        confirmed figure, the ramp's (or tune's) search, which says why there is no confirmed answer."""
        fig = self.figure()
        if fig is not None:
            ramp = self.slo_search()
            closed = ramp.operating_p95_ms if ramp else (self.tune.best.p95_ms if self.tune and self.tune.best else None)
            return fig.stage, Saturation.of_figure(fig, headroom, ramp.search if ramp else None, self.operating, closed)
        for ramp in (self.multi_client, self.single_client):
            if ramp is not None and ramp.search.saturation_rps:
                sat = ramp.saturation
                sat.found = False  # no fresh window confirmed it: a lower bound at best
                sat.stop_reason = ramp.search.stop_reason or "the knee was not confirmed on fresh windows"
                return ramp.stage, sat
        tuned = self.tune.saturation if self.tune else None
        if tuned is not None:
            tuned.found = False
            return "tune", tuned
        return None, None

    def headline_ramp(self) -> RampResult | None:
        stage, _ = self.headline()
        if stage == "multi_client":
            return self.multi_client
        return self.single_client or self.multi_client
