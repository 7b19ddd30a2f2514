"""Preflight, deploy and teardown as tasks: the first and last things every run does."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightcap.config import Config
from nightcap.run.platform import initial_spec, make_platform
from nightcap.run.context import RunContext


class NotReady(RuntimeError):
    """`nightcap preflight` found problems: the night would fail later, so it fails now with the reasons."""


@task(name="preflight", cache_policy=NO_CACHE, persist_result=False)
def preflight(cfg: Config) -> list[str]:
    """On Kubernetes, check the cluster before anything is created (`nightcap preflight`); elsewhere nothing to do."""
    if cfg.platform.kind != "kubernetes":
        return []
    from nightcap.kube.preflight import preflight as check
    from nightcap.targets.plan import payloads_for

    logger = get_run_logger()
    checks = check(cfg, payloads=payloads_for(cfg.target))
    for c in checks:
        (logger.info if c.ok else logger.error)("preflight %s", c.line())
    failed = [c.line() for c in checks if not c.ok]
    if failed:
        raise NotReady(f"the cluster is not ready for this run ({len(failed)} problem(s)): " + " | ".join(failed))
    return [c.line() for c in checks]


@task(name="deploy", cache_policy=NO_CACHE, persist_result=False)
def deploy(ctx: RunContext) -> None:
    logger = get_run_logger()
    ctx.platform = make_platform(ctx.config, ctx.plan, ctx.run_id, ctx.out, ctx.registry)
    ctx.spec = initial_spec(ctx.config, ctx.plan)
    logger.info("deploying %s on %s: %d replica(s) of %s", ctx.config.target.name, ctx.config.platform.kind,
                ctx.config.platform.replicas, ctx.spec)
    ctx.platform.deploy(ctx.spec, ctx.config.platform.replicas)
    if not ctx.platform.limits_enforced:
        ctx.warn(ctx.platform.limits_note)
        logger.warning(ctx.platform.limits_note)
    logger.info("service ready at %s", ctx.platform.service_url)


@task(name="teardown", cache_policy=NO_CACHE, persist_result=False)
def teardown(ctx: RunContext) -> None:
    """The load generator first (it would only hammer a vanishing service), then the platform, whatever fails."""
    try:
        ctx.release_generator()
    finally:
        if ctx.platform is not None:
            ctx.platform.teardown()


@task(name="smoke-request", cache_policy=NO_CACHE, persist_result=False, retries=0)
def smoke(ctx: RunContext) -> None:
    """One request with the first payload right after deploy: a refusal stops the run before any load."""
    from nightcap.targets.smoke import smoke_request

    t = ctx.config.target
    assert ctx.platform is not None
    headers = dict(t.headers)
    if ctx.api_key:
        headers["Authorization"] = f"Bearer {ctx.api_key}"
    url = ctx.platform.service_url.rstrip("/") + t.path
    result = smoke_request(url, t.method, ctx.plan.payloads[0], headers, t.request_timeout_s,
                           payload_option=ctx.plan.payload_option,
                           url_option="target.url" if t.kind == "url" else None)
    ctx.info["smoke"] = {"status": result.status, "elapsed_ms": result.elapsed_ms}
    get_run_logger().info("smoke request: %s in %.0f ms", result.status, result.elapsed_ms)
