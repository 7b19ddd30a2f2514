"""Verify the operating point at a rate, and back off to the highest rate that meets the SLO.

Why a rate: a closed-loop search finds the knee, but "run at 70% of saturation: does the SLO hold?" is a
question about arrivals per second, and only an open-loop window answers it (a closed loop slows down
with the server and under-reports the latency of a stall). Pure: `check_operating_point` takes a
`measure(rate) -> RateCheck` callable, so the bisection is tested without load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

from nightcap.analysis import latency
from nightcap.analysis.figures import rate_text
from nightcap.analysis.slo import Slo

@dataclass(frozen=True)
class RateWindow:
    """One open-loop window at a rate: what was planned, sent, answered, and the latency histogram."""

    rate_rps: float
    offered_rps: float
    achieved_rps: float
    goodput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    planned: int
    completed: int
    failures: int
    late: int
    dropped: int
    verdict: str  # ok, generator-bound or target-overloaded (late + dropped beyond 1%)
    valid: bool = True
    note: str = ""
    ok_ms: dict[int, int] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, rate_rps: float, window: "_OpenWindowLike", verdict: str, valid: bool = True,
           note: str = "") -> "RateWindow":
        """From an open-loop window (`nightcap.load.open_loop.OpenWindow`)."""
        return cls(rate_rps, window.offered_rps, window.achieved_rps, window.goodput_rps, window.p50_ms,
                   window.p95_ms, window.p99_ms, window.mean_ms, window.planned, window.completed,
                   window.failures, window.late, window.dropped, verdict, valid, note,
                   getattr(window, "ok_ms", None))


@dataclass(frozen=True)
class RateCheck:
    """One rate offered open loop over one or more windows, judged against the SLO on all of them together.

    `error_rate` counts what callers did not get: failed responses and dropped arrivals, per planned arrival.
    p50/p95/p99 are of the windows' merged histograms; `p95_ci` is its 95% interval (order statistics,
    never narrower than the windows' own p95s).
    """

    rate_rps: float
    offered_rps: float
    achieved_rps: float
    goodput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    error_rate: float
    planned: int
    late: int
    dropped: int
    verdict: str  # ok, or the worst window's: generator-bound or target-overloaded
    meets_slo: bool
    why: str = ""  # what failed, in words, when it did not meet the SLO
    failures: int = 0
    windows: int = 1
    p95_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(slo: Slo, *, p95_ms: float | None, error_rate: float, verdict: str) -> tuple[bool, str]:
    """Meets the SLO (the one rule: p95 ≤ slo.p95_ms, errors ≤ slo.max_error_rate) and the schedule was kept.

    A window that could not offer its rate (late or dropped arrivals beyond 1%) does not pass: a
    target-overloaded one is a failure, a generator-bound one proved nothing.
    """
    reasons = []
    if p95_ms is None:
        reasons.append("no response completed")
    elif not slo.p95_met(p95_ms):
        reasons.append(f"p95 {p95_ms:.0f} ms > SLO {slo.p95_ms:g} ms")
    if not slo.errors_met(error_rate):
        reasons.append(f"failed or dropped {100 * error_rate:.1f}% > {100 * slo.max_error_rate:g}%")
    if verdict != "ok":
        reasons.append(verdict)
    return not reasons, "; ".join(reasons)


class _OpenWindowLike(Protocol):
    offered_rps: float
    achieved_rps: float
    goodput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    planned: int
    completed: int
    late: int
    dropped: int

    @property
    def failures(self) -> int: ...


VERDICT_ORDER = ("ok", "target-overloaded", "generator-bound")


def rate_check(rate_rps: float, windows: Sequence[RateWindow], slo: Slo) -> RateCheck:
    """The windows at one rate as one verdict: merged latency histogram, (failed + dropped) / planned arrivals.

    An invalid window (a generator worker died, nothing came back) fails the rate, and so does a window whose
    schedule slipped (see `judge`).
    """
    if not windows:
        raise ValueError("a rate check needs at least one window")
    planned = sum(w.planned for w in windows)
    failures = sum(w.failures for w in windows)
    dropped = sum(w.dropped for w in windows)
    completed = sum(w.completed for w in windows)
    errors = min((failures + dropped) / planned, 1.0) if planned else (1.0 if failures else 0.0)
    merged = latency.merge(w.ok_ms for w in windows) if all(w.ok_ms is not None for w in windows) else None
    p95s = [w.p95_ms for w in windows if w.p95_ms is not None]
    if merged:
        p50, p95, p99 = (latency.percentile(merged, q) for q in (0.5, 0.95, 0.99))
        ci = latency.percentile_interval(merged, 0.95)
    else:  # no histograms: the windows' own percentiles (the median of them), the interval their range
        p50 = _median([w.p50_ms for w in windows])
        p95, p99, ci = _median(p95s), _median([w.p99_ms for w in windows]), None
    if p95s and p95 is not None:
        lo, hi = ci if ci is not None else (p95, p95)
        ci = (min(lo, min(p95s)), max(hi, max(p95s)))
    weights = [w.completed for w in windows if w.mean_ms is not None]
    mean = (sum(w.mean_ms * w.completed for w in windows if w.mean_ms is not None) / sum(weights)
            if weights and sum(weights) else None)
    verdict = max((w.verdict for w in windows), key=lambda v: VERDICT_ORDER.index(v) if v in VERDICT_ORDER else 1)
    ok, why = judge(slo, p95_ms=p95, error_rate=errors, verdict=verdict)
    invalid = [w.note or "invalid window" for w in windows if not w.valid]
    if invalid:
        ok, why = False, "; ".join(x for x in (why, *invalid) if x)
    n = len(windows)
    return RateCheck(rate_rps, sum(w.offered_rps for w in windows) / n, sum(w.achieved_rps for w in windows) / n,
                     sum(w.goodput_rps for w in windows) / n, p50, p95, p99, mean, errors, planned,
                     sum(w.late for w in windows), dropped, verdict, ok, why, failures, n, ci)


def _median(values: Sequence[float | None]) -> float | None:
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


@dataclass
class OperatingPointCheck:
    """The verification at the operating rate and, when it failed, the bisection below it."""

    verified: RateCheck
    backoff: list[RateCheck] = field(default_factory=list)
    slo_rate_rps: float | None = None  # highest rate measured to meet the SLO; None when none did
    slo_rate_interval_rps: tuple[float, float | None] = (0.0, None)  # [met, first failed above it]

    @property
    def met(self) -> bool:
        return self.verified.meets_slo

    @property
    def sizing_window(self) -> RateCheck | None:
        """The check at the rate a pod is planned to run at: the verified one, else the SLO rate's."""
        return self.verified if self.met else self.at(self.slo_rate_rps)

    @property
    def windows(self) -> list[RateCheck]:
        return [self.verified, *self.backoff]

    def at(self, rate_rps: float | None) -> RateCheck | None:
        """The check measured at this rate (the sizing model takes its mean latency from it)."""
        return next((w for w in self.windows if rate_rps is not None and w.rate_rps == rate_rps), None)


def check_operating_point(measure: Callable[[float], RateWindow], rate_rps: float, slo: Slo,
                          backoff_windows: int = 3, windows: int = 2) -> OperatingPointCheck:
    """`windows` windows at `rate_rps`; if they miss the SLO, bisect on [0, rate_rps] for `backoff_windows` rates.

    Each rate is judged on all its windows together (`rate_check`), so its p95 rests on more than one window
    and has an interval. The answer is the highest rate measured to meet the SLO, and the interval it lies in:
    [that rate, the lowest failing rate above it]. After k rates the interval is rate / 2^k wide (3: 12.5% of
    the operating rate). When the operating rate meets the SLO, rates above it are not tried: the interval's
    upper end is None.
    """
    if rate_rps <= 0:
        raise ValueError(f"the operating rate must be > 0 rps, got {rate_rps}")
    n = max(1, windows)

    def at(rate: float) -> RateCheck:
        return rate_check(rate, [measure(rate) for _ in range(n)], slo)

    first = at(rate_rps)
    if first.meets_slo:
        return OperatingPointCheck(first, [], rate_rps, (rate_rps, None))
    low, high, best = 0.0, rate_rps, None
    tried: list[RateCheck] = []
    for _ in range(backoff_windows):
        mid = (low + high) / 2
        check = at(mid)
        tried.append(check)
        if check.meets_slo:
            low, best = mid, check
        else:
            high = mid
    return OperatingPointCheck(first, tried, best.rate_rps if best else None, (low, high))


@dataclass(frozen=True)
class SizingLatency:
    """The latency and the SLO rate per pod the sizing model takes from a ramp, and where they come from."""

    mean_latency_s: float | None
    slo_rate_per_pod_rps: float | None  # only when the operating rate missed the SLO and the back-off found one
    source: str


def sizing_latency(check: OperatingPointCheck | None, replicas: int, stage: str,
                   closed_p95_ms: float | None) -> SizingLatency:
    """The mean latency at the rate a pod is planned at: the verified operating rate's window, or the window
    at the rate the back-off found when the SLO missed there. Without a check (load.verify_s 0) the closed-loop
    p95 at the operating rate stands in: an upper bound of the mean, so the sizing errs on the safe side.

    The SLO rate caps the per-pod rate only when the operating rate missed the SLO: a met operating rate says
    nothing about how far above it the SLO still holds."""
    if check is None:
        return SizingLatency(closed_p95_ms / 1000 if closed_p95_ms else None, None,
                             f"p95 {closed_p95_ms} ms interpolated on the closed-loop {stage} ramp (not verified "
                             "open loop: an upper bound of the mean latency)")
    slo_rate = None if check.met or check.slo_rate_rps is None else check.slo_rate_rps / replicas
    window = check.sizing_window
    if window is None or window.mean_ms is None:
        return SizingLatency(None, slo_rate, "")
    return SizingLatency(window.mean_ms / 1000, slo_rate,
                         f"mean latency open loop at {rate_text(window.rate_rps)} rps on {replicas} pod(s) ({stage})")
