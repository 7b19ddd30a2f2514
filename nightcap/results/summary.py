"""The headline figures of a run, chosen from whichever stages ran (contract: summary.json keys)."""

from __future__ import annotations

from typing import Any

from nightcap.run.context import RunContext


def _pick(summary: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The merged multi-client answer when it ran and was not worse; else the single client's."""
    single, multi = summary.get("single_client"), summary.get("multi_client")
    if multi and multi.get("saturation", {}).get("rps") and (
        not single or not single.get("saturation", {}).get("rps")
        or multi["saturation"]["rps"] >= single["saturation"]["rps"] * 0.95
    ):
        return "multi_client", multi
    if single and single.get("saturation", {}).get("rps"):
        return "single_client", single
    tuning = summary.get("tuning", {}).get("best_result")
    if tuning:
        return "tune", tuning
    return None, {}


def summarize_run(ctx: RunContext) -> None:
    s = ctx.summary
    stage, block = _pick(s)
    sat = dict(block.get("saturation", {"rps": None, "users": None}))
    sat["stage"] = stage
    s["saturation"] = sat
    s["operating_point"] = dict(block.get("operating_point", {"rps": None, "users": None,
                                                              "headroom": ctx.config.search.headroom}))
    slo = dict(block.get("slo_capacity", {"users": None, "rps": None}))
    slo.update(p95_ms=ctx.config.slo.p95_ms, max_error_rate=ctx.config.slo.max_error_rate)
    slo.setdefault("by_cores", s.get("slo_capacity", {}).get("by_cores", []))
    s["slo_capacity"] = slo
    spec = ctx.spec
    platform = ctx.platform
    replicas = ctx.config.platform.replicas
    s["platform"] = {
        "kind": ctx.config.platform.kind,
        "replicas": replicas,
        "cpu": spec.cpu if spec else ctx.config.platform.cpu,
        "memory": spec.memory if spec else ctx.config.platform.memory,
        "concurrency": spec.concurrency if spec else ctx.config.platform.concurrency,
        "limits_enforced": bool(getattr(platform, "limits_enforced", False)),
        "limits_note": getattr(platform, "limits_note", "not deployed"),
        "cpu_pinning": getattr(platform, "cpu_pinning", None) or {
            "method": "none", "mode": "off",
            "note": "only the local platform pins CPUs" if platform is not None else "not deployed"},
    }
    cores = replicas * (s["platform"]["cpu"] or 1.0)
    s["rps_per_core"] = sat["rps"] / cores if sat.get("rps") else None


def headline_figures(ctx: RunContext) -> dict[str, Any]:
    s = ctx.summary
    return {
        "saturation_rps": s.get("saturation", {}).get("rps"),
        "saturation_users": s.get("saturation", {}).get("users"),
        "operating_rps": s.get("operating_point", {}).get("rps"),
        "rps_per_core": s.get("rps_per_core"),
        "p95_at_operating_ms": s.get("operating_point", {}).get("p95_ms"),
        "slo_users": s.get("slo_capacity", {}).get("users"),
        "slo_rps": s.get("slo_capacity", {}).get("rps"),
    }
