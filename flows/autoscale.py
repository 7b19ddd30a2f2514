"""Autoscaling: does the HPA (and the node pool) keep the SLO when load jumps, and how fast?

Phases (default): baseline at the operating point, a step to `autoscale.overload` × one pod's saturation,
hold, step back down, hold; sampled every `autoscale.sample_s`. Each phase offers its rate open loop: arrivals
keep their schedule whether or not the pods keep up, so the overload really is 3× one pod's rate, and what the
pods could not take shows as dropped arrivals and errors, not as a generator that politely slowed down.
Each arrival opens its own connection (`autoscale.connections`), so the per-connection balancer in front of
the pods (a Service, the local proxy) spreads arrivals over the ready pods whatever each already holds.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from nightcap.analysis.autoscale_load import default_phases, node_pool_note, phase_rows
from nightcap.analysis.autoscale_metrics import AutoscaleSample, phase_start, summarize_autoscale
from nightcap.analysis.sizing import PerPod
from nightcap.load.base import tunnelled
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import HpaSpec
from nightcap.results.plots import timeline_plot
from nightcap.results.report import autoscale_line
from nightcap.results.stages import AutoscaleResult
from nightcap.run.context import RunContext


@flow(name="autoscaling", flow_run_name="autoscale {run_id}")
def autoscale(run_id: str) -> AutoscaleResult:
    """HPA (and node pool) under a load step: how fast pods come, what p95 does meanwhile, when it recovers."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    a = ctx.config.autoscale
    platform = ctx.platform
    assert platform is not None
    per_pod = one_pod(ctx)
    phases = a.phases or default_phases(a, ctx.config.search.headroom)
    hpa = HpaSpec(target_cpu_pct=a.target_cpu_pct, min_replicas=a.min_replicas, max_replicas=a.max_replicas,
                  sync_period_s=a.sync_period_s, stabilization_s=a.stabilization_s, tolerance=a.tolerance,
                  readiness_delay_s=a.readiness_delay_s)
    samples: list[AutoscaleSample] = []
    nodes_note = node_pool_note(ctx.config.platform.kind, a.nodes, bool(ctx.config.platform.gke))
    platform.scale(a.min_replicas)
    gen = ctx.generator_for(ctx.config.load.workers)
    runner = StepRunner(ctx.config, platform, gen, "autoscale", ctx.record_step, ctx.deadline, ctx.spec, ctx.next_step)
    connections = a.connections
    if connections == "per-request" and tunnelled(gen, platform):
        connections = "keep-alive"
        logger.warning("autoscale: the generator reaches the pods through a port-forward, where each new connection "
                       "is an API-server tunnel: connections are kept alive (re-opened every load.reconnect_s), so "
                       "a backlogged pod keeps more than its share; load.generator: cluster spreads arrivals evenly")
    t0 = time.monotonic()
    try:
        if a.nodes and ctx.config.platform.gke and hasattr(platform, "enable_node_autoscaling"):
            platform.enable_node_autoscaling(a.nodes.get("min", 1), a.nodes.get("max", 3))  # type: ignore[attr-defined]
        if phases[0].load > 0:  # the first phase's arrivals flowing before it is sampled (or the HPA acts)
            runner.set_rate(phases[0].load * per_pod.rps, connection=connections)
            time.sleep(ctx.config.load.warmup_s)
        platform.enable_autoscaling(hpa)
        for phase in phases:
            rate = phase.load * per_pod.rps
            if rate > 0:
                runner.set_rate(rate, connection=connections)
            else:
                runner.stop_load()  # an idle phase: watch the scale-down with nothing offered
            logger.info("autoscale: phase %s: %.1f rps offered open loop (%.2f x one pod's %.1f rps) for %.0fs",
                        phase.name, rate, phase.load, per_pod.rps, phase.duration_s)
            end = time.monotonic() + phase.duration_s
            while time.monotonic() < end:
                seconds = min(a.sample_s, max(end - time.monotonic(), 0.5))
                runner.check_budget(seconds)
                w = runner.read_open_window(seconds, rate)
                st = platform.autoscaling_status()
                obs = platform.observe()
                nodes = sum(obs.nodes.values()) if obs.nodes and ctx.config.platform.kind != "local" else None
                samples.append(AutoscaleSample(
                    t=time.monotonic() - t0, phase=phase.name, rps=w.goodput_rps, p50_ms=w.p50_ms,
                    p95_ms=w.p95_ms, error_rate=w.arrival_error_rate, current=st.current_replicas,
                    desired=st.desired_replicas, ready=st.ready_replicas, pending=st.pending, nodes=nodes,
                    offered_rps=w.offered_rps, planned=w.planned, dropped=w.dropped, failures=w.failures))
                for event in obs.events:
                    logger.info("autoscale event: %s", event)
    except BaseException:
        ctx.release_generator()
        raise
    finally:
        try:
            ctx.idle_generator()
        finally:
            platform.disable_autoscaling()
            if hasattr(platform, "restore_node_autoscaling"):
                platform.restore_node_autoscaling()  # type: ignore[attr-defined]
            platform.scale(ctx.config.platform.replicas)
    step_t = phase_start(samples, phases[1].name) if len(phases) > 1 else samples[0].t
    step_down_t = phase_start(samples, phases[2].name) if len(phases) > 2 else None
    result = AutoscaleResult(
        timings=summarize_autoscale(samples, ctx.config.slo, step_t or 0.0, step_down_t),
        phases=phase_rows(phases, samples),
        per_pod=per_pod,
        hpa={"target_cpu_pct": a.target_cpu_pct, "min": a.min_replicas, "max": a.max_replicas,
             "sync_period_s": a.sync_period_s, "stabilization_s": a.stabilization_s},
        nodes_note=nodes_note, reconnect_s=ctx.config.load.reconnect_s, samples=samples, connections=connections,
        plot=timeline_plot(samples, ctx.out / "autoscale_timeline.png", ctx.config.slo.p95_ms, step_t or 0.0))
    ctx.results.autoscale = result
    logger.info("%s", autoscale_line(result))
    return result


def one_pod(ctx: RunContext) -> PerPod:
    """One pod's saturation point: capacity.per_pod, the run's one figure for its pod."""
    per_pod = ctx.results.per_pod()
    if per_pod is None:
        raise RuntimeError("autoscale needs one pod's confirmed saturation point: run tune, single_client or scaling "
                           "before autoscale (none confirmed a knee on fresh windows)")
    return per_pod
