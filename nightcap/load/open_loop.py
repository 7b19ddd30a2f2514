"""One open-loop window read from the Locust master: offered vs achieved rate, latency from the planned
send time, and whether the generator kept its schedule.

Pure (no Locust import): the master's `GET /nightcap/open` counters and the `/nightcap/window` percentiles
go in, an `OpenWindow` comes out. Why a window says which side failed: late or dropped arrivals mean the
offered rate was not what was asked, and the answer differs: a generator that ran out of CPU needs more
generator, a target that stopped answering (the in-flight bound filled up) is the finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TOLERATED_SHARE = 0.01  # late + dropped arrivals beyond this share make a window untrustworthy
Verdict = Literal["ok", "generator-bound", "target-overloaded"]


@dataclass
class OpenWindow:
    """What an open-loop window asked for, offered and got back, summed over workers."""

    rate_rps: float  # the rate asked for
    offered_rps: float  # arrivals planned per second over the time the workers' reports covered
    achieved_rps: float  # responses per second (successful or not)
    goodput_rps: float  # successful responses per second
    planned: int
    sent: int
    completed: int
    ok: int
    late: int  # sent more than the late threshold after their planned time
    dropped: int  # not sent: the worker already held its in-flight bound
    mean_ms: float | None  # from the planned send time, like the percentiles
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    late_ms_max: float
    in_flight_max: int
    workers: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    ok_ms: dict[int, int] | None = None  # latency histogram of successful responses, from the planned send time

    @property
    def failures(self) -> int:
        return self.completed - self.ok

    @property
    def error_rate(self) -> float:
        return self.failures / self.completed if self.completed else (1.0 if self.planned else 0.0)

    @property
    def arrival_error_rate(self) -> float:
        """Arrivals a caller did not get answered, failed or dropped, per planned arrival (at most 1: failures
        landing in this window may belong to arrivals planned in the one before)."""
        if not self.planned:
            return self.error_rate
        return min((self.failures + self.dropped) / self.planned, 1.0)

    @property
    def late_share(self) -> float:
        return self.late / self.planned if self.planned else 0.0

    @property
    def dropped_share(self) -> float:
        return self.dropped / self.planned if self.planned else 0.0

    def verdict(self, generator_cpu_pct: float, bound_pct: float = 90.0) -> Verdict:
        """ok, or which side kept the offered rate from being what was asked (generator CPU tells them apart)."""
        if self.late_share + self.dropped_share <= TOLERATED_SHARE:
            return "ok"
        return "generator-bound" if generator_cpu_pct >= bound_pct else "target-overloaded"

    def explain(self, generator_cpu_pct: float, bound_pct: float = 90.0) -> str:
        """The verdict in words, with the figures that decided it."""
        verdict = self.verdict(generator_cpu_pct, bound_pct)
        shares = (f"{self.late} late ({100 * self.late_share:.1f}%, up to {self.late_ms_max:.0f} ms) and "
                  f"{self.dropped} dropped ({100 * self.dropped_share:.1f}%) of {self.planned} planned arrivals")
        if verdict == "ok":
            return ""
        if verdict == "generator-bound":
            return (f"generator-bound: {shares}, busiest generator process at {generator_cpu_pct:.0f}% of a core; "
                    "add load.workers or generator CPU, this is not the target's limit")
        return (f"target-overloaded: {shares} with the generator at {generator_cpu_pct:.0f}% of a core; "
                f"responses did not come back fast enough ({self.in_flight_max} in flight at most on one worker)")


def summarize_open(raw: dict[str, Any], rate_rps: float, percentiles: Any = None) -> OpenWindow:
    """Rates per worker over the time its reports covered, summed; percentiles from the master's window.

    `percentiles` is the closed-loop `Window` of the same interval (its p50..p99 are Locust's, and the
    open-loop user reports latency from the planned time, so they are the open-loop figures).
    """
    workers = raw.get("workers", {})
    covered = [(w, w["covered_s"]) for w in workers.values() if w.get("covered_s", 0) > 0]

    def rate(key: str) -> float:
        return sum(w[key] / s for w, s in covered)

    def total(key: str) -> int:
        return int(sum(w.get(key, 0) for w in workers.values()))

    completed = total("completed")
    latency_sum = sum(w.get("latency_ms_sum", 0.0) for w in workers.values())
    return OpenWindow(
        rate_rps=rate_rps,
        offered_rps=rate("planned"),
        achieved_rps=rate("completed"),
        goodput_rps=rate("ok"),
        planned=total("planned"),
        sent=total("sent"),
        completed=completed,
        ok=total("ok"),
        late=total("late"),
        dropped=total("dropped"),
        mean_ms=latency_sum / completed if completed else None,
        p50_ms=getattr(percentiles, "p50_ms", None),
        p90_ms=getattr(percentiles, "p90_ms", None),
        p95_ms=getattr(percentiles, "p95_ms", None),
        p99_ms=getattr(percentiles, "p99_ms", None),
        late_ms_max=max((w.get("late_ms_max", 0.0) for w in workers.values()), default=0.0),
        in_flight_max=int(max((w.get("in_flight_max", 0) for w in workers.values()), default=0)),
        workers=len(workers),
        errors=list(getattr(percentiles, "errors", []) or []),
        ok_ms=getattr(percentiles, "ok_ms", None),
    )
