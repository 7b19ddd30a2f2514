"""What each stage measured, as typed results kept on the run (`RunContext.results`).

A stage flow returns its result and stores it here; a later stage that needs an earlier one's figures reads
them from these objects (sizing and autoscale read `scaling` and the headline ramp), never from summary keys.
`summary.py` turns them into summary.json, `report.py` into report.md's lines and sections, and the artifacts
are built from the same summary. Plain data: no Prefect, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nightcap.analysis.autoscale_metrics import AutoscaleSample, AutoscaleSummary
from nightcap.analysis.autoscale_plan import AutoscaleFit, Expectation
from nightcap.analysis.canary import CanaryFigure, CanarySettings
from nightcap.analysis.capacity import Measurement, PodCapacity, pool_pod
from nightcap.analysis.operating_point import OperatingPointCheck
from nightcap.analysis.regression import RegressionResult
from nightcap.analysis.sizing import Capacity, PerPod, SizingInputs, SizingRow, ValidationRow
from nightcap.analysis.tuning import CandidateResult
from nightcap.analysis.usl import UslFit
from nightcap.search import SearchResult
from nightcap.warm_start import WarmStart


def _measurement(stage: str, s: SearchResult | None, replicas: int) -> Measurement | None:
    """A search's saturation figure with the sub-windows of the level it was measured at."""
    if s is None or not s.saturation_rps:
        return None
    knee = s.level(s.saturation_users or 0)
    return Measurement(stage, s.saturation_rps, s.saturation_halfwidth, knee.batches if knee else 0,
                       s.saturation_users, replicas)


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

    @classmethod
    def of(cls, s: SearchResult, replicas: int, operating_p95_ms: float | None, with_slo: bool = True) -> "Saturation":
        """A search's saturation point, operating point and (when it looked for it) SLO capacity."""
        return cls(s.saturation_rps, s.saturation_users, replicas, s.found, s.stop_reason, s.operating_rps,
                   s.operating_users, operating_p95_ms, s.slo_users if with_slo else None,
                   s.slo_rps if with_slo else None, s.saturation_halfwidth, s.operating_halfwidth,
                   s.slo_halfwidth if with_slo else None)


@dataclass
class RampResult:
    """single_client or multi_client: the saturation search with `workers` generator processes."""

    stage: str
    workers: int
    replicas: int
    search: SearchResult
    operating_p95_ms: float | None
    generator_bound_steps: int
    plot: str | None = None
    vs_single_rps: float | None = None  # multi_client: the single client's saturation rps, when it ran
    single_client_was_bottleneck: bool | None = None
    warm_start: WarmStart | None = None  # whether last night's knee was verified instead of searched, and why
    # the operating rate offered open loop, and the back-off below it when it missed the SLO (None: not checked)
    operating_check: OperatingPointCheck | None = None

    @property
    def saturation(self) -> Saturation:
        sat = Saturation.of(self.search, self.replicas, self.operating_p95_ms)
        sat.operating_check = self.operating_check
        return sat

    @property
    def capacity(self) -> Capacity:
        return Capacity(self.search.saturation_rps, self.search.saturation_users, self.search.slo_users,
                        self.replicas)

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

    @property
    def saturation(self) -> Saturation | None:
        """The tuned pod's saturation point (a one-window-per-level search: a rougher figure than a ramp's)."""
        if self.best is None or self.best_search is None or not self.best_search.saturation_rps:
            return None
        return Saturation.of(self.best_search, self.replicas, self.best.p95_ms, with_slo=False)


@dataclass
class ScalingRow:
    replicas: int
    saturation_rps: float
    saturation_users: int | None
    rps_per_pod: float
    efficiency: float | None
    slo_users: int | None
    stop_reason: str
    rps_halfwidth: float | None = None  # 95% half-width of saturation_rps (None: not measured in sub-windows)
    batches: int = 0  # the sub-windows it was measured over


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
    def one_pod(self) -> Capacity | None:
        row = next((r for r in self.rows if r.replicas == 1), None)
        return Capacity(row.saturation_rps, row.saturation_users, row.slo_users) if row else None

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

    def headline(self) -> tuple[str | None, Saturation | None]:
        """The stage whose saturation is the answer: multi-client when it ran and was not worse than the
        single client's (within 5%), else the single client's, else the tuned pod's."""
        single = self.single_client.saturation if self.single_client else None
        multi = self.multi_client.saturation if self.multi_client else None
        if multi and multi.rps and (not single or not single.rps or multi.rps >= single.rps * 0.95):
            return "multi_client", multi
        if single and single.rps:
            return "single_client", single
        tuned = self.tune.saturation if self.tune else None
        if tuned is not None:
            return "tune", tuned
        return None, None

    def pod_measurements(self, replicas: int) -> list[Measurement]:
        """Every stage's saturation figure of the run's pod on `replicas` pods: tune's chosen candidate (the pod
        the later stages deploy), single_client, multi_client and scaling's row at that replica count."""
        found = []
        if self.tune and self.tune.best is not None and self.tune.replicas == replicas:
            found.append(_measurement("tune", self.tune.best_search, replicas))
        for ramp in (self.single_client, self.multi_client):
            if ramp and ramp.replicas == replicas:
                found.append(_measurement(ramp.stage, ramp.search, replicas))
        row = next((r for r in self.scaling.rows if r.replicas == replicas), None) if self.scaling else None
        if row and row.saturation_rps:
            found.append(Measurement("scaling", row.saturation_rps, row.rps_halfwidth, row.batches,
                                     row.saturation_users, replicas))
        return [m for m in found if m is not None]

    def per_pod(self, replicas: int) -> PodCapacity | None:
        """capacity.per_pod: the stages' figures of one pod configuration pooled (None when none measured it)."""
        return pool_pod(self.pod_measurements(replicas))

    def headline_ramp(self) -> RampResult | None:
        stage, _ = self.headline()
        return self.multi_client if stage == "multi_client" else self.single_client
