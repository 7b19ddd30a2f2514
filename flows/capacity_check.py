"""The parent flow: canary → deploy → tune → single-client → multi-client → scaling → sizing → autoscale → regression.

Each stage is a subflow the config's `stages` list turns on. Deploy and teardown always run; a stage that
fails is marked failed and keeps every step it measured, and the stages after it still run on what is known.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal
from prefect.context import get_run_context
from prefect.states import Completed
from pydantic.json_schema import SkipJsonSchema

from flows.autoscale import autoscale
from flows.ramp import multi_client, single_client
from flows.regression import regression
from flows.scaling import scaling
from flows.sizing import sizing
from flows.tune import tune
from nightcap.config import Config, load_config
from nightcap.load.runner import BudgetExceeded
from nightcap.results.glance import night_name
from nightcap.results.no_answer import no_answer_reason
from nightcap.results.report import write_markdown
from nightcap.results.summary import build_summary, headline_figures, write_summary
from nightcap.results.run_end import PrefectApiGone, end_status, run_error
from nightcap.results.verdicts import (COMPLETED, FAILED, INCONCLUSIVE, STATE_INCONCLUSIVE, inconclusive_message,
                                       inconclusive_reason, inconclusive_stages)
from nightcap.run.cleanup import reap_dead_runs
from nightcap.run.context import RunContext, StageRun, new_run_id
from nightcap.run.exit_guard import api_gone_reason, arm, armed, watch_api
from nightcap.run.lock import RunLock
from nightcap.processes.registry import RunRegistry
from nightcap.run.safety import check_safety_limits
from nightcap.targets.mlflow_model import ResolvedModel
from nightcap.targets.plan import CheckedConfig, api_key, check_target, plan_target, release
from nightcap.targets.smoke import SmokeFailed
from tasks.artifacts import (Progress, open_answer, publish_answer, publish_summary, publish_trend, publish_trend_plot,
                            steps_table)
from tasks.canary import measure_canary
from tasks.events import emit_run_events
from tasks.mlflow_publication import publish_to_mlflow
from tasks.recording import report_lost, retain, save_history_steps, store_run
from tasks.platform import deploy, preflight, smoke, teardown
from tasks.pushgateway import push_night_metrics

# Prefect's worker cancels a run with SIGTERM, which its engine turns into TerminationSignal (a BaseException).
CANCELLED = (KeyboardInterrupt, SystemExit, TerminationSignal)
FATAL = (BudgetExceeded, *CANCELLED)


class HistoryUnavailable(RuntimeError):
    """The history (store.url) cannot be opened or written: a night that stores nothing can never alarm, so it
    stops before deploying, or fails at the end if its rows could not be written."""


# Each stage flow takes the run's context (a StageRun) and keeps its typed result on it.
STAGE_FLOWS: dict[str, Callable[[StageRun], Any]] = {
    "tune": tune,
    "single_client": single_client,
    "multi_client": multi_client,
    "scaling": scaling,
    "sizing": sizing,
    "autoscale": autoscale,
    "regression": regression,
}


@contextmanager
def _stop_once_on_signals() -> Iterator[None]:
    """SIGTERM (a cancelled flow run, a stopped worker) and SIGINT unwind like Ctrl-C, so teardown runs.

    A second signal while the run is stopping is ignored: raised inside teardown it would cut it short and
    leave generators running (found by the fault suite: Ctrl-C twice left the Locust processes behind).
    A third ends the process at once (a teardown that hangs must not hold the night): `nightcap cleanup`, or the
    next run, then stops what it left.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def stop_once(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) >= 3:
            sys.stderr.write(f"nightcap: signal {signum} a third time: exiting now; run `nightcap cleanup` to stop "
                             "what the run left\n")
            os._exit(130)
        if len(received) == 2:
            sys.stderr.write(f"nightcap: signal {signum} ignored, already stopping (teardown in progress); "
                             "a third signal exits at once, then run `nightcap cleanup`\n")
            return
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, stop_once) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if not armed():  # once the report is written, a signal ends the process at once (exit_guard.arm)
                signal.signal(sig, handler)


def open_store(cfg: Config, key: str | None) -> Any:
    """The history, opened and write-checked first: if it cannot be written the night stops here, before
    anything is deployed (exit 2 from `nightcap run`, a failed flow run under a worker)."""
    from nightcap.results.store import HistoryStore, StoreError

    try:
        store = HistoryStore(cfg.store.url, redact=[key] if key else [], retry_s=cfg.store.retry_s)
        store.probe_write()
    except StoreError as exc:
        raise HistoryUnavailable(f"{exc} (nothing was deployed)") from None
    return store


def open_run(cfg: Config, out: str | None, model: ResolvedModel | None = None) -> RunContext:
    run_id = new_run_id()
    out_dir = Path(out or f"{cfg.retention.reports_dir}/{cfg.target.name}-{run_id}")  # where retention prunes
    key = api_key(cfg.target)
    store = open_store(cfg, key)
    for line in reap_dead_runs():
        get_run_logger().warning("cleaned up after a dead run: %s", line)
    registry = RunRegistry(run_id)
    plan = None
    try:
        plan = plan_target(cfg, model=model)  # a model URI is downloaded here, once per run
        ctx = RunContext(config=cfg, run_id=run_id, out=out_dir, plan=plan, registry=registry, store=store)
        ctx.api_key = key
        store.mark_abandoned(cfg.load.max_duration_s + 600)
        flow_run = get_run_context().flow_run  # type: ignore[union-attr]
        store.start_run(run_id, cfg, plan.version, flow_run_id=str(flow_run.id) if flow_run else None)
    except Exception:
        if plan is not None:
            release(plan)
        registry.close()
        store.close()
        raise
    ctx.info.update(run_id=run_id, target={"name": cfg.target.name, "kind": cfg.target.kind, "version": plan.version,
                                           "payload": {"source": plan.payload_source,
                                                       "synthetic": plan.payload_synthetic}},
                    config_hash=cfg.config_hash())
    ctx.stages.update({s: {"status": "pending"} for s in cfg.stages})
    if plan.payload_synthetic:  # report.md says it beside the answer (results/report.py)
        get_run_logger().warning("the request bodies are synthetic: %s; real rows measure real cost (set "
                                 "target.payload_file or target.payload_csv)", plan.payload_source)
    return ctx


DEFAULT_CONFIG = "configs/local.yaml"


def run_name() -> str:
    """The flow run's name in the runs list: the target (after --set overrides) and the night it started,
    "wine-mlflow 2026-12-03"; the config path when the config cannot be loaded (the run then fails on it)."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    config = parameters.get("config") or DEFAULT_CONFIG
    if isinstance(config, CheckedConfig):  # `nightcap run` loaded it: its target, not the YAML read again
        return night_name(config.target, datetime.now().astimezone())
    try:
        target = load_config(config, parameters.get("overrides") or []).target.name
    except Exception:
        return str(config)
    return night_name(target, datetime.now().astimezone())


def checked_config(config: str | CheckedConfig, overrides: list[str]) -> tuple[Config, ResolvedModel | None]:
    """The run's config and pinned model: as `nightcap run` checked them, else loaded and checked here (a
    deployment run, whose parameters are a path and overrides)."""
    if isinstance(config, CheckedConfig) and config.config is not None:
        return config.config, config.model
    cfg = load_config(config.path if isinstance(config, CheckedConfig) else config, overrides)
    check_safety_limits(cfg)
    return cfg, check_target(cfg)


@flow(name="capacity-check", flow_run_name=run_name, log_prints=True)
def capacity_check(config: str | SkipJsonSchema[CheckedConfig] = DEFAULT_CONFIG, overrides: list[str] | None = None,
                   out: str | None = None) -> dict[str, Any]:
    """How much load can the model take, on what pod size, and how many pods and nodes does that cost?"""
    logger = get_run_logger()
    cfg, model = checked_config(config, overrides or [])
    preflight(cfg)  # on Kubernetes: a night that cannot succeed fails here, in seconds, with the reasons
    with _stop_once_on_signals(), RunLock(cfg.target.name):
        ctx = open_run(cfg, out, model)
        # the run's first artifact: the answer, written when the run ends (tasks/artifacts.py)
        ctx.answer_artifact = open_answer(cfg.target.name, ctx.run_id, list(cfg.stages))
        watch = watch_api(os.environ.get("PREFECT_API_URL"))  # only where this process is the run's own
        logger.info("run %s: report folder %s", ctx.run_id, ctx.out.resolve())
        status, fatal = COMPLETED, None
        try:
            fatal = run_stages(ctx)
        except Exception as exc:
            ctx.info["error"] = str(exc)
            if isinstance(exc, SmokeFailed):
                ctx.info["failure"] = str(exc)
            status = FAILED
            raise
        except BaseException:
            status = FAILED  # anything else that unwinds the flow: never recorded as completed
            raise
        finally:
            teardown(ctx)
            status, fatal = end_status(status, fatal, isinstance(fatal, CANCELLED), api_gone_reason(), ctx.stages,
                                       ctx.info, lambda: no_answer_reason(build_summary(ctx), ctx.steps))
            try:
                summary = finish(ctx, status)
            finally:
                if watch is not None:
                    watch.stop()
                arm(ctx.info.get("status", status))  # the report is written: exit within a bounded time from here
        error = run_error(ctx.info, ctx.stages, fatal, ctx.results.regression, cfg.regression.fail_flow)
        if error is not None:
            raise error
        if inconclusive_stages(ctx.stages):  # completed, under its own name: the Prefect UI lists it "Inconclusive"
            message = inconclusive_message(ctx.stages)
            return Completed(name=STATE_INCONCLUSIVE, message=message, data=summary)  # type: ignore[return-value]
        return summary


def run_stages(ctx: RunContext) -> BaseException | None:
    """The canary, deploy, the smoke request and the configured stages; the error that must stop the run (a spent
    budget, a cancel, the Prefect API gone), or None. A stage that fails otherwise is marked failed and the next
    one runs on what is known."""
    progress = Progress(ctx.config.target.name, list(ctx.config.stages) or ["deploy"])
    ctx.on_step.append(progress.step)
    try:
        # the platform canary first, on the pod size and platform the model will get: the regression check
        # uses it to tell a slower machine from a slower model (it never fails the run)
        ctx.results.canary = measure_canary(ctx)
        t0 = time.monotonic()
        deploy(ctx)
        ctx.info["deploy_s"] = round(time.monotonic() - t0, 1)
        smoke(ctx)  # one request before any load: a refused payload stops here, in seconds
        for name in ctx.config.stages:
            try:
                run_stage(ctx, name)
            finally:
                progress.stage_done()
                write_summary(ctx)
            if api_gone_reason():  # no later stage could report to Prefect either
                return PrefectApiGone(api_gone_reason())
    except FATAL as exc:
        return exc
    return None


def run_stage(ctx: RunContext, name: str) -> None:
    """One stage subflow, its verdict and duration recorded on the context; only a FATAL error propagates."""
    logger = get_run_logger()
    t0 = time.monotonic()
    ctx.stage_status(name, "running")
    try:
        STAGE_FLOWS[name](ctx.stage_run())
        reason = inconclusive_reason(ctx.results, name)  # it ran; did it answer its question?
        if reason:
            logger.warning("stage %s inconclusive: %s", name, reason)
            ctx.stage_status(name, INCONCLUSIVE, reason=reason)
        else:
            ctx.stage_status(name, COMPLETED)
    except FATAL as exc:
        ctx.stage_status(name, "cancelled" if isinstance(exc, CANCELLED) else FAILED,
                         error=str(exc) or type(exc).__name__)
        raise
    except Exception as exc:
        logger.error("stage %s failed: %s\n%s", name, exc, traceback.format_exc(limit=3))
        ctx.stage_status(name, FAILED, error=str(exc))
    finally:
        ctx.stages[name].update(duration_s=round(time.monotonic() - t0, 1), steps=len(ctx.stage_steps(name)))


def finish(ctx: RunContext, status: str) -> dict[str, Any]:
    """Whatever happened: summary.json, report.md, artifacts, history row; then close the run's connections.

    The history must have every row of the night: steps it refused mid-run are written again here, and if
    they or the run's row still cannot be written the night is failed (never completed without its history).
    """
    logger = get_run_logger()
    summary: dict[str, Any] = {}
    try:
        status = save_history_steps(ctx, status)
        ctx.info["status"] = status
        trend = None
        if ctx.store is not None:
            try:
                trend = publish_trend(ctx, status)
                if trend:
                    ctx.run_plots.append(trend)
            except Exception as exc:
                ctx.warn(f"trend skipped: {exc}")
        # the history first: it lives elsewhere, and a full disk here must not cost the night its row
        status, summary = store_run(ctx, status, build_summary(ctx))
        push_night_metrics(ctx, status, summary)  # publish.pushgateway; a failed push is a warning in summary.json
        try:
            summary = write_summary(ctx)
            plots = [ctx.out / p for p in summary["plots"] if (ctx.out / p).exists()]
            lead = summary.get("lead_plot")
            if lead and (ctx.out / lead).exists():
                plots = [ctx.out / lead] + [p for p in plots if p.name != lead]
            write_markdown(summary, ctx.out, plots)
        except OSError as exc:  # the disk is full, the folder gone: the history and steps.csv have the night
            status, summary, plots = report_lost(ctx, exc), build_summary(ctx), []
        summary = publish_to_mlflow(ctx, summary, plots)  # the night on its MLflow model version; warns, never fails
        try:
            if ctx.steps:
                steps_table(ctx.config.target.name, ctx.steps)
            publish_summary(ctx.config.target.name, summary, ctx.out, plots)
        except Exception as exc:  # the Prefect API refused or is gone: the report folder has everything
            logger.warning("artifacts not published to Prefect (the report folder has them): %s", exc)
        if not api_gone_reason():
            publish_glance(ctx, summary, trend)
        logger.info("%s", summary["answer"])
        logger.info("report: %s", (ctx.out / "report.md").resolve())
    finally:
        release(ctx.plan)
        try:  # even when the report could not be written: the "did not run" automation waits for these
            final = summary or build_summary(ctx)
            emit_run_events(final, status, headline_figures(final), str(ctx.out.resolve()))
        except Exception as exc:
            logger.warning("run events not emitted: %s", exc)
        retain(ctx)
        if ctx.registry is not None:
            ctx.registry.close()
        if ctx.store is not None:
            ctx.store.close()
    return summary


def publish_glance(ctx: RunContext, summary: dict[str, Any], trend: str | None) -> None:
    """The trend plot and tonight's answer (into the run's first artifact). Each on its own, so a refused plot
    (too large) does not cost the night its answer."""
    logger = get_run_logger()
    target = ctx.config.target.name
    try:
        if trend and (ctx.out / trend).exists():
            publish_trend_plot(target, ctx.out / trend)
    except Exception as exc:
        logger.warning("trend plot not published to Prefect (the report folder has it): %s", exc)
    try:
        publish_answer(target, summary, ctx.answer_artifact)
    except Exception as exc:
        logger.warning("answer artifact not published to Prefect (report.md has it): %s", exc)
