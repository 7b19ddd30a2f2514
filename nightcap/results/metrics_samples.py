"""The night's figures as metric samples for Prometheus: names, labels and values, from one history row.

People who run models look at Grafana and get paged by Alertmanager, not by report folders; so the latest night of
every target is also a set of gauges (`nightcap metrics` prints them, `publish.pushgateway` pushes tonight's).
This module only decides *what* the samples are, from a run as the history keeps it (`HistoryStore.latest_nights`,
or tonight's summary: `tonight`); `openmetrics.py` writes and pushes them. Pure: no prometheus_client, no Prefect.

Which figures, and why these:
- `nightcap_rps_per_pod` (`_low`, `_high`): one pod's capacity and its 95% interval (`capacity.per_pod`), the
  figure plans are made with; a night from before that block existed gives its saturation rate per replica.
- `nightcap_operating_rps`: the rate verified open loop within the SLO (`slo_capacity.rate_rps`: the operating
  rate when it met the SLO, else the highest rate the back-off found to meet it), on the pods it was measured on;
  absent when no rate was verified to meet it (`load.verify_s: 0`, or the back-off found none).
  `nightcap_p95_at_operating_seconds` is the p95 measured at that same rate (else the operating point's).
- `nightcap_sizing_pods{sizing_target}`: the pods each configured sizing target needs.
- `nightcap_last_run_timestamp_seconds`, `nightcap_last_run_ok` and `nightcap_last_run_status{status, verdict,
  regression}` (always 1): when the night ended and how.

Only a completed night gives figures (a failed or cancelled one's are partial: the regression check ignores them
too), and an inconclusive headline gives none of its own (the history stores none either); the status gauges are
there for every night that ended. A night still running is not a night yet: the previous one stays the latest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from nightcap.analysis.change_points import finite
from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.quantities import format_memory

LABELS: tuple[str, ...] = ("target", "pod", "platform")  # on every sample
NOT_RUN = "not run"  # the `regression` label of a night whose regression stage did not run


@dataclass(frozen=True)
class MetricSpec:
    """One gauge: its name (the unit, when it has one, is its suffix), what it means, the labels beyond LABELS."""

    name: str
    help: str
    unit: str = ""
    extra_labels: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return LABELS + self.extra_labels


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("nightcap_rps_per_pod", "One pod's sustainable goodput (requests/s), confirmed on fresh windows"),
    MetricSpec("nightcap_rps_per_pod_low", "Low end of the 95% interval of nightcap_rps_per_pod"),
    MetricSpec("nightcap_rps_per_pod_high", "High end of the 95% interval of nightcap_rps_per_pod"),
    MetricSpec("nightcap_operating_rps", "The rate (requests/s) verified open loop to meet the SLO"),
    MetricSpec("nightcap_p95_at_operating_seconds", "p95 latency measured at nightcap_operating_rps", "seconds"),
    MetricSpec("nightcap_sizing_pods", "Pods needed for a sizing target", extra_labels=("sizing_target",)),
    MetricSpec("nightcap_last_run_timestamp_seconds", "When the latest night ended (Unix time)", "seconds"),
    MetricSpec("nightcap_last_run_ok", "1 when the latest night completed, 0 when it failed or was cancelled"),
    MetricSpec("nightcap_last_run_status", "The latest night's status, verdict and regression verdict (always 1)",
               extra_labels=("status", "verdict", "regression")),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
_SPECS = {m.name: m for m in METRICS}


@dataclass(frozen=True)
class Sample:
    """One gauge value with its labels (every label of its metric, in no particular order)."""

    metric: str
    labels: dict[str, str] = field(hash=False)
    value: float


def pod_label(pod: Mapping[str, Any] | None) -> str:
    """`cpu=1 memory=1Gi concurrency=2`, as tuning names candidates; an unset limit is `unlimited`."""
    pod = pod or {}
    cpu = finite(pod.get("cpu"))
    memory = pod.get("memory")
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        memory = format_memory(int(memory))
    elif memory in (None, ""):
        memory = "unlimited"
    concurrency = pod.get("concurrency")
    return (f"cpu={'unlimited' if cpu is None else f'{cpu:g}'} memory={memory} "
            f"concurrency={'unknown' if concurrency is None else concurrency}")


def tonight(target: str, platform: str, status: str, summary: Mapping[str, Any],
            figures: Mapping[str, Any], ended_at: datetime | None = None) -> dict[str, Any]:
    """The run as the history keeps it (`HistoryStore.get_run`), from tonight's summary and headline figures: what
    the end of a run pushes is what `nightcap metrics` prints of that night the next morning."""
    ended = ended_at or datetime.now(timezone.utc)
    return {"target_name": target, "platform": platform, "status": status, "started_at": ended,
            "finished_at": ended, "summary": dict(summary), **{n: figures.get(n) for n in HEADLINE_NAMES}}


def night_samples(run: Mapping[str, Any]) -> list[Sample]:
    """Every sample of one night (a history row: `target_name`, `platform`, `status`, `started_at`, `finished_at`,
    the headline figure columns, `summary`, `config`)."""
    summary = run.get("summary") or {}
    if not isinstance(summary, Mapping):
        summary = {}
    labels = {"target": str(run.get("target_name") or ""), "pod": pod_label(_pod(run, summary)),
              "platform": str(run.get("platform") or (summary.get("platform") or {}).get("kind") or "")}
    out: list[Sample] = []

    def add(metric: str, value: Any, **extra: str) -> None:
        number = finite(value)
        if number is not None:
            assert set(_SPECS[metric].labels) == {*labels, *extra}, f"{metric}: labels {_SPECS[metric].labels}"
            out.append(Sample(metric, {**labels, **extra}, number))

    status = str(run.get("status") or "unknown")
    if status == "completed":
        if not (summary.get("saturation") or {}).get("inconclusive"):
            rps, low, high = _per_pod(run, summary)
            add("nightcap_rps_per_pod", rps)
            add("nightcap_rps_per_pod_low", low)
            add("nightcap_rps_per_pod_high", high)
            rate, p95_ms = _operating(run, summary)
            add("nightcap_operating_rps", rate)
            add("nightcap_p95_at_operating_seconds", None if p95_ms is None else p95_ms / 1000.0)
        for row in (summary.get("sizing") or {}).get("rows") or []:
            if isinstance(row, Mapping) and row.get("target"):
                add("nightcap_sizing_pods", row.get("pods"), sizing_target=str(row["target"]))
    ended = run.get("finished_at") or run.get("started_at")
    if isinstance(ended, datetime):
        add("nightcap_last_run_timestamp_seconds", _utc(ended).timestamp())
    add("nightcap_last_run_ok", 1.0 if status == "completed" else 0.0)
    regression = summary.get("regression")
    regression = regression.get("verdict") if isinstance(regression, Mapping) else None
    add("nightcap_last_run_status", 1.0, status=status, verdict=str(summary.get("verdict") or status),
        regression=str(regression or NOT_RUN))
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _pod(run: Mapping[str, Any], summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod shape the figures are of: the confirmed figure's, else the one deployed, else the configured one."""
    per_pod = (summary.get("capacity") or {}).get("per_pod") or {}
    if per_pod.get("pod"):
        return per_pod["pod"]
    if summary.get("platform"):
        return summary["platform"]
    return (run.get("config") or {}).get("platform") or {}


def _per_pod(run: Mapping[str, Any], summary: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """capacity.per_pod's rps and interval; a night from before that block: its saturation rate per replica."""
    per_pod = (summary.get("capacity") or {}).get("per_pod") or {}
    if finite(per_pod.get("rps")) is not None:
        low, high = (list(per_pod.get("ci") or []) + [None, None])[:2]
        return finite(per_pod["rps"]), finite(low), finite(high)
    sat = summary.get("saturation") or {}
    rps = finite(sat.get("rps"))
    if rps is None:
        rps = finite(run.get("saturation_rps"))
    if rps is None:
        return None, None, None
    replicas = finite(sat.get("replicas")) or finite(((run.get("config") or {}).get("platform") or {})
                                                     .get("replicas")) or 1.0
    low, high = (list(sat.get("rps_ci") or []) + [None, None])[:2]
    per = [None if v is None else v / replicas for v in (rps, finite(low), finite(high))]
    return per[0], per[1], per[2]


def _operating(run: Mapping[str, Any], summary: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The rate verified within the SLO, and the p95 measured at that rate (the operating point's when unverified)."""
    op = summary.get("operating_point") or {}
    rate = finite((summary.get("slo_capacity") or {}).get("rate_rps"))
    p95 = finite(op.get("p95_ms"))
    if p95 is None:
        p95 = finite(run.get("p95_at_operating_ms"))
    if rate is None:
        return None, p95
    for check in op.get("verification") or []:  # the back-off's window when the operating rate missed the SLO
        checked = finite((check or {}).get("rate_rps"))
        if checked is not None and abs(checked - rate) <= 0.006:  # summary rates are rounded to 0.01
            return rate, finite(check.get("p95_ms"))
    return rate, p95
