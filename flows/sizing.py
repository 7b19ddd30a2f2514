"""Sizing: pods, cores, nodes and cost for the configured users / rps targets, from measured per-pod rates."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.operating_point import sizing_latency
from nightcap.analysis.sizing import SizingInputs, size_rows, validate_against_scaling
from nightcap.results.report import sizing_line
from nightcap.results.stages import SizingResult
from nightcap.run.context import StageRun


@flow(name="sizing", flow_run_name="sizing {run.run_id}")
def sizing(run: StageRun) -> SizingResult:
    """pods = ceil(target rps / per-pod rate), the per-pod rate being the one verified open loop under the SLO
    (never above headroom x capacity.per_pod); Little's law (in flight = rate x mean latency) binds only beyond
    what a pod held under the SLO; nodes = pods packed onto the node type's allocatable CPU and memory.

    One pod's saturation: capacity.per_pod; the rate and the mean latency: the run's open-loop operating-point
    check (at headroom x that figure, or the rate it backed off to)."""
    ctx = run.context
    logger = get_run_logger()
    cfg = ctx.config.sizing
    r = ctx.results
    per_pod = r.per_pod()
    fig = r.figure()
    check = r.operating
    replicas = fig.key.replicas if fig else ctx.config.platform.replicas
    ramp = r.slo_search()
    latency = sizing_latency(check, replicas, r.operating_stage or "ramp",
                             ramp.operating_p95_ms if ramp else None) if fig else None
    latency_s, slo_rate = (latency.mean_latency_s, latency.slo_rate_per_pod_rps) if latency else (None, None)
    latency_from = latency.source if latency else ""
    spec = ctx.spec
    cpu = spec.cpu if spec and spec.cpu else 1.0
    node = cfg.node_type
    result = SizingResult(rows=[], per_pod=per_pod, latency_s=latency_s, headroom=cfg.headroom,
                          node_allocatable_cpu=node.allocatable_cpu, cpu_per_pod=cpu, latency_from=latency_from)
    if not (cfg.users or cfg.rps):
        result.note = "no sizing.users or sizing.rps targets configured"
    elif check is not None and not check.met and check.slo_rate_rps is None:
        result.note = (f"no rate met the SLO open loop (down to {check.slo_rate_interval_rps[1]:.1f} rps on "
                       f"{replicas} pod(s)): nothing to size from")
    elif not latency_s or per_pod is None:
        raise RuntimeError("sizing needs a confirmed saturation point (capacity.per_pod) and the latency at the "
                           "operating point: run tune, single_client or multi_client before sizing")
    else:
        result.pod = SizingInputs(saturation_rps=per_pod.rps, headroom=cfg.headroom, mean_latency_s=latency_s,
                                  slo_rate_rps=slo_rate, in_flight_held=per_pod.slo_users or None,
                                  verified_rate_rps=per_pod.slo_rate_rps)
        result.rows = size_rows(cfg, result.pod, cpu_per_pod=cpu, memory_per_pod=spec.memory if spec else None)
        if r.scaling:
            result.validation = validate_against_scaling(
                result.pod, {row.replicas: row.saturation_rps for row in r.scaling.rows},
                {row.replicas: (row.paired_one_pod_rps, row.efficiency, row.efficiency_ci)
                 for row in r.scaling.rows if row.pairs})
        logger.info("sizing: %s", sizing_line(result, ctx.config.slo.p95_ms))
    ctx.results.sizing = result
    return result
