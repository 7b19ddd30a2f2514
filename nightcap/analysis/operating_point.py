"""Verify the operating point at a rate, and back off to the highest rate that meets the SLO.

Why a rate: a closed-loop search finds the knee, but "run at 70% of saturation: does the SLO hold?" is a
question about arrivals per second, and only an open-loop window answers it (a closed loop slows down
with the server and under-reports the latency of a stall). Pure: `check_operating_point` takes a
`measure(rate) -> RateCheck` callable, so the bisection is tested without load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol


class _SloLike(Protocol):
    p95_ms: float
    max_error_rate: float


@dataclass(frozen=True)
class RateCheck:
    """One open-loop window at a rate, judged against the SLO."""

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
    verdict: str  # ok, generator-bound or target-overloaded (late + dropped beyond 1%)
    meets_slo: bool
    why: str = ""  # what failed, in words, when it did not meet the SLO

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(slo: _SloLike, *, p95_ms: float | None, error_rate: float, verdict: str) -> tuple[bool, str]:
    """Meets the SLO when p95 < slo.p95_ms, errors within slo.max_error_rate and the schedule was kept.

    A window that could not offer its rate (late or dropped arrivals beyond 1%) does not pass: a
    target-overloaded one is a failure, a generator-bound one proved nothing.
    """
    reasons = []
    if p95_ms is None:
        reasons.append("no response completed")
    elif p95_ms >= slo.p95_ms:
        reasons.append(f"p95 {p95_ms:.0f} ms >= SLO {slo.p95_ms:g} ms")
    if error_rate > slo.max_error_rate:
        reasons.append(f"errors {100 * error_rate:.1f}% > {100 * slo.max_error_rate:g}%")
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
    late: int
    dropped: int

    @property
    def error_rate(self) -> float: ...


def rate_check(rate_rps: float, window: _OpenWindowLike, verdict: str, slo: _SloLike, valid: bool = True,
               note: str = "") -> RateCheck:
    """An open-loop window (`nightcap.load.open_loop.OpenWindow`) judged against the SLO.

    A window the runner marked invalid (a generator worker died, nothing came back) never meets it.
    """
    ok, why = judge(slo, p95_ms=window.p95_ms, error_rate=window.error_rate, verdict=verdict)
    if not valid:
        ok, why = False, "; ".join(x for x in (why, note or "invalid window") if x)
    return RateCheck(rate_rps, window.offered_rps, window.achieved_rps, window.goodput_rps, window.p50_ms,
                     window.p95_ms, window.p99_ms, window.mean_ms, window.error_rate, window.planned, window.late,
                     window.dropped, verdict, ok, why)


@dataclass
class OperatingPointCheck:
    """The verification window at the operating rate and, when it failed, the bisection below it."""

    verified: RateCheck
    backoff: list[RateCheck] = field(default_factory=list)
    slo_rate_rps: float | None = None  # highest rate measured to meet the SLO; None when none did
    slo_rate_interval_rps: tuple[float, float | None] = (0.0, None)  # [met, first failed above it]

    @property
    def met(self) -> bool:
        return self.verified.meets_slo

    @property
    def sizing_window(self) -> RateCheck | None:
        """The window at the rate a pod is planned to run at: the verified one, else the SLO rate's."""
        return self.verified if self.met else self.at(self.slo_rate_rps)

    @property
    def windows(self) -> list[RateCheck]:
        return [self.verified, *self.backoff]

    def at(self, rate_rps: float | None) -> RateCheck | None:
        """The window measured at this rate (the sizing model takes its mean latency from it)."""
        return next((w for w in self.windows if rate_rps is not None and w.rate_rps == rate_rps), None)


def check_operating_point(measure: Callable[[float], RateCheck], rate_rps: float,
                          backoff_windows: int = 3) -> OperatingPointCheck:
    """One window at `rate_rps`; if it misses the SLO, bisect on [0, rate_rps] for `backoff_windows` windows.

    The answer is the highest rate measured to meet the SLO, and the interval it lies in: [that rate,
    the lowest failing rate above it]. After k windows the interval is rate / 2^k wide (3 windows: 12.5%
    of the operating rate). When the operating rate meets the SLO, rates above it are not tried: the
    interval's upper end is None.
    """
    if rate_rps <= 0:
        raise ValueError(f"the operating rate must be > 0 rps, got {rate_rps}")
    first = measure(rate_rps)
    if first.meets_slo:
        return OperatingPointCheck(first, [], rate_rps, (rate_rps, None))
    low, high, best = 0.0, rate_rps, None
    tried: list[RateCheck] = []
    for _ in range(backoff_windows):
        mid = (low + high) / 2
        window = measure(mid)
        tried.append(window)
        if window.meets_slo:
            low, best = mid, window
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
                         f"mean latency open loop at {window.rate_rps:.1f} rps on {replicas} pod(s) ({stage})")
