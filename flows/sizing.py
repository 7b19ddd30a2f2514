"""Sizing: pods, cores, nodes and cost for the configured users / rps targets, checked against measurements."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.sizing import per_pod_capacity, size_rows
from nightcap.results.report import sizing_line
from nightcap.results.stages import SizingResult
from nightcap.run.context import RunContext


@flow(name="sizing", flow_run_name="sizing {run_id}")
def sizing(run_id: str) -> SizingResult:
    """pods = ceil(rps × latency / per-pod concurrency / headroom), cross-checked with measured per-pod capacity.

    One pod's capacity: scaling at one pod, else the headline ramp divided by its pods; the latency is the
    headline ramp's p95 at the operating point."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    cfg = ctx.config.sizing
    r = ctx.results
    ramp = r.headline_ramp()
    per_pod = per_pod_capacity(r.scaling.one_pod if r.scaling else None, ramp.capacity if ramp else None,
                               ramp.stage if ramp else "ramp")
    p95 = ramp.operating_p95_ms if ramp else None
    spec = ctx.spec
    cpu = spec.cpu if spec and spec.cpu else 1.0
    result = SizingResult(rows=[], per_pod=per_pod, latency_s=p95 / 1000.0 if p95 else None, headroom=cfg.headroom,
                          node_allocatable_cpu=cfg.node_allocatable_cpu, cpu_per_pod=cpu)
    if not (cfg.users or cfg.rps):
        result.note = "no sizing.users or sizing.rps targets configured"
    elif not result.latency_s:
        raise RuntimeError("sizing needs a measured latency at the operating point: run single_client or "
                           "multi_client before sizing")
    else:
        result.rows = size_rows(cfg, latency_s=result.latency_s, per_pod_concurrency=spec.concurrency if spec else 1,
                                cpu_per_pod=cpu, per_pod_rps=per_pod.rps if per_pod else None,
                                per_pod_slo_users=per_pod.slo_users if per_pod else None,
                                think_time_s=cfg.think_time_s)
        logger.info("sizing: %s", sizing_line(result, ctx.config.slo.p95_ms))
    ctx.results.sizing = result
    return result
