"""Autoscaling: does the HPA (and the node pool) keep the SLO when load jumps, and how fast?

Phases (default): baseline at the operating point, a step to `autoscale.overload` × one pod's saturation,
hold, step back down, hold; sampled every `autoscale.sample_s`. Load generators re-open connections every
`load.reconnect_s` so new replicas behind the per-connection balancer receive traffic.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from nightcap.analysis.autoscale_load import default_phases, offered_load
from nightcap.analysis.autoscale_metrics import AutoscaleSample, phase_start, summarize_autoscale
from nightcap.analysis.sizing import Capacity, per_pod_capacity
from nightcap.load.runner import StepRunner
from nightcap.platforms.base import HpaSpec
from nightcap.results.plots import timeline_plot
from nightcap.run.context import RunContext


def one_pod_saturation(ctx: RunContext) -> tuple[int, float]:
    """(users, rps) at which one pod of the chosen size saturates."""
    rows = ctx.summary.get("scaling", {}).get("rows") or []
    one = next((r for r in rows if r["replicas"] == 1), None)
    ramp_stage = "multi_client" if _multi_is_headline(ctx.summary) else "single_client"
    ramp = ctx.summary.get(ramp_stage) or {}
    per_pod = per_pod_capacity(
        Capacity(one["saturation_rps"], one["saturation_users"], one.get("slo_users")) if one else None,
        Capacity(ramp.get("saturation", {}).get("rps"), ramp.get("saturation", {}).get("users"),
                 ramp.get("slo_capacity", {}).get("users"), ctx.config.platform.replicas) if ramp else None,
        ramp_stage)
    if per_pod is None:
        raise RuntimeError("autoscale needs one pod's saturation point: run single_client (or scaling) before autoscale")
    return per_pod.users, per_pod.rps


def _multi_is_headline(summary: dict) -> bool:
    from nightcap.results.summary import _pick

    return _pick(summary)[0] == "multi_client"


@flow(name="autoscaling", flow_run_name="autoscale {run_id}")
def autoscale(run_id: str) -> dict:
    """HPA (and node pool) under a load step: how fast pods come, what p95 does meanwhile, when it recovers."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    a = ctx.config.autoscale
    platform = ctx.platform
    assert platform is not None
    base_users, base_rps = one_pod_saturation(ctx)
    phases = a.phases or default_phases(a, ctx.config.search.headroom)
    hpa = HpaSpec(target_cpu_pct=a.target_cpu_pct, min_replicas=a.min_replicas, max_replicas=a.max_replicas,
                  sync_period_s=a.sync_period_s, stabilization_s=a.stabilization_s, tolerance=a.tolerance,
                  readiness_delay_s=a.readiness_delay_s)
    samples: list[AutoscaleSample] = []
    if ctx.config.platform.kind == "local":
        nodes_note = "node-pool autoscaling: not available on the local platform"
    elif a.nodes and ctx.config.platform.gke:
        nodes_note = f"node-pool autoscaling on ({a.nodes.get('min', 1)}-{a.nodes.get('max', 3)} nodes)"
    elif a.nodes:
        nodes_note = "node-pool autoscaling requested but platform.gke is not set: nodes were not changed"
    else:
        nodes_note = "node-pool autoscaling not requested (autoscale.nodes)"
    platform.scale(a.min_replicas)
    gen = ctx.generator_for(ctx.config.load.workers)
    runner = StepRunner(ctx.config, platform, gen, "autoscale", ctx.record_step, ctx.deadline, ctx.spec, ctx.next_step)
    t0 = time.monotonic()
    try:
        if a.nodes and ctx.config.platform.gke and hasattr(platform, "enable_node_autoscaling"):
            platform.enable_node_autoscaling(a.nodes.get("min", 1), a.nodes.get("max", 3))  # type: ignore[attr-defined]
        platform.enable_autoscaling(hpa)
        for phase in phases:
            users, user_rps = offered_load(phase.load, base_users, base_rps, ctx.config.load.max_users)
            runner.set_users(users, user_rps=user_rps)
            logger.info("autoscale: phase %s: %.1f rps offered by %d users (%.2f rps each) for %.0fs", phase.name,
                        users * user_rps, users, user_rps, phase.duration_s)
            end = time.monotonic() + phase.duration_s
            while time.monotonic() < end:
                seconds = min(a.sample_s, max(end - time.monotonic(), 0.5))
                runner.check_budget(seconds)
                w = runner.read_window(seconds)
                st = platform.autoscaling_status()
                obs = platform.observe()
                nodes = sum(obs.nodes.values()) if obs.nodes and ctx.config.platform.kind != "local" else None
                samples.append(AutoscaleSample(
                    t=time.monotonic() - t0, phase=phase.name, users=users, rps=w.rps, p50_ms=w.p50_ms,
                    p95_ms=w.p95_ms, error_rate=w.error_rate, current=st.current_replicas,
                    desired=st.desired_replicas, ready=st.ready_replicas, pending=st.pending, nodes=nodes))
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
    result = summarize_autoscale(samples, ctx.config.slo, step_t or 0.0, step_down_t).to_dict()
    block = {**result, "phases": [p.model_dump() for p in phases], "one_pod_saturation_users": base_users,
             "one_pod_saturation_rps": base_rps,
             "hpa": {"target_cpu_pct": a.target_cpu_pct, "min": a.min_replicas, "max": a.max_replicas,
                     "sync_period_s": a.sync_period_s, "stabilization_s": a.stabilization_s},
             "nodes": nodes_note,
             "load_spreading": (f"each generator user re-opens its connection every {ctx.config.load.reconnect_s:g}s "
                                "(Connection: close), so the per-connection balancer in front of the replicas "
                                "(a Kubernetes Service, or nightcap's local proxy) spreads load onto new pods"),
             "samples": [s.__dict__ for s in samples]}
    ctx.summary["autoscale"] = block
    ctx.summary["autoscale_line"] = (
        f"autoscaling: {result['initial_replicas']}→{result['peak_replicas']} replicas, first scale-up after "
        f"{_s(result['time_to_scale_up_s'])}, pods ready after {_s(result['time_to_ready_s'])}, p95 back under the "
        f"SLO after {_s(result['time_to_recover_slo_s'])}; {result['slo_breach_s']:.0f}s over the SLO; "
        f"peak Pending {result['peak_pending']}; {nodes_note}")
    plot = timeline_plot(samples, ctx.out / "autoscale_timeline.png", ctx.config.slo.p95_ms, step_t or 0.0)
    if plot:
        ctx.summary["lead_plot"] = plot
        ctx.summary.setdefault("plots", []).append(plot)
    logger.info("%s", ctx.summary["autoscale_line"])
    return block


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}s"
