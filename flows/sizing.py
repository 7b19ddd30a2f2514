"""Sizing: pods, cores, nodes and cost for the configured users / rps targets, from measured per-pod rates."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.operating_point import sizing_latency
from nightcap.analysis.sizing import SizingInputs, per_pod_capacity, size_rows, validate_against_scaling
from nightcap.results.report import sizing_line
from nightcap.results.stages import SizingResult
from nightcap.run.context import RunContext


@flow(name="sizing", flow_run_name="sizing {run_id}")
def sizing(run_id: str) -> SizingResult:
    """pods = ceil(target rps / per-pod rate), the per-pod rate being min(headroom x saturation, the SLO rate);
    Little's law (in flight = rate x mean latency) binds only beyond what a pod held under the SLO.

    One pod's saturation: scaling at one pod, else the headline ramp divided by its pods; the mean latency and
    the SLO rate: the headline ramp's open-loop operating-point check."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    cfg = ctx.config.sizing
    r = ctx.results
    ramp = r.headline_ramp()
    per_pod = per_pod_capacity(r.scaling.one_pod if r.scaling else None, ramp.capacity if ramp else None,
                               ramp.stage if ramp else "ramp")
    check = ramp.operating_check if ramp else None
    latency = sizing_latency(check, ramp.replicas, ramp.stage, ramp.operating_p95_ms) if ramp else None
    latency_s, slo_rate = (latency.mean_latency_s, latency.slo_rate_per_pod_rps) if latency else (None, None)
    latency_from = latency.source if latency else ""
    spec = ctx.spec
    cpu = spec.cpu if spec and spec.cpu else 1.0
    result = SizingResult(rows=[], per_pod=per_pod, latency_s=latency_s, headroom=cfg.headroom,
                          node_allocatable_cpu=cfg.node_allocatable_cpu, cpu_per_pod=cpu, latency_from=latency_from)
    if not (cfg.users or cfg.rps):
        result.note = "no sizing.users or sizing.rps targets configured"
    elif check is not None and not check.met and check.slo_rate_rps is None:
        result.note = (f"no rate met the SLO open loop (down to {check.slo_rate_interval_rps[1]:.1f} rps on "
                       f"{ramp.replicas if ramp else 1} pod(s)): nothing to size from")
    elif not latency_s or per_pod is None:
        raise RuntimeError("sizing needs a measured saturation and latency at the operating point: run "
                           "single_client or multi_client before sizing")
    else:
        result.pod = SizingInputs(saturation_rps=per_pod.rps, headroom=cfg.headroom, mean_latency_s=latency_s,
                                  slo_rate_rps=slo_rate, in_flight_held=per_pod.slo_users or None)
        result.rows = size_rows(cfg, result.pod, cpu_per_pod=cpu)
        if r.scaling:
            result.validation = validate_against_scaling(result.pod, {row.replicas: row.saturation_rps
                                                                      for row in r.scaling.rows})
        logger.info("sizing: %s", sizing_line(result, ctx.config.slo.p95_ms))
    ctx.results.sizing = result
    return result
