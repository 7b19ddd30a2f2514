"""Sizing: pods, cores, nodes and cost for the configured users / rps targets, from measured per-pod rates."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.sizing import SizingInputs, per_pod_capacity, size_rows, validate_against_scaling
from nightcap.results.report import sizing_line
from nightcap.results.stages import RampResult, SizingResult
from nightcap.run.context import RunContext


def _latency(ramp: RampResult | None) -> tuple[float | None, float | None, str]:
    """(mean latency s, SLO rate per pod or None, where the latency comes from) from the operating-point check.

    The mean is the open-loop window's at the rate a pod is planned at: the verified operating rate, or the
    rate the back-off found when the SLO missed there. Without a check (load.verify_s 0) the closed-loop p95
    at the operating rate stands in: an upper bound of the mean, so the rows err on the safe side.
    """
    if ramp is None:
        return None, None, ""
    check = ramp.operating_check
    if check is None:
        p95 = ramp.operating_p95_ms
        return (p95 / 1000 if p95 else None, None,
                f"p95 {p95} ms interpolated on the closed-loop {ramp.stage} ramp (not verified open loop: an upper "
                "bound of the mean latency)")
    slo_rate = None if check.met or check.slo_rate_rps is None else check.slo_rate_rps / ramp.replicas
    window = check.sizing_window
    if window is None or window.mean_ms is None:
        return None, slo_rate, ""
    return (window.mean_ms / 1000, slo_rate,
            f"mean latency open loop at {window.rate_rps:.1f} rps on {ramp.replicas} pod(s) ({ramp.stage})")


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
    latency_s, slo_rate, latency_from = _latency(ramp)
    spec = ctx.spec
    cpu = spec.cpu if spec and spec.cpu else 1.0
    result = SizingResult(rows=[], per_pod=per_pod, latency_s=latency_s, headroom=cfg.headroom,
                          node_allocatable_cpu=cfg.node_allocatable_cpu, cpu_per_pod=cpu, latency_from=latency_from)
    check = ramp.operating_check if ramp else None
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
