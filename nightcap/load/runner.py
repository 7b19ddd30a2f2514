"""One load step against the platform: users held (or a rate offered), warm-up, a measured window, replicas
watched meanwhile.

The search (`nightcap.search.saturation`) calls `StepRunner.measure(users)` once per window (closed loop); the
operating-point check calls `measure_rate(rps)` (open loop) and the autoscale phases `set_rate` and
`read_open_window`. Every row is handed on at once.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import httpx

from nightcap.config import Config
from nightcap.load.base import Generator, target_url
from nightcap.load.driver import REPORT_INTERVAL_S, LoadError, Window, summarize
from nightcap.load.open_loop import OpenWindow, summarize_open
from nightcap.platforms.base import Observation, Platform, PodSpec
from nightcap.steps import StepRow


class BudgetExceeded(RuntimeError):
    """The run reached load.max_duration_s; what was measured is kept."""


@contextmanager
def master_answers() -> Iterator[None]:
    """A call to the Locust master whose HTTP failure (a master killed between or during windows) reads as the run
    names it, wherever the call was made."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise LoadError(f"the Locust master stopped answering: {exc}") from None

class StepRunner:
    """Measures windows for the search; every row is handed to `on_row` at once so nothing is lost."""

    def __init__(self, config: Config, platform: Platform, generator: Generator, stage: str,
                 on_row: Callable[[StepRow], None], deadline: float | None = None,
                 spec: PodSpec | None = None, step_counter: Callable[[], int] | None = None,
                 sample_s: float = 1.0):
        self.config = config
        self.platform = platform
        self.generator = generator
        self.stage = stage
        self.on_row = on_row
        self.deadline = deadline
        self.spec = spec
        self.sample_s = sample_s
        self._users: int | None = None
        self._rate: float | None = None
        self._last_users = 0  # the load of the last window, and how long its requests took (p95, s): when the
        self._drain_s = 0.0   # next window asks for less, the server still works off what that one queued
        self._counter = step_counter or _counter()
        self.rows: list[StepRow] = []
        self.purpose = "search"  # written into each row (StepRow.purpose): why the window was measured

    def check_budget(self, needed_s: float) -> None:
        """Refuse to start what would run past load.max_duration_s."""
        if self.deadline is not None and time.monotonic() + needed_s > self.deadline:
            raise BudgetExceeded(
                f"the run would exceed load.max_duration_s ({self.config.load.max_duration_s:.0f}s); "
                "steps measured so far are kept"
            )

    def set_users(self, users: int, user_rps: float = 0.0) -> None:
        """Hold `users` users: closed loop, or each paced to `user_rps` (an offered rate)."""
        load = self.config.load
        if users > load.max_users:
            raise LoadError(f"{users} users exceeds the safety limit load.max_users ({load.max_users})")
        with master_answers():
            self.generator.client.swarm(users, load.spawn_rate, target_url(self.generator, self.platform),
                                        user_rps=user_rps)
        self._users, self._rate = users, None

    def set_rate(self, rate_rps: float, connection: str = "keep-alive") -> None:
        """Offer `rate_rps` open loop, split over the generator's workers (`connection`: see `swarm_rate`)."""
        load = self.config.load
        if rate_rps > load.max_rps:
            raise LoadError(f"{rate_rps:.0f} rps exceeds the safety limit load.max_rps ({load.max_rps:.0f})")
        with master_answers():  # a switch from closed loop stops the swarm first: the master can die in that second
            self.generator.client.swarm_rate(rate_rps, self.generator.workers,
                                             target_url(self.generator, self.platform), arrivals=load.arrivals,
                                             max_in_flight=load.open_max_in_flight, late_ms=load.open_late_ms,
                                             connection=connection)
        self._users, self._rate = None, rate_rps

    def measure_rate(self, rate_rps: float, window_s: float | None = None) -> tuple[StepRow, OpenWindow]:
        """One open-loop window at `rate_rps`: a StepRow (load "open", rps = goodput) and the full window.

        The row is generator-bound when the schedule slipped (> 1% late or dropped) with a pegged
        generator; when it slipped with the generator idle, the note says the target was overloaded.
        """
        load = self.config.load
        window_s = window_s or load.window_s
        self.check_budget(window_s + load.warmup_s)
        started = time.time()
        restart = getattr(self.generator, "restart_dead_workers", None)
        if restart is not None and restart():
            self._rate = None  # a replacement worker has no scheduler yet
        if rate_rps != self._rate:
            self.set_rate(rate_rps)
            time.sleep(self._warmup_s(None))
        raw, open_raw, gen_cpu, samples, workers_before, span = self._window(window_s, with_open=True)
        closed = summarize(raw)
        window = summarize_open(open_raw or {}, rate_rps, closed)
        busiest = max(gen_cpu, default=0.0)
        row = self._row(0, closed, gen_cpu, samples, started, span)
        verdict = window.verdict(busiest, load.generator_bound_pct)
        row.load, row.offered_rps, row.late, row.dropped = "open", round(window.offered_rps, 2), window.late, window.dropped
        row.mean_ms = None if window.mean_ms is None else round(window.mean_ms, 2)
        row.rps, row.requests, row.failures = round(window.goodput_rps, 2), window.completed, window.failures
        row.error_rate = round(window.error_rate, 5)
        row.valid = window.completed > 0 or window.failures > 0
        row.generator_bound = row.generator_bound or verdict == "generator-bound"
        notes = [n for n in (window.explain(busiest, load.generator_bound_pct),
                             "errors: " + _top_errors(closed.errors) if window.failures and closed.errors else "")
                 if n]
        if self.generator.alive_workers() < workers_before or window.workers < self.generator.workers:
            row.valid = False
            notes.insert(0, f"a load generator worker died during the window ({window.workers} of "
                            f"{self.generator.workers} reporting)")
        row.note = "; ".join(notes) or ("" if window.completed else "no request completed in the window")
        if not row.valid and not row.generator_bound:
            self._rate = None  # set the schedule again before the next window (see `measure`)
        self.follow(row)
        self.rows.append(row)
        self.on_row(row)
        return row, window

    def _window(self, window_s: float, with_open: bool = False
                ) -> tuple[dict, dict | None, list[float], list[Observation], int, tuple[float, float]]:
        """Reset, watch the replicas for `window_s`, read the master: (window, open counters, generator CPU,
        replica samples, workers alive at the start, (start, end) of the measured window)."""
        workers_before = self.generator.alive_workers()
        self.generator.client.reset()
        measured_from = time.time()
        self.generator.mark_cpu()
        samples: list[Observation] = []
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(samples, stop), daemon=True)
        sampler.start()
        time.sleep(window_s)
        stop.set()
        sampler.join(timeout=5)
        self._observe_into(samples)  # the end of the window: a replica that died in its last second counts
        span = (measured_from, time.time())
        with master_answers():
            raw = self.generator.client.window()
            # by arrival, once the window's arrivals came back (up to another window): its own, all of them
            open_raw = self.generator.client.open_window(settle_s=window_s) if with_open else None
        return raw, open_raw, self.generator.generator_cpu_pct(), samples, workers_before, span

    def read_open_window(self, seconds: float, rate_rps: float) -> OpenWindow:
        """What the open-loop schedule already running at `rate_rps` did over the next `seconds`: a sample, no row.

        Arrivals keep their plan whether or not the pods keep up, and the window says how many of its own were
        dropped, failed or came back so far (latency from the planned time; `unsettled`: still in flight).
        """
        self.generator.client.reset()
        time.sleep(seconds)
        closed = self._read()
        with master_answers():
            open_raw = self.generator.client.open_window()
        return summarize_open(open_raw, rate_rps, closed)

    def _warmup_s(self, users: int | None) -> float:
        """load.warmup_s, or longer after a heavier window: the requests it left queued at the server (stopped
        users' requests are still served) take about its p95 to drain (capped at 10 s), and a window read before
        they have would measure the last level's backlog, not this one.

        Plus two worker report intervals: a window counts each worker's requests from its last report before the
        reset (`nightcap_window.on_reset`), up to one interval earlier, and the workers stop their surplus users
        on their own time. A 2-user window on a CPU-limited pod right after 12 users read 56.4 rps against a
        capacity of 50 (p95 350 ms, the 12 users' queue). With the generator pinned to one core beside the flow
        (4 slots x 20 ms, 2 workers, 16 users then 8 or 2), the first window read 106 against the next's 91 rps
        (p95 220 ms against 23) in 3 of 6 switches after the drain plus one interval, and in none of 12 after the
        drain plus two."""
        lighter = users is None or users < self._last_users
        return max(self.config.load.warmup_s, min(self._drain_s, 10.0) + 2 * REPORT_INTERVAL_S if lighter else 0.0)

    def follow(self, row: StepRow) -> None:
        """The window measured last (by this runner, or the one before it on the same platform): the next window,
        when lighter, waits for what that one left queued (`_warmup_s`)."""
        self._last_users = row.users if row.load != "open" else 10**9  # an open-loop rate: drain before any users
        self._drain_s = (row.p95_ms or 0.0) / 1000.0

    def _read(self) -> Window:
        with master_answers():
            return summarize(self.generator.client.window())

    def measure(self, users: int) -> StepRow:
        load = self.config.load
        self.check_budget(load.window_s + load.warmup_s)
        started = time.time()
        restart = getattr(self.generator, "restart_dead_workers", None)
        if restart is not None and restart():
            self._users = None  # a replacement worker holds no users yet: swarm again before measuring
        if users != self._users:
            self.set_users(users)
            time.sleep(self._warmup_s(users))
        raw, _, gen_cpu, samples, workers_before, span = self._window(load.window_s)
        window = summarize(raw)
        row = self._row(users, window, gen_cpu, samples, started, span)
        if window.failures and window.errors:
            row.note = (row.note + "; " if row.note else "") + "errors: " + _top_errors(window.errors)
        if self.generator.alive_workers() < workers_before or window.workers < self.generator.workers:
            row.valid = False
            row.note = (f"a load generator worker died during the window ({window.workers} of "
                        f"{self.generator.workers} reporting); the step is re-measured, not averaged")
        if not row.valid and not row.generator_bound:
            # Swarm again before the next window: a master that had no worker when it was told to swarm says
            # success and starts nothing, and the user count alone would not change, so every later window
            # would come back empty too. Not when the generator was pegged: its users are there but starved,
            # and starting them again would only keep it starting (the window is flagged, never the answer).
            self._users = None
        if rate_limited := (self.config.load.max_rps and window.rps > self.config.load.max_rps):  # offered, failures too
            row.note = (row.note + "; " if row.note else "") + f"rps {window.rps:.0f} above load.max_rps"
        self.follow(row)
        self.rows.append(row)
        self.on_row(row)
        if rate_limited:
            raise LoadError(f"measured {window.rps:.0f} rps, above the safety limit load.max_rps "
                            f"({self.config.load.max_rps:.0f}); the run stops here")
        return row

    def _sample(self, samples: list[Observation], stop: threading.Event) -> None:
        # The first look primes per-replica CPU counters and is the baseline for restarts and OOM kills;
        # it is kept (its CPU is None, so it does not skew the means), else a replica that died during the
        # warm-up, or a window shorter than sample_s, would lose its restart and events.
        self._observe_into(samples)
        while not stop.wait(self.sample_s):
            self._observe_into(samples)

    def _observe_into(self, samples: list[Observation]) -> None:
        try:
            samples.append(self.platform.observe())
        except Exception as exc:  # observation must never break a measurement
            samples.append(Observation(events=[f"observe failed: {exc}"]))

    def _row(self, users: int, w: Window, gen_cpu: list[float], samples: list[Observation], started: float,
             span: tuple[float, float]) -> StepRow:
        spec = self.spec or getattr(self.platform, "spec", None)
        cpu_pct, cpu_source = replica_cpu(samples, span)
        mem: dict[str, float] = {}
        restarts = oom = pending = 0
        events: list[str] = []
        for obs in samples:
            pending = max(pending, obs.pending)
            events += obs.events
            for r in obs.replicas:
                if r.memory_bytes is not None:
                    mem[r.name] = max(mem.get(r.name, 0.0), r.memory_bytes / 2**20)
        if samples:
            last = samples[-1]
            base = {r.name: (r.restarts, r.oom_kills) for r in samples[0].replicas}
            restarts = sum(max(r.restarts - base.get(r.name, (0, 0))[0], 0) for r in last.replicas)
            oom = sum(max(r.oom_kills - base.get(r.name, (0, 0))[1], 0) for r in last.replicas)
            # a replica that died and came back between samples still shows in its counters
            restarts = max(restarts, sum(1 for e in events if "restart" in e))
            oom = max(oom, sum(1 for e in events if "OOMKilled" in e))
        busiest = max(gen_cpu, default=0.0)
        return StepRow(
            stage=self.stage, step=self._counter(), replicas=self.platform.replicas,
            cpu=spec.cpu if spec else None, memory=spec.memory if spec else None,
            concurrency=spec.concurrency if spec else 0, users=users, rps=round(w.goodput_rps, 2),
            rps_halfwidth=None if w.goodput_halfwidth is None else round(w.goodput_halfwidth, 2), batches=w.batches,
            p50_ms=w.p50_ms, p90_ms=w.p90_ms, p95_ms=w.p95_ms, p99_ms=w.p99_ms,
            error_rate=round(w.error_rate, 5), requests=w.requests, failures=w.failures,
            workers=self.generator.workers, generator_cpu_pct=round(busiest, 1),
            generator_bound=busiest >= self.config.load.generator_bound_pct,
            replica_cpu_pct=[round(statistics.fmean(v), 1) for v in cpu_pct.values()],
            replica_memory_mb=[round(v, 1) for v in mem.values()],
            restarts=restarts, oom_kills=oom, pending=pending, valid=w.requests > 0 or w.failures > 0,
            note="" if w.requests else "no request completed in the window",
            started_at=started, duration_s=round(time.time() - started, 2), events=events[-20:],
            replica_cpu_source=cpu_source, generator_cpu_source=getattr(self.generator, "cpu_source", ""),
            purpose=self.purpose,
        )


CLOCK_SLACK_S = 1.0  # the cluster's clock (metrics timestamps) and this machine's may differ this much


def replica_cpu(samples: list[Observation], span: tuple[float, float]) -> tuple[dict[str, list[float]], str]:
    """Per-replica CPU use in the measured window (% of its limit, or of a core), and where it comes from.

    A figure that says which interval it covers (metrics-server: 15-30 s) counts only when that interval lies
    inside the window: one that began earlier describes earlier load, and would make a tuning verdict or a
    generator flag about the previous step. Figures without an interval (local counters, rates since the
    previous look) count from the second look on, as the first look's covers the warm-up.
    """
    per_replica: dict[str, list[float]] = {}
    inside: dict[tuple[str, float, float], float] = {}
    intervals = 0
    for i, obs in enumerate(samples):
        for r in obs.replicas:
            if r.cpu_cores is None:
                continue
            pct = 100.0 * r.cpu_cores / (r.cpu_limit or 1.0)
            if r.cpu_window is not None:
                intervals += 1
                start, end = r.cpu_window
                if start >= span[0] - CLOCK_SLACK_S and end <= span[1] + CLOCK_SLACK_S:
                    inside[(r.name, start, end)] = pct  # the same interval is read again on every look
            elif i > 0:
                per_replica.setdefault(r.name, []).append(pct)
    for (name, _, _), pct in inside.items():
        per_replica.setdefault(name, []).append(pct)
    source = next((o.cpu_source for o in reversed(samples) if o.cpu_source), "")
    if intervals:
        length = span[1] - span[0]
        source += (f"; {len(inside)} interval(s) inside the window" if inside else
                   f"; none inside this {length:.0f}s window, so per-pod CPU was not measured: set load.window_s "
                   "to at least twice the interval")
    return per_replica, source


def _top_errors(errors: list[dict], limit: int = 2) -> str:
    """What failed, most frequent first (`BadStatusCode(... code=503) x41`), so a stop reason has a cause."""
    ranked = sorted(errors, key=lambda e: -int(e.get("occurrences", 0)))[:limit]
    return "; ".join(f"{str(e.get('error', '?'))[:160]} x{e.get('occurrences', 0)}" for e in ranked)


def _counter() -> Callable[[], int]:
    state = {"n": 0}

    def nxt() -> int:
        state["n"] += 1
        return state["n"]

    return nxt
