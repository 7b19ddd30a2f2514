"""One open-loop window read from the Locust master: offered vs achieved rate, latency from the planned
send time, and whether the generator kept its schedule.

Pure (no Locust import): the master's `GET /nightcap/open` counters go in, an `OpenWindow` comes out. The
counters are by arrival: a window holds the arrivals planned in it (an epoch of the locustfile's ledger) and
whatever became of them, whenever that was, so no rate exceeds 100% and `goodput_rps` counts completions of
the window's own arrivals. A window read before its last arrivals came back says so (`unsettled`). Why a window says which side failed: late or dropped arrivals mean the
offered rate was not what was asked, and the answer differs: a generator that ran out of CPU needs more
generator, a target that stopped answering (the in-flight bound filled up) is the finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nightcap.analysis import latency


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
    abandoned: int = 0  # sent, then given up by the generator (its swarm stopped) before an answer came
    unsettled: int = 0  # sent and not back when read: the window's figures may still change (read it again)
    first_epoch: int | None = None  # the ledger's windows this one spans (to read it again once settled)
    last_epoch: int | None = None
    covered_s: float = 0.0  # the time its arrivals were planned over (the workers' mean)
    ok_ms: dict[int, int] | None = None  # latency histogram of successful responses, from the planned send time

    @property
    def failures(self) -> int:
        return self.completed - self.ok

    @property
    def error_rate(self) -> float:
        return self.failures / self.completed if self.completed else (1.0 if self.planned else 0.0)

    @property
    def arrival_error_rate(self) -> float:
        """Arrivals a caller did not get answered, failed, dropped or abandoned, per planned arrival (at most 1:
        every one of them is an arrival of this window; the unsettled ones are not counted yet)."""
        if not self.planned:
            return self.error_rate
        return (self.failures + self.dropped + self.abandoned) / self.planned

    @property
    def late_share(self) -> float:
        return self.late / self.planned if self.planned else 0.0

    @property
    def dropped_share(self) -> float:
        return self.dropped / self.planned if self.planned else 0.0

    def verdict(self, generator_cpu_pct: float, bound_pct: float = 90.0) -> Verdict:
        """ok, or which side kept the offered rate from being what was asked (generator CPU tells them apart).

        Dropped arrivals (the in-flight bound was full: responses did not come back) beyond 1% overloaded the
        target. Late ones are sent behind their plan, but their latency counts from the planned time, so they
        cost the window nothing but its exact spacing; they disqualify it only when the generator was pegged
        (its schedule is then the generator's, not the callers'). An idle machine's scheduler makes a few sends
        late at any rate (seen here: 1-2% at 17 rps as at 140).
        """
        pegged = generator_cpu_pct >= bound_pct
        if self.dropped_share > TOLERATED_SHARE:
            return "generator-bound" if pegged else "target-overloaded"
        if pegged and self.late_share + self.dropped_share > TOLERATED_SHARE:
            return "generator-bound"
        return "ok"

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
    """Rates per worker over the time its reports covered, summed; percentiles of the window's successful
    arrivals from the workers' histograms (from `percentiles`, a closed-loop `Window` of the same interval, when
    the master sent none)."""
    workers = raw.get("workers", {})
    covered = [(w, w["covered_s"]) for w in workers.values() if w.get("covered_s", 0) > 0]

    def rate(key: str) -> float:
        return sum(w[key] / s for w, s in covered)

    def total(key: str) -> int:
        return int(sum(w.get(key, 0) for w in workers.values()))

    completed = total("completed")
    latency_sum = sum(w.get("latency_ms_sum", 0.0) for w in workers.values())
    ok_ms = latency.merge({int(ms): int(n) for ms, n in w["ok_ms"]} if "ok_ms" in w else None
                          for w in workers.values())

    def pct(q: float, key: str) -> float | None:
        return latency.percentile(ok_ms, q) if ok_ms is not None else getattr(percentiles, key, None)

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
        p50_ms=pct(0.5, "p50_ms"),
        p90_ms=pct(0.9, "p90_ms"),
        p95_ms=pct(0.95, "p95_ms"),
        p99_ms=pct(0.99, "p99_ms"),
        late_ms_max=max((w.get("late_ms_max", 0.0) for w in workers.values()), default=0.0),
        in_flight_max=int(max((w.get("in_flight_max", 0) for w in workers.values()), default=0)),
        workers=len(workers),
        errors=list(getattr(percentiles, "errors", []) or []),
        abandoned=total("abandoned"),
        unsettled=total("unsettled"),
        first_epoch=raw.get("first"),
        last_epoch=raw.get("last"),
        covered_s=sum(s for _, s in covered) / len(covered) if covered else 0.0,
        ok_ms=ok_ms if ok_ms is not None else getattr(percentiles, "ok_ms", None),
    )
