"""Manual scaling: saturation at 1, 2, … pods of the tuned size; efficiency, SLO capacity per core count, USL."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nightcap.analysis.saturation import steps_frame
from nightcap.analysis.sizing import max_replicas, slo_capacity_by_cores
from nightcap.analysis.usl import UslFit, fit_usl_steps, predict
from nightcap.results.plots import usl_plot
from nightcap.run.context import RunContext
from tasks.measure import run_search, search_params


@flow(name="manual-scaling", flow_run_name="scaling {run_id}")
def scaling(run_id: str) -> dict:
    """Saturation at 1, 2, ... pods of the tuned size: per-pod throughput, efficiency, USL fit, SLO users by cores."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    assert ctx.platform is not None
    top = max_replicas(ctx.config.scaling.max_replicas, ctx.spec.cpu if ctx.spec else None,
                       getattr(ctx.platform, "allocatable_cpu", None))
    if top < ctx.config.scaling.max_replicas:
        ctx.warn(f"scaling stopped at {top} replica(s): {getattr(ctx.platform, 'allocatable_cpu', '?')} allocatable "
                 f"cores / {ctx.spec.cpu if ctx.spec else '?'} CPU per pod (scaling.max_replicas is "
                 f"{ctx.config.scaling.max_replicas})")
    rows: list[dict] = []
    try:
        for n in range(1, top + 1):
            ctx.platform.scale(n)
            result = run_search(ctx, "scaling", ctx.config.load.workers, search_params(ctx, max_windows=1))
            sat = result.saturation_rps or 0.0
            base = rows[0]["saturation_rps"] if rows else sat
            rows.append({"replicas": n, "saturation_rps": sat, "saturation_users": result.saturation_users,
                         "rps_per_pod": sat / n, "efficiency": sat / (n * base) if base else None,
                         "slo_users": result.slo_users, "stop_reason": result.stop_reason})
            logger.info("scaling: %d replica(s) -> %.1f rps (%.0f%% efficiency)", n, sat,
                        100 * (rows[-1]["efficiency"] or 0))
    finally:
        ctx.platform.scale(ctx.config.platform.replicas)
    frame = steps_frame(ctx.stage_steps("scaling"))
    fit = fit_usl_steps(frame, by="replicas")
    one_pod = frame[frame["replicas"] == 1] if not frame.empty else frame
    fit_users = fit_usl_steps(one_pod, by="users")
    by_cores = slo_capacity_by_cores(frame, ctx.config.slo)
    block = {
        "rows": rows,
        "usl": _usl_block(fit, max(r["replicas"] for r in rows) if rows else 0),
        "usl_users_one_pod": _usl_block(fit_users, int(one_pod["users"].max()) if len(one_pod) else 0),
    }
    ctx.summary["scaling"] = block
    ctx.summary.setdefault("slo_capacity", {})["by_cores"] = by_cores.to_dict(orient="records")
    plot = usl_plot(fit, rows, ctx.out / "scaling_usl.png")
    if plot:
        ctx.summary.setdefault("plots", []).append(plot)
    text = ", ".join(f"{r['replicas']} pod(s) {r['saturation_rps']:.0f} rps ({100 * (r['efficiency'] or 0):.0f}%)"
                     for r in rows)
    usl = block["usl"]
    if fit.ok:
        text += (f". USL fit: σ={fit.sigma:.3f}, κ={fit.kappa:.4f}, r²={fit.r2:.3f}; "
                 + (f"peak at {fit.predicted_peak_n:.1f} pods, retrograde from {fit.retrograde_from_n}"
                    if fit.predicted_peak_n else "no retrograde scaling predicted"))
    else:
        text += f". USL over replicas: {fit.reason}"
    if fit_users.ok:
        text += (f". USL over users on one pod: σ={fit_users.sigma:.3f}, κ={fit_users.kappa:.4f}, r²={fit_users.r2:.3f}"
                 + (f", throughput peaks at {fit_users.predicted_peak_n:.1f} users and falls from "
                    f"{fit_users.retrograde_from_n}" if fit_users.predicted_peak_n else ", no retrograde predicted"))
    ctx.summary.setdefault("sections", []).append({"title": "Scaling (throughput per pod)", "text": text, "rows": rows,
                                                   "columns": ["replicas", "saturation_rps", "rps_per_pod",
                                                               "efficiency", "slo_users"]})
    ctx.summary.setdefault("sections", []).append({"title": "Capacity under the SLO by core count",
                                                   "rows": block_rows(by_cores)})
    return {**block, "usl_summary": usl}


def block_rows(frame) -> list[dict]:
    return frame.to_dict(orient="records") if len(frame) else []


def _usl_block(fit: UslFit, measured_to: int) -> dict:
    out = fit.to_dict()
    out["predicted_peak_replicas"] = fit.predicted_peak_n
    if fit.ok and measured_to:
        out["extrapolation"] = [{"n": n, "rps": v, "low": lo, "high": hi}
                                for n in (measured_to * 2, measured_to * 4)
                                for v, lo, hi in [predict(fit, n)]]
    return out
