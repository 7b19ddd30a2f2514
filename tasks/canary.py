"""The platform canary, measured before the model: a fixed CPU-bound workload on the model's platform and pod size.

One pod of the canary (`nightcap.targets.canary`) is deployed on its own platform object (its own run id, so its
teardown deletes only the canary), measured for `canary.windows` windows of `canary.users` users with the run's
load generator, and torn down before the model is deployed. The generator is kept for the model's stages
(locally its processes are re-pinned with the rest of the run); on Kubernetes it is released with the canary
(its pods were created beside the canary's), and the first stage starts it again.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightcap.analysis.canary import canary_figure
from nightcap.platforms.base import PodSpec
from nightcap.run.platform import make_platform
from nightcap.results.stages import CanaryResult
from nightcap.run.context import RunContext
from nightcap.targets.canary import canary_config, canary_settings, canary_wanted
from nightcap.targets.plan import plan_target

STAGE = "canary"


@task(name="platform-canary", cache_policy=NO_CACHE, persist_result=False)
def measure_canary(ctx: RunContext) -> CanaryResult:
    """Deploy the canary, measure it, tear it down; a canary that fails is reported, never fails the run."""
    import time

    logger = get_run_logger()
    settings = canary_settings(ctx.config)
    wanted, why = canary_wanted(ctx.config)
    if wanted and ctx.plan.command is None:
        wanted, why = False, "the model runs elsewhere (target.kind url): no platform of ours to measure"
    if not wanted:
        return CanaryResult(settings, note=f"not measured: {why}")
    c = ctx.config.canary
    cfg = canary_config(ctx.config)
    spec = PodSpec(cpu=c.cpu, memory=c.memory, concurrency=c.slots)
    started = time.monotonic()
    platform = make_platform(cfg, plan_target(cfg), f"{ctx.run_id}-canary", ctx.out / "canary", ctx.registry)
    rows = []
    try:
        platform.deploy(spec, 1)
        with ctx.measuring(STAGE, 1, platform=platform, spec=spec) as runner:
            attempts = 0
            while len([r for r in rows if r.valid]) < c.windows and attempts < 2 * c.windows:
                attempts += 1
                rows.append(runner.measure(c.users))
    except Exception as exc:  # the canary informs the verdict; it must not cost the model's measurement
        logger.warning("platform canary not measured: %s", exc)
        return CanaryResult(settings, note=f"not measured: {exc}", duration_s=round(time.monotonic() - started, 1))
    finally:
        try:
            platform.teardown()
        finally:
            if ctx.config.platform.kind == "kubernetes":
                ctx.release_generator()
    figure = canary_figure(rows, float(c.cpu))
    result = CanaryResult(settings, figure, round(time.monotonic() - started, 1),
                          "" if figure else "no valid canary window",
                          [{"rps": r.rps, "rps_halfwidth": r.rps_halfwidth, "p95_ms": r.p95_ms,
                            "error_rate": r.error_rate, "valid": r.valid} for r in rows])
    if figure:
        logger.info("platform canary: %.1f rps per core (%s) over %d window(s), %.1f s", figure.rps_per_core,
                    figure.ci, figure.windows, result.duration_s)
    return result
