"""Sizing: pods, cores, nodes and cost for the configured users / rps targets, checked against measurements."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.sizing import Capacity, per_pod_capacity, size_rows
from nightcap.run.context import RunContext


def per_pod_figures(ctx: RunContext) -> dict:
    """What one pod of the chosen size does (analysis.sizing.per_pod_capacity), and the latency to size with."""
    s = ctx.summary
    rows = s.get("scaling", {}).get("rows") or []
    one = next((r for r in rows if r["replicas"] == 1), None)
    ramp_stage = "multi_client" if s.get("multi_client") else "single_client"
    ramp = s.get(ramp_stage) or {}
    per_pod = per_pod_capacity(
        Capacity(one["saturation_rps"], one["saturation_users"], one.get("slo_users")) if one else None,
        Capacity(ramp.get("saturation", {}).get("rps"), ramp.get("saturation", {}).get("users"),
                 ramp.get("slo_capacity", {}).get("users"), ctx.config.platform.replicas) if ramp else None,
        ramp_stage)
    p95 = ramp.get("operating_point", {}).get("p95_ms")
    return {"per_pod_rps": per_pod.rps if per_pod else None,
            "per_pod_slo_users": per_pod.slo_users if per_pod else None,
            "latency_s": (p95 / 1000.0) if p95 else None, "latency_from": "p95 at the operating point"}


@flow(name="sizing", flow_run_name="sizing {run_id}")
def sizing(run_id: str) -> dict:
    """pods = ceil(rps × latency / per-pod concurrency / headroom), cross-checked with measured per-pod capacity."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    cfg = ctx.config.sizing
    figures = per_pod_figures(ctx)
    if not (cfg.users or cfg.rps):
        ctx.summary["sizing"] = {"rows": [], "note": "no sizing.users or sizing.rps targets configured"}
        return ctx.summary["sizing"]
    if not figures["latency_s"]:
        raise RuntimeError("sizing needs a measured latency at the operating point: run single_client or "
                           "multi_client before sizing")
    spec = ctx.spec
    rows = size_rows(cfg, latency_s=figures["latency_s"], per_pod_concurrency=spec.concurrency if spec else 1,
                     cpu_per_pod=(spec.cpu if spec and spec.cpu else 1.0), per_pod_rps=figures["per_pod_rps"],
                     per_pod_slo_users=figures["per_pod_slo_users"], think_time_s=cfg.think_time_s)
    table = [r.to_dict() for r in rows]
    ctx.summary["sizing"] = {"rows": table, "inputs": figures, "headroom": cfg.headroom,
                             "node_allocatable_cpu": cfg.node_allocatable_cpu}
    if rows:
        r = rows[0]
        cpu = spec.cpu if spec and spec.cpu else 1.0
        cost = f", ${r.cost_per_hour:.2f}/h" if r.cost_per_hour is not None else ""
        ctx.summary["sizing_line"] = (f"for {r.target} with p95 under {ctx.config.slo.p95_ms:g} ms: {r.cores:g} cores = "
                                      f"{r.pods} pods of {cpu:g} CPU on {r.nodes} node(s){cost} "
                                      f"(binding: {r.binding_constraint})")
        logger.info("sizing: %s", ctx.summary["sizing_line"])
    ctx.summary.setdefault("lead_tables", []).insert(0, ("sizing", table))
    ctx.summary.setdefault("sections", []).insert(0, {
        "title": "Sizing", "text": ctx.summary.get("sizing_line", ""), "rows": table,
        "columns": ["target", "pods", "cores", "nodes", "cost_per_hour", "binding_constraint"]})
    return ctx.summary["sizing"]
