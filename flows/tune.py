"""Fine-tune with a low pod count: the smallest CPU, memory and concurrency with the best rps per core.

The planner settles memory first, then climbs concurrency per CPU value while throughput grows, so it
measures far fewer candidates than the grid. Every later stage uses the chosen pod size.
"""

from __future__ import annotations

import statistics

from prefect import flow, get_run_logger

from nightcap.analysis.tuning import Candidate, CandidateResult, TunePlanner, choose, evaluate
from nightcap.platforms.base import PlatformError, PodSpec
from nightcap.quantities import format_memory
from nightcap.results.plots import heatmap
from nightcap.run.context import RunContext
from nightcap.search import SearchAborted
from tasks.measure import run_search, search_params


def measure_candidate(ctx: RunContext, c: Candidate) -> CandidateResult:
    """Apply the candidate on `tune.replicas` pods, run a cheap saturation search, read how the pods fared."""
    assert ctx.platform is not None
    logger = get_run_logger()
    replicas = ctx.config.tune.replicas
    ctx.spec = PodSpec(cpu=c.cpu, memory=c.memory, concurrency=c.concurrency)
    first_step = len(ctx.steps)
    try:
        ctx.platform.set_resources(ctx.spec)
        if ctx.platform.replicas != replicas:
            ctx.platform.scale(replicas)
        result = run_search(ctx, "tune", 1, search_params(ctx, cheap=True))
    except (PlatformError, SearchAborted) as exc:
        # an OOM crash loop or a server that never gets ready is a measured answer for this candidate
        obs = ctx.platform.observe()
        logger.warning("candidate %s failed: %s", c.label(), exc)
        return evaluate(c, replicas=replicas, saturation_rps=0.0, p95_ms=None, cpu_use_pct=None,
                        memory_peak_pct=None, oom_kills=max(obs.oom_kills, 1 if "OOM" in str(exc) else 0),
                        restarts=obs.restarts, meets_slo=False)
    steps = [s for s in ctx.steps[first_step:] if s.stage == "tune"]
    at_sat = [s for s in steps if s.users == result.saturation_users and s.valid] or steps
    cpu_use = [statistics.fmean(s.replica_cpu_pct) for s in at_sat if s.replica_cpu_pct]
    mem_peak = max((max(s.replica_memory_mb) for s in steps if s.replica_memory_mb), default=None)
    level = result.level(result.operating_users or 0)
    below = [lv for lv in result.levels if lv.good and lv.users <= (result.operating_users or 0)]
    p95 = level.p95_ms if level else (below[-1].p95_ms if below else None)
    return evaluate(
        c, replicas=replicas, saturation_rps=result.saturation_rps or 0.0, p95_ms=p95,
        cpu_use_pct=max(cpu_use) if cpu_use else None,
        memory_peak_pct=100.0 * mem_peak * 2**20 / c.memory if mem_peak and c.memory else None,
        oom_kills=sum(s.oom_kills for s in steps), restarts=sum(s.restarts for s in steps),
        meets_slo=result.saturation_rps is not None,
    )


@flow(name="fine-tune", flow_run_name="tune {run_id}")
def tune(run_id: str) -> dict:
    """Measure pod sizes on `tune.replicas` pods (the planner picks which) and keep the best rps per core."""
    ctx = RunContext.get(run_id)
    logger = get_run_logger()
    planner = TunePlanner.from_config(ctx.config.tune)
    results: list[CandidateResult] = []
    while (candidate := planner.next_candidate(results)) is not None:
        logger.info("tune: measuring %s (%d of at most %d)", candidate.label(), planner.measured, planner.grid_size)
        result = measure_candidate(ctx, candidate)
        logger.info("tune: %s -> %.1f rps, %.1f rps/core, %s", candidate.label(), result.saturation_rps,
                    result.rps_per_core, result.verdict)
        results.append(result)
    choice = choose(results)
    block = {
        "candidates": [r.to_dict() for r in results],
        "candidates_measured": planner.measured,
        "grid_size": planner.grid_size,
        "replicas": ctx.config.tune.replicas,
        "planner_notes": list(planner.notes),
        "reason": choice.reason,
        "limits_enforced": bool(ctx.platform and ctx.platform.limits_enforced),
        "best": None,
    }
    if choice.result is not None:
        best = choice.result
        block["best"] = {"cpu": best.candidate.cpu, "memory": best.candidate.memory,
                         "memory_label": format_memory(best.candidate.memory),
                         "concurrency": best.candidate.concurrency, "rps_per_core": best.rps_per_core,
                         "saturation_rps": best.saturation_rps}
        ctx.spec = PodSpec(cpu=best.candidate.cpu, memory=best.candidate.memory, concurrency=best.candidate.concurrency)
    else:
        ctx.spec = PodSpec(cpu=ctx.config.platform.cpu, memory=ctx.config.platform.memory,
                           concurrency=ctx.config.platform.concurrency or ctx.plan.default_concurrency)
    assert ctx.platform is not None
    ctx.platform.set_resources(ctx.spec)
    ctx.platform.scale(ctx.config.platform.replicas)
    ctx.summary["tuning"] = block
    note = "" if block["limits_enforced"] else " (limits NOT enforced on this machine: usage measured, not capped)"
    ctx.summary["tuning_line"] = (f"tuning chose {choice.reason} — {planner.measured} of {planner.grid_size} "
                                  f"grid candidates measured{note}")
    plot = heatmap(results, ctx.out / "tuning_heatmap.png", planner.memory if hasattr(planner, "memory") else None)
    if plot:
        ctx.summary.setdefault("plots", []).append(plot)
    ctx.summary.setdefault("lead_tables", []).append(("tuning-candidates", block["candidates"]))
    ctx.summary.setdefault("sections", []).append({
        "title": "Fine-tuning (pod size)", "text": ctx.summary["tuning_line"],
        "rows": block["candidates"],
        "columns": ["cpu", "memory_label", "concurrency", "saturation_rps", "rps_per_core", "p95_ms", "cpu_use_pct",
                    "memory_peak_pct", "oom_kills", "meets_slo", "verdict"],
    })
    if choice.result is None:
        raise RuntimeError(choice.reason)
    return block
