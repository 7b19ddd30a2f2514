"""Autoscaling: does the HPA (and the node pool) keep the SLO when load jumps, and how fast?

Phases (default): baseline at the operating point, a step to `autoscale.overload` × one pod's saturation,
hold, step back down, hold; sampled every `autoscale.sample_s`. Load generators re-open connections every
`load.reconnect_s` so new replicas behind the per-connection balancer receive traffic.
"""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from prefect import flow, get_run_logger  # noqa: E402

from nightcap.analysis.autoscale_metrics import AutoscaleSample, phase_start, summarize_autoscale  # noqa: E402
from nightcap.config import AutoscalePhase  # noqa: E402
from nightcap.run.context import RunContext  # noqa: E402
from nightcap.load.base import target_url  # noqa: E402
from nightcap.load.driver import summarize  # noqa: E402
from nightcap.load.runner import BudgetExceeded  # noqa: E402
from nightcap.platforms.base import HpaSpec  # noqa: E402


def one_pod_saturation(ctx: RunContext) -> tuple[int, float]:
    """(users, rps) at which one pod of the chosen size saturates."""
    rows = ctx.summary.get("scaling", {}).get("rows") or []
    one = next((r for r in rows if r["replicas"] == 1 and r.get("saturation_users")), None)
    if one:
        return int(one["saturation_users"]), float(one["saturation_rps"])
    ramp = ctx.summary.get("single_client") or ctx.summary.get("multi_client") or {}
    sat = ramp.get("saturation", {})
    if sat.get("users") and sat.get("rps"):
        n = ctx.config.platform.replicas
        return max(1, round(sat["users"] / n)), sat["rps"] / n
    raise RuntimeError("autoscale needs one pod's saturation point: run single_client (or scaling) before autoscale")


def offered_load(load: float, sat_users: int, sat_rps: float, max_users: int) -> tuple[int, float]:
    """Users and per-user pacing that offer `load` × one pod's saturation rate.

    Enough users (3× the in-flight the rate needs) that latency growth under overload does not cap the
    offered rate, each paced so the total stays at the target rate while the service keeps up.
    """
    rate = load * sat_rps
    users = min(max(8, int(3 * load * sat_users + 0.999)), max_users)
    return users, rate / users


def default_phases(ctx: RunContext) -> list[AutoscalePhase]:
    a = ctx.config.autoscale
    hold_up = max(8 * a.sync_period_s, a.readiness_delay_s + 4 * a.sync_period_s)
    hold_down = a.stabilization_s + 4 * a.sync_period_s
    return [AutoscalePhase(name="baseline", load=ctx.config.search.headroom, duration_s=3 * a.sync_period_s),
            AutoscalePhase(name="overload", load=a.overload, duration_s=hold_up),
            AutoscalePhase(name="recovery", load=ctx.config.search.headroom, duration_s=hold_down)]


def timeline_plot(samples: list[AutoscaleSample], path, slo_ms: float, step_t: float) -> str | None:
    if not samples:
        return None
    t = [s.t - step_t for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.step(t, [s.current for s in samples], where="post", label="replicas")
    ax1.step(t, [s.desired for s in samples], where="post", linestyle="--", label="desired")
    ax1.step(t, [s.ready for s in samples], where="post", linestyle=":", label="ready")
    ax1.step(t, [s.pending for s in samples], where="post", color="red", label="pending")
    if any(s.nodes for s in samples):
        ax1.step(t, [s.nodes or 0 for s in samples], where="post", color="black", label="nodes")
    ax1b = ax1.twinx()
    ax1b.plot(t, [s.rps for s in samples], color="grey", alpha=0.6, label="rps served")
    ax1b.set_ylabel("rps served (grey)")
    ax1b.set_ylim(bottom=0)
    ax1.set_ylabel("replicas")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.plot(t, [s.p95_ms or float("nan") for s in samples], "o-", color="tab:red", markersize=3, label="p95 ms")
    ax2.axhline(slo_ms, color="tab:red", linestyle=":", label=f"SLO {slo_ms:g} ms")
    ax2.set_yscale("log")
    ax2.set_ylabel("p95 ms")
    ax2.set_xlabel("seconds after the load step")
    ax2.legend(loc="upper left", fontsize=8)
    ax1.set_title("Autoscaling timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


@flow(name="autoscaling", flow_run_name="autoscale {run_id}")
def autoscale(run_id: str) -> dict:
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    a = ctx.config.autoscale
    platform = ctx.platform
    assert platform is not None
    base_users, base_rps = one_pod_saturation(ctx)
    phases = a.phases or default_phases(ctx)
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
    t0 = time.monotonic()
    try:
        if a.nodes and ctx.config.platform.gke and hasattr(platform, "enable_node_autoscaling"):
            platform.enable_node_autoscaling(a.nodes.get("min", 1), a.nodes.get("max", 3))  # type: ignore[attr-defined]
        platform.enable_autoscaling(hpa)
        client = gen.client
        host = target_url(gen, platform)
        for phase in phases:
            users, user_rps = offered_load(phase.load, base_users, base_rps, ctx.config.load.max_users)
            client.swarm(users, ctx.config.load.spawn_rate, host, user_rps=user_rps)
            logger.info("autoscale: phase %s: %.1f rps offered by %d users (%.2f rps each) for %.0fs", phase.name,
                        users * user_rps, users, user_rps, phase.duration_s)
            end = time.monotonic() + phase.duration_s
            while time.monotonic() < end:
                if ctx.deadline and time.monotonic() > ctx.deadline:
                    raise BudgetExceeded("autoscale reached load.max_duration_s")
                client.reset()
                time.sleep(min(a.sample_s, max(end - time.monotonic(), 0.5)))
                w = summarize(client.window())
                st = platform.autoscaling_status()
                obs = platform.observe()
                nodes = sum(obs.nodes.values()) if obs.nodes and ctx.config.platform.kind != "local" else None
                samples.append(AutoscaleSample(
                    t=time.monotonic() - t0, phase=phase.name, users=users, rps=w.goodput_rps, p50_ms=w.p50_ms,
                    p95_ms=w.p95_ms, error_rate=(w.failures / w.requests) if w.requests else (1.0 if w.failures else 0.0),
                    current=st.current_replicas, desired=st.desired_replicas, ready=st.ready_replicas,
                    pending=st.pending, nodes=nodes))
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
