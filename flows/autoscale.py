"""Autoscaling: does the HPA (and the node pool) keep the SLO when load jumps, and how fast?

First what the platform allows (`nightcap.analysis.autoscale_plan`): the pods the HPA may add must fit the CPUs
reserved for replicas (else fewer replicas, or a smaller measured pod shape, said in the log, summary.json and
the report), and the phases must last long enough for a pod of this model to start under load (its start was
measured when it was deployed) and for the overload's backlog to drain, by the backlog arithmetic.

Phases (default): baseline at the operating point, a step to the overload × one pod's saturation, hold, step back
down, hold; sampled every `autoscale.sample_s`. Each phase offers its rate open loop: arrivals keep their schedule
whether or not the pods keep up. Every sample is one window of the generator's ledger: the arrivals planned in
it and what became of them, whenever they came back; the stage waits for the last ones (up to the request
time-out) and reads every window again, so no phase serves more than it offered or fails more than it planned.
Each arrival opens its own connection (`autoscale.connections`), so the per-connection balancer in front of the
pods (a Service, the local proxy) spreads arrivals over the ready pods whatever each already holds.

The stage is `inconclusive` (`AutoscaleResult.inconclusive`) when it could not answer: no room to add a pod,
added pods never ready, the SLO never met again, or stopped midway. What it sampled is kept in every case.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger

from nightcap.analysis.autoscale_load import (baseline_load, default_phases, node_pool_note, open_loop_cpu_cost,
                                              phase_rows)
from nightcap.analysis.autoscale_metrics import AutoscaleSample, inconclusive_reason, summarize_autoscale
from nightcap.analysis.autoscale_plan import AutoscaleFit, Expectation, Shape, expect, fit_to_platform
from nightcap.analysis.sizing import PerPod
from nightcap.analysis.slo import Slo
from nightcap.config import AutoscalePhase
from nightcap.load.base import tunnelled
from nightcap.load.open_loop import OpenWindow, summarize_open
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import HpaSpec, PodSpec
from nightcap.results.plots import timeline_plot
from nightcap.results.report import autoscale_line
from nightcap.results.stages import AutoscaleResult
from nightcap.run.context import RunContext, StageRun

SETTLE_MARGIN_S = 2.0  # beyond the request time-out: the workers' last reports (every 0.5 s) reach the master


@flow(name="autoscaling", flow_run_name="autoscale {run.run_id}")
def autoscale(run: StageRun) -> AutoscaleResult:
    """HPA (and node pool) under a load step: how fast pods come, what p95 does meanwhile, when it recovers."""
    ctx = run.context
    logger = get_run_logger()
    a = ctx.config.autoscale
    platform = ctx.platform
    assert platform is not None and ctx.spec is not None
    fit = fit_autoscale(ctx, one_pod(ctx))
    if fit.reason:
        logger.warning("autoscale: %s", fit.reason)
    timeline = Timeline(ctx, fit, logger)
    if fit.no_room:
        return timeline.finish(f"it did not run: {fit.no_room}")
    spec = PodSpec(fit.shape.cpu, fit.shape.memory, fit.shape.concurrency)
    try:
        if spec != ctx.spec:
            platform.set_resources(spec)  # the start of this shape is measured here, before the phases use it
        shape = (fit.shape.cpu, fit.shape.memory, fit.shape.concurrency)
        open_cost = open_loop_cpu_cost(s for s in ctx.steps if (s.cpu, s.memory, s.concurrency) == shape)
        base, why = baseline_load(ctx.config.search.headroom, a.target_cpu_pct, fit.shape.rps, fit.shape.rps_low,
                                  open_cost, a.tolerance, fit.held)
        if why and not a.phases:
            logger.info("autoscale: %s", why)
        timeline.expected = expectation(ctx, fit, spec, base)
        timeline.phases = a.phases or default_phases(a, base, fit.overload, timeline.expected)
        with ctx.measuring("autoscale", ctx.config.load.workers) as runner:
            timeline.run(runner)
    except BaseException as exc:
        timeline.keep_what_was_measured(exc)
        raise
    finally:
        timeline.restore(spec)
    return timeline.finish()


def fit_autoscale(ctx: RunContext, per_pod: PerPod) -> AutoscaleFit:
    """The pod shape, max replicas and overload this platform allows (the tuned pod when it fits)."""
    a, spec, platform = ctx.config.autoscale, ctx.spec, ctx.platform
    assert spec is not None
    tuned = Shape(spec.cpu, spec.memory, spec.concurrency, per_pod.rps, per_pod.source, per_pod.rps_low)
    grid: list[Shape] = []
    tune = ctx.results.tune
    if tune is not None:
        grid = [Shape(c.candidate.cpu, c.candidate.memory, c.candidate.concurrency, c.saturation_rps / tune.replicas,
                      f"tune, on {tune.replicas} pod(s)")
                for c in tune.candidates if c.meets_slo and not c.unschedulable and not c.oom_kills]
    budget = getattr(platform, "replica_cpu_budget", None)
    overload = max(p.load for p in a.phases) if a.phases else a.overload  # what the phases will offer
    return fit_to_platform(tuned, grid, budget() if budget else None, a.min_replicas, a.max_replicas, overload,
                           ctx.config.search.headroom, phases_given=bool(a.phases), held=per_pod.held_share)


def expectation(ctx: RunContext, fit: AutoscaleFit, spec: PodSpec, baseline: float) -> Expectation:
    """The backlog arithmetic for this pod, with its start as the platform measured it; `baseline`: the
    baseline's load (`baseline_load`)."""
    a, cfg = ctx.config.autoscale, ctx.config
    start = getattr(ctx.platform, "start_seconds", None)
    if cfg.target.kind == "reference":  # the server answers 503 beyond its slots and queue
        bound: float = spec.concurrency + cfg.target.queue
    else:  # nothing known of the server: what the generator holds in flight at most
        bound = cfg.load.workers * cfg.load.open_max_in_flight
    return expect(fit.shape.rps, fit.overload, baseline, min_replicas=a.min_replicas,
                  max_replicas=fit.max_replicas, target_pct=a.target_cpu_pct, tolerance=a.tolerance,
                  sync_s=a.sync_period_s, readiness_s=a.readiness_delay_s, sample_s=a.sample_s,
                  start_s=start(spec) if start else None, backlog_bound=bound, stabilization_s=a.stabilization_s)


class Timeline:
    """The stage's samples as it takes them, each one window of the generator's ledger (`first_epoch`)."""

    def __init__(self, ctx: RunContext, fit: AutoscaleFit, logger: Any):
        self.ctx, self.fit, self.logger = ctx, fit, logger
        self.samples: list[AutoscaleSample] = []
        self.windows: list[int | None] = []  # each sample's ledger window
        self.runner: StepRunner | None = None
        self.connections = ctx.config.autoscale.connections
        self.t0 = time.monotonic()
        self.phases: list[AutoscalePhase] = []
        self.expected: Expectation | None = None
        self.phase_t: dict[str, float] = {}  # when each phase's rate was set (the step, the step down)

    def run(self, runner: StepRunner) -> None:
        """Offer each phase's rate, sample it, then let the last arrivals come back and read every window again.

        Stopped midway, it reads the windows again at once, while the generator is still up (`measuring` stops
        a generator that failed)."""
        self.runner = runner
        try:
            self._run(runner)
        except BaseException:
            try:
                self.reread(settle_s=0.0)
            except Exception as err:  # the generator may be what failed: keep the samples as first read
                self.logger.warning("autoscale: samples kept as first read (%s)", err)
            raise

    def _run(self, runner: StepRunner) -> None:
        ctx, a, platform, phases = self.ctx, self.ctx.config.autoscale, self.ctx.platform, self.phases
        assert platform is not None
        if self.connections == "per-request" and tunnelled(runner.generator, platform):
            self.connections = "keep-alive"
            self.logger.warning(
                "autoscale: the generator reaches the pods through a port-forward, where each new connection is an "
                "API-server tunnel: connections are kept alive (re-opened every load.reconnect_s), so a backlogged "
                "pod keeps more than its share; load.generator: cluster spreads arrivals evenly")
        platform.scale(a.min_replicas)
        if a.nodes and ctx.config.platform.gke and hasattr(platform, "enable_node_autoscaling"):
            platform.enable_node_autoscaling(a.nodes.get("min", 1), a.nodes.get("max", 3))  # type: ignore[attr-defined]
        if phases[0].load > 0:  # the first phase's arrivals flowing before it is sampled (or the HPA acts)
            runner.set_rate(phases[0].load * self.fit.shape.rps, connection=self.connections)
            time.sleep(ctx.config.load.warmup_s)
        platform.enable_autoscaling(HpaSpec(
            target_cpu_pct=a.target_cpu_pct, min_replicas=a.min_replicas, max_replicas=self.fit.max_replicas,
            sync_period_s=a.sync_period_s, stabilization_s=a.stabilization_s, tolerance=a.tolerance,
            readiness_delay_s=a.readiness_delay_s))
        self.t0 = time.monotonic()
        for phase in phases:
            self._phase(phase)
        runner.set_rate(0.0, connection=self.connections)  # plan nothing more; what is in flight comes back
        timeout = ctx.config.target.request_timeout_s + SETTLE_MARGIN_S
        self.reread(settle_s=min(timeout, max((ctx.deadline or float("inf")) - time.monotonic(), 0.0)))

    def _phase(self, phase: AutoscalePhase) -> None:
        assert self.runner is not None and self.ctx.platform is not None
        a, gen = self.ctx.config.autoscale, self.runner.generator
        rate = phase.load * self.fit.shape.rps
        self.runner.set_rate(rate, connection=self.connections)  # 0: an idle phase, the scale-down with nothing offered
        gen.client.reset()  # a new ledger window starts with the phase's rate
        self.phase_t[phase.name] = time.monotonic() - self.t0
        self.logger.info("autoscale: phase %s: %.1f rps offered open loop (%.2f x one pod's %.1f rps) for %.0fs",
                         phase.name, rate, phase.load, self.fit.shape.rps, phase.duration_s)
        end = time.monotonic() + phase.duration_s
        while time.monotonic() < end:
            seconds = min(a.sample_s, max(end - time.monotonic(), 0.5))
            self.runner.check_budget(seconds)
            time.sleep(seconds)
            raw = gen.client.open_window()  # closes this sample's window, as far as it came back so far
            self._sample(phase.name, summarize_open(raw, rate), raw)

    def _sample(self, phase: str, w: OpenWindow, raw: dict[str, Any]) -> None:
        ctx, platform = self.ctx, self.ctx.platform
        assert platform is not None
        st = platform.autoscaling_status()
        obs = platform.observe()
        nodes = sum(obs.nodes.values()) if obs.nodes and ctx.config.platform.kind != "local" else None
        self.samples.append(_by_arrival(AutoscaleSample(
            t=time.monotonic() - self.t0, phase=phase, rps=0.0, p50_ms=None, p95_ms=None, error_rate=0.0,
            current=st.current_replicas, desired=st.desired_replicas, ready=st.ready_replicas, pending=st.pending,
            nodes=nodes, in_flight=sum(int(x.get("in_flight", 0)) for x in raw.get("workers", {}).values()),
            **_waiting(platform)), w))
        self.windows.append(w.first_epoch)
        for event in obs.events:
            self.logger.info("autoscale event: %s", event)

    def reread(self, settle_s: float) -> None:
        """Every sample's window again, once its arrivals came back (or `settle_s` passed): final figures."""
        assert self.runner is not None
        client = self.runner.generator.client
        known = [w for w in self.windows if w is not None]
        if not known:
            return
        if settle_s > 0:
            t0 = time.monotonic()
            raw = client.open_window(first=min(known), last=max(known), settle_s=settle_s)
            if not raw.get("settled"):
                self.logger.warning("autoscale: arrivals still in flight %.0fs after the last phase; they are "
                                    "counted as unsettled", settle_s)
            else:
                self.logger.info("autoscale: the last arrivals came back %.1fs after the last phase",
                                 time.monotonic() - t0)
        for i, window in enumerate(self.windows):
            if window is not None:
                self.samples[i] = _by_arrival(self.samples[i], summarize_open(
                    client.open_window(first=window, last=window), self.samples[i].offered_rps or 0.0))

    def keep_what_was_measured(self, exc: BaseException) -> None:
        """A failed or cancelled stage keeps its samples and timeline (`run` read them again if it could)."""
        why = f"it stopped after {time.monotonic() - self.t0:.0f}s: {exc or type(exc).__name__}"
        self.ctx.results.autoscale = self._result(why)

    def restore(self, spec: PodSpec) -> None:
        """Back to the run's pods: autoscaling (and the node pool's) off, the tuned size, the configured count."""
        ctx, platform = self.ctx, self.ctx.platform
        assert platform is not None and ctx.spec is not None
        platform.disable_autoscaling()
        # the stage's pods leave before the pool is put back: a resize must not remove nodes they still run on
        # (if the scale-back fails, teardown restores the pool after deleting them)
        try:
            if spec != ctx.spec:
                platform.set_resources(ctx.spec)
            platform.scale(ctx.config.platform.replicas)
        finally:
            if hasattr(platform, "restore_node_autoscaling"):
                platform.restore_node_autoscaling()  # type: ignore[attr-defined]

    def finish(self, why: str | None = None) -> AutoscaleResult:
        result = self._result(why)
        self.ctx.results.autoscale = result
        (self.logger.warning if result.inconclusive else self.logger.info)("%s", autoscale_line(result))
        return result

    def _result(self, why: str | None) -> AutoscaleResult:
        ctx, a, samples, phases = self.ctx, self.ctx.config.autoscale, self.samples, self.phases
        # the step is when the overload's rate was set (its first sample comes a sample period later)
        step_t = (self.phase_t.get(phases[1].name) if len(phases) > 1 else None) or (samples[0].t if samples else 0.0)
        step_down_t = self.phase_t.get(phases[2].name) if len(phases) > 2 else None
        timings = summarize_autoscale(samples, Slo.of(ctx.config.slo), step_t, step_down_t) if samples else None
        return AutoscaleResult(
            timings=timings, phases=phase_rows(phases, samples, self.phase_t), per_pod=one_pod(ctx),
            hpa={"target_cpu_pct": a.target_cpu_pct, "min": a.min_replicas, "max": self.fit.max_replicas,
                 "sync_period_s": a.sync_period_s, "stabilization_s": a.stabilization_s},
            nodes_note=node_pool_note(ctx.config.platform.kind, a.nodes, bool(ctx.config.platform.gke)),
            reconnect_s=ctx.config.load.reconnect_s, samples=samples, connections=self.connections,
            plot=timeline_plot(samples, ctx.out / "autoscale_timeline.png", ctx.config.slo.p95_ms, step_t, step_down_t),
            fit=self.fit, expected=self.expected,
            inconclusive=why or inconclusive_reason(timings, sum(p.duration_s for p in phases), a.min_replicas,
                                                    self.fit.max_replicas, Slo.of(ctx.config.slo)))


def _by_arrival(sample: AutoscaleSample, w: OpenWindow) -> AutoscaleSample:
    """The sample's load figures from its ledger window (the platform's side stays as sampled)."""
    return replace(sample, rps=w.goodput_rps, p50_ms=w.p50_ms, p95_ms=w.p95_ms, error_rate=w.arrival_error_rate,
                   offered_rps=w.offered_rps, planned=w.planned, dropped=w.dropped, failures=w.failures, ok=w.ok,
                   covered_s=w.covered_s, abandoned=w.abandoned, unsettled=w.unsettled)


def _waiting(platform: Any) -> dict[str, int]:
    """Where requests wait at the platform (the local one counts its sockets; others say nothing)."""
    queues = getattr(platform, "queues", None)
    if queues is None:
        return {}
    counts = queues()
    proxy = counts.pop("proxy", {})
    return {"proxy_queue": proxy.get("accept_queue", 0),
            "listen_queue": sum(c["accept_queue"] for c in counts.values()),
            "server_held": sum(c["established"] + c["client_closed"] for c in counts.values()),
            "callers_left": sum(c["client_closed"] for c in counts.values())}


def one_pod(ctx: RunContext) -> PerPod:
    """One pod's saturation point: capacity.per_pod, the run's one figure for its pod."""
    per_pod = ctx.results.per_pod()
    if per_pod is None:
        raise RuntimeError("autoscale needs one pod's confirmed saturation point: run tune, single_client or scaling "
                           "before autoscale (none confirmed a knee on fresh windows)")
    return per_pod
