"""Measuring tasks: one Prefect task per load window, so every step shows in the UI as it happens."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightcap.context import RunContext
from nightcap.load.cluster import LocalLocust
from nightcap.measure import StepRunner
from nightcap.search import SearchParams, SearchResult, Slo, find_saturation
from nightcap.steps import StepRow


def start_generator(ctx: RunContext, workers: int) -> Any:
    """Locust master + workers where `load.generator` says: pods in the cluster, or local processes.

    In the cluster they reuse the platform's API client (same credentials, same namespace, same run labels),
    and send to the Service's DNS name; local processes send to `platform.service_url`.
    """
    t = ctx.config.target
    if ctx.config.generator_site == "cluster":
        from nightcap.load.kubernetes_locust import LOCUSTFILE, KubernetesLocust

        api = getattr(getattr(ctx.platform, "kube", None), "api", None)
        gen: Any = KubernetesLocust(ctx.config, ctx.run_id, api_client=api, payloads=ctx.plan.payloads,
                                    api_key=ctx.api_key, locustfile=LOCUSTFILE.read_text(), workers=workers,
                                    clock=getattr(ctx.platform, "clock", time))
    else:
        gen = LocalLocust(workers, ctx.plan.payloads, t.path, t.method, t.headers, t.request_timeout_s,
                          ctx.config.load.reconnect_s, api_key=ctx.api_key, registry=ctx.registry,
                          logdir=ctx.out / "logs", worker_cpu=ctx.config.load.worker_cpu)
    try:
        gen.start()
    except BaseException:
        try:
            gen.stop()  # a half-started generator (pods created, processes spawned) is not left behind
        except Exception as exc:
            logging.getLogger(__name__).warning("cleaning up the load generator that failed to start: %s", exc)
        raise
    return gen


def generator(ctx: RunContext, workers: int) -> Any:
    """The run's generator with `workers` workers, idle: started on first use and kept for later searches.

    Starting Locust costs seconds locally and a pod rollout (and its deletion) in a cluster, and tuning
    alone runs a search per candidate. Pods are scaled to a new worker count; local processes restart.
    """
    gen = ctx.generator
    if gen is not None and gen.workers != workers:
        if hasattr(gen, "scale_workers"):
            try:
                gen.scale_workers(workers)
            except Exception:
                ctx.release_generator()
                raise
        else:
            ctx.release_generator()
            gen = None
    if gen is None:
        gen = ctx.generator = start_generator(ctx, workers)
    return gen


def idle(ctx: RunContext) -> None:
    """Stop the swarm so the next search starts from zero users; a generator that cannot is dropped."""
    gen = ctx.generator
    if gen is None:
        return
    try:
        gen.client.stop()
    except Exception as exc:
        logging.getLogger(__name__).info("the load generator did not stop its swarm (%s); it is replaced", exc)
        ctx.release_generator()


@task(name="measure-window", task_run_name="{stage}: {users} users", cache_policy=NO_CACHE, persist_result=False)
def measure_window(runner: StepRunner, stage: str, users: int) -> StepRow:
    row = runner.measure(users)
    logger = get_run_logger()
    flag = " GENERATOR-BOUND" if row.generator_bound else ""
    flag += "" if row.valid else f" INVALID ({row.note})"
    logger.info("%s %3d users x %d replica(s): %7.1f rps  p50 %s ms  p95 %s ms  errors %.1f%%  generator CPU %.0f%%%s",
                stage, users, row.replicas, row.rps, row.p50_ms, row.p95_ms, 100 * row.error_rate,
                row.generator_cpu_pct, flag)
    return row


def search_params(ctx: RunContext, cheap: bool = False, **overrides: Any) -> SearchParams:
    s = ctx.config.search
    params = SearchParams(start_users=s.start_users, max_users=s.max_users, min_gain=s.min_gain,
                          precision=s.precision, stable_within=s.stable_within, max_windows=s.max_windows, refine_steps=s.refine_steps,
                          headroom=s.headroom, slo_capacity=s.slo_capacity)
    if cheap:  # tuning compares candidates' rps: one window per level, no SLO extension, no knee placement
        params.max_windows, params.slo_capacity, params.refine_steps = 1, False, min(s.refine_steps, 2)
        params.refine_knee = False
    for key, value in overrides.items():
        setattr(params, key, value)
    return params


def run_search(ctx: RunContext, stage: str, workers: int, params: SearchParams) -> SearchResult:
    """Search with the run's generator; it is left idle for the next search, or stopped if the search failed.

    Teardown stops it at the end of the run, so nothing is left running whatever happens.
    """
    assert ctx.platform is not None
    gen = generator(ctx, workers)
    try:
        runner = StepRunner(ctx.config, ctx.platform, gen, stage, ctx.record_step, ctx.deadline, ctx.spec,
                            ctx.next_step)
        slo = Slo(ctx.config.slo.p95_ms, ctx.config.slo.max_error_rate)
        result = find_saturation(lambda users: measure_window(runner, stage, users), slo, params)
    except BaseException:
        ctx.release_generator()  # it may be what failed; the next search starts a fresh one
        raise
    idle(ctx)
    return result


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def result_block(result: SearchResult, headroom: float) -> dict[str, Any]:
    return {
        "saturation": {"rps": _r(result.saturation_rps), "users": result.saturation_users, "found": result.found,
                       "stop_reason": result.stop_reason},
        "operating_point": {"rps": _r(result.operating_rps), "users": result.operating_users, "headroom": headroom},
        "slo_capacity": {"users": result.slo_users, "rps": _r(result.slo_rps)},
        "levels": [asdict(lv) for lv in result.levels],
        "windows": result.windows,
    }
