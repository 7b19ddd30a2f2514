"""`nightcap`: run a capacity check, serve the reference target, read the history, clean up after dead runs.

Exit codes: 0 done, 1 the run failed (a stage, a regression), 2 bad input (nothing was started),
3 completed but a stage was inconclusive (it ran without answering; `nightcap.results.verdicts`),
130 interrupted (everything started was stopped).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from nightcap.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True, soft_wrap=True)  # errors and answers stay one line each, whatever the terminal
out = Console(soft_wrap=True)


def _print_answer(state: Any, out_dir: Optional[Path], cfg: Any) -> None:
    """The answer line, where the report is, and where to watch the run."""
    summary = _summary_of(state)
    if summary:
        out.print(summary.get("answer", ""), highlight=False)
    folder = _report_folder(out_dir, summary, cfg.retention.reports_dir)
    if folder:
        out.print(f"report: {folder}/report.md  (summary.json, steps.csv, plots)", highlight=False)
    if not os.environ.get("NIGHTCAP_EXTERNAL_API"):
        out.print("Prefect UI: run `make ui` and open http://127.0.0.1:4200 to see this run", highlight=False)


@app.command()
def run(
    config: Path = typer.Argument(Path("configs/local.yaml"), help="YAML capacity-check config"),
    set_: list[str] = typer.Option([], "--set", help="override a key: dotted.key=value (value parsed as YAML)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="report folder (default reports/<target>-<run id>)"),
) -> None:
    """Run the capacity-check flow on CONFIG."""
    from nightcap.targets.plan import CheckedConfig

    try:
        cfg = load_config(config, set_)
        checked = CheckedConfig.of(config, cfg, _refuse_early(cfg))  # the flow takes it as it is
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except RuntimeError as exc:
        err.print(f"[red]refused, nothing was started: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _sigterm)
    from nightcap.run import exit_guard
    from nightcap.run.prefect_server import prefect_api

    if _AS_PROGRAM:  # this process is the run's (not a test invoking the command): it ends once the report is written
        exit_guard.enable()

    try:
        with prefect_api(strip_env=tuple(v for v in [cfg.target.api_key_env] if v)) as api:
            err.print(f"Prefect API: {api}", highlight=False)
            from flows.capacity_check import capacity_check

            try:
                state = capacity_check(config=checked, overrides=list(set_),
                                       out=str(out_dir) if out_dir else None, return_state=True)
            finally:
                if not exit_guard.api_gone_reason():  # nowhere to send them otherwise
                    _flush_logs()
    except KeyboardInterrupt:
        err.print("interrupted: every process and cgroup of the run was stopped; measured steps are in the report")
        raise typer.Exit(130)
    except Exception as exc:  # a RuntimeError of the run, or Prefect's client once its API is gone
        if not isinstance(exc, RuntimeError) and not exit_guard.api_gone_reason():
            raise
        err.print(f"[red]{escape(str(exit_guard.api_gone_reason() or exc))}[/red]", highlight=False)
        exit_guard.exit_if_api_gone(1)  # teardown done, report written: nothing is left to wait for
        raise typer.Exit(1)
    _print_answer(state, out_dir, cfg)
    if state.is_failed():
        err.print(f"[red]run failed: {state.message}[/red]", highlight=False)
        exit_guard.exit_if_api_gone(1)
        raise typer.Exit(1)
    from nightcap.results.verdicts import EXIT_INCONCLUSIVE, STATE_INCONCLUSIVE

    if state.name == STATE_INCONCLUSIVE:  # completed, but a stage ran without answering: its own exit code
        err.print(f"[yellow]run {state.message}[/yellow]", highlight=False)
        raise typer.Exit(EXIT_INCONCLUSIVE)


def _refuse_early(cfg):  # type: ignore[no-untyped-def]
    """What `nightcap run` refuses before anything starts (ConfigError, RuntimeError: exit 2); the model URI
    pinned (None without one), which the run then downloads."""
    from nightcap.run.lock import RunLock
    from nightcap.run.safety import check_safety_limits
    from nightcap.targets.plan import check_target

    check_safety_limits(cfg)
    model = check_target(cfg)  # a model URI that resolves to nothing is refused here, before any server starts
    RunLock(cfg.target.name).check()  # before a Prefect server is started for nothing
    _check_store(cfg)  # a night that cannot store its history stops before it starts
    return model


def _check_store(cfg) -> None:  # type: ignore[no-untyped-def]
    """Open the history first (`nightcap run`, `validate`, `preflight`): a missing driver, a refused connection or
    missing rights is a RuntimeError naming store.url and what to install, start or grant (exit 2)."""
    from nightcap.results.store import StoreError, check_writable

    try:
        check_writable(cfg.store.url)
    except StoreError as exc:
        raise RuntimeError(str(exc)) from None


def _flush_logs() -> None:
    """Send buffered flow logs before the run's Prefect server stops."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception:
        pass


def _sigterm(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _summary_of(state) -> dict:  # type: ignore[no-untyped-def]
    try:
        result = state.result(raise_on_failure=False)
        return result if isinstance(result, dict) else {}
    except Exception:
        return {}


def _report_folder(out_dir: Optional[Path], summary: dict, root: str = "reports") -> Optional[str]:
    if out_dir:
        return str(out_dir)
    run_id = summary.get("run_id")
    name = summary.get("target", {}).get("name")
    return f"{root}/{name}-{run_id}" if run_id and name else None


@app.command()
def validate(
    config: Path = typer.Argument(..., help="YAML capacity-check config"),
    set_: list[str] = typer.Option([], "--set", help="override a key: dotted.key=value"),
) -> None:
    """Check a config (and its safety limits) without starting anything; print the resolved config."""
    try:
        cfg = load_config(config, set_)
        from nightcap.run.safety import check_safety_limits
        from nightcap.targets.plan import check_target

        check_safety_limits(cfg)
        check_target(cfg)
        _check_store(cfg)
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except RuntimeError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2)
    out.print_json(json.dumps(cfg.model_dump(mode="json")))


@app.command("preflight")
def preflight_command(
    config: Path = typer.Argument(..., help="YAML capacity-check config"),
    set_: list[str] = typer.Option([], "--set", help="override a key: dotted.key=value"),
) -> None:
    """Check, changing nothing, that CONFIG can run on its cluster: credentials, namespace, RBAC, metrics-server,
    node pool, room for the pods, images, and a server-side dry run of every manifest.

    Exit 0 ready; 1 not ready (one FAIL line per problem, saying what to change); 2 bad config."""
    try:
        cfg = load_config(config, set_)
        from nightcap.run.safety import check_safety_limits
        from nightcap.targets.plan import payloads_for

        check_safety_limits(cfg)
        payloads = payloads_for(cfg.target) if cfg.platform.kind == "kubernetes" else []
        _check_store(cfg)
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except RuntimeError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(2)
    except (OSError, ValueError) as exc:  # a payload file that cannot be read
        err.print(f"[red]{config}: {exc}[/red]", highlight=False)
        raise typer.Exit(2)
    if cfg.platform.kind != "kubernetes":
        out.print(f"ok    platform: platform.kind {cfg.platform.kind}: no cluster to check; the config and its safety "
                  "limits are valid", highlight=False)
        return
    from nightcap.kube.preflight import preflight

    checks = preflight(cfg, payloads=payloads)
    for check in checks:
        out.print(check.line(), highlight=False)
    failed = sum(1 for c in checks if not c.ok)
    out.print(f"not ready: {failed} problem(s) to fix" if failed else "ready", highlight=False)
    raise typer.Exit(1 if failed else 0)


@app.command("render")
def render_command(
    config: Path = typer.Argument(..., help="YAML capacity-check config (platform.kind kubernetes)"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write the YAML files into"),
    set_: list[str] = typer.Option([], "--set", help="override a key: dotted.key=value"),
    run_id: str = typer.Option("example", "--run-id", help="the run id the objects are named and labelled after"),
) -> None:
    """Write every Kubernetes manifest a run of CONFIG applies (model, Locust, canary, the run's record), the RBAC
    it needs and the runner's Prefect Job, to review or apply by hand. Changes nothing in any cluster."""
    try:
        cfg = load_config(config, set_)
        from nightcap.targets.plan import payloads_for

        payloads = payloads_for(cfg.target)
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except (OSError, ValueError) as exc:
        err.print(f"[red]{config}: {exc}[/red]", highlight=False)
        raise typer.Exit(2)
    if cfg.platform.kind != "kubernetes":
        err.print(f"[red]{config}: platform.kind is {cfg.platform.kind!r}: nothing is applied to a cluster; set "
                  "platform.kind: kubernetes[/red]", highlight=False)
        raise typer.Exit(2)
    from nightcap.kube.render import render

    for path in render(cfg, str(config), payloads, out_dir, run_id):
        out.print(str(path), highlight=False)


@app.command()
def init(
    model_uri: str = typer.Argument(..., help="a model folder, file://, runs:/..., models:/name/version or models:/name@alias"),
    name: Optional[str] = typer.Option(None, "--name", help="target.name (default: the registered model's or folder's name)"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="where to write the config (default configs/NAME.yaml)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking server (default MLFLOW_TRACKING_URI)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented config for one's own MLflow model, validate it, and print the command that runs it."""
    from nightcap.targets.config_template import default_name, render
    from nightcap.targets.mlflow_model import ModelUriError, resolve

    try:
        model = resolve(model_uri, tracking_uri)
    except ModelUriError as exc:
        err.print(f"[red]{str(exc).replace('target.model_uri', 'MODEL_URI', 1)}[/red]", highlight=False)
        raise typer.Exit(2)
    name = name or default_name(model)
    path = out_path or Path("configs") / f"{name}.yaml"
    if path.exists() and not force:
        err.print(f"[red]{path} exists; pass --force to overwrite it, or --out another path[/red]", highlight=False)
        raise typer.Exit(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(model, name, tracking_uri))
    out.print(f"wrote {path}: {model.label} on the local platform, every stage; edit slo: and sizing: for your service",
              highlight=False)
    try:
        cfg = load_config(path)
        from nightcap.run.safety import check_safety_limits
        from nightcap.targets.plan import check_target

        check_safety_limits(cfg)
        check_target(cfg)
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        err.print(f"edit {path} as the comments there say, then run: nightcap validate {path}", highlight=False)
        raise typer.Exit(2)
    out.print(f"valid. Run it with:\n  nightcap run {path}", highlight=False)


@app.command("serve-reference")
def serve_reference(
    port: int = typer.Option(..., help="TCP port on 127.0.0.1"),
    slots: int = typer.Option(4, help="requests served at once"),
    service_ms: float = typer.Option(20.0, "--service-ms", help="time each request holds a slot"),
    queue: int = typer.Option(64, help="requests waiting beyond the slots before 503"),
    cpu_ms: float = typer.Option(0.0, "--cpu-ms", help="real CPU work per request"),
    coherency_ms: float = typer.Option(0.0, "--coherency-ms", help="shared-lock cost per request per other in-flight request"),
    memory_mb: int = typer.Option(0, "--memory-mb", help="working set to allocate at start"),
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    stall_every_s: float = typer.Option(0.0, "--stall-every-s", help="start a stall this often (0: never)"),
    stall_s: float = typer.Option(0.0, "--stall-s", help="how long each stall holds every response"),
) -> None:
    """Serve the reference target, whose capacity is known exactly."""
    from nightcap.targets.reference_server import serve

    serve(port=port, slots=slots, service_ms=service_ms, queue=queue, cpu_ms=cpu_ms, coherency_ms=coherency_ms,
          memory_mb=memory_mb, host=host, stall_every_s=stall_every_s, stall_s=stall_s)


@app.command()
def history(
    store: Optional[str] = typer.Option(None, "--store", help="SQL URL (default sqlite:///.nightcap/history.db)"),
    target: Optional[str] = typer.Option(None, "--target", help="only this target.name"),
    last: int = typer.Option(14, "--last", help="how many runs"),
) -> None:
    """Print the results history as a table."""
    from nightcap.results.history_cli import history_command

    history_command(store, target, last)


@app.command()
def metrics(
    store: Optional[str] = typer.Option(None, "--store", help="SQL URL (default: store.url of --config, else "
                                        "sqlite:///.nightcap/history.db)"),
    config: Optional[Path] = typer.Option(None, "--config", help="read the history's store.url from this config"),
    set_: list[str] = typer.Option([], "--set", help="override a key of --config: dotted.key=value"),
    target: Optional[str] = typer.Option(None, "--target", help="only this target.name"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write to this file atomically (node_exporter's "
                                            "textfile collector) instead of printing"),
) -> None:
    """Print the latest night of every target in the OpenMetrics text format (for Prometheus)."""
    from nightcap.results.metrics_cli import metrics_command

    if store is None and config is not None:
        try:
            store = load_config(config, set_).store.url
        except ConfigError as exc:
            err.print(f"[red]{exc.render()}[/red]", highlight=False)
            raise typer.Exit(2)
    code = metrics_command(store, target, out_file)
    if code:
        raise typer.Exit(code)


@app.command()
def cleanup(
    stale_after_s: float = typer.Option(60.0, help="a run whose heartbeat is older than this is dead"),
    config: Optional[Path] = typer.Option(None, "--config", help="also apply this config's retention: (old report "
                                          "folders, history steps, Prefect artifacts of its target)"),
    set_: list[str] = typer.Option([], "--set", help="override a key of --config: dotted.key=value"),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="also sweep this Kubernetes namespace: objects "
                                            "of runs whose lease in the cluster expired, and their node pools"),
    context: Optional[str] = typer.Option(None, "--context", help="kubeconfig context (default: the current one)"),
    in_cluster: bool = typer.Option(False, "--in-cluster", help="use the pod's service account"),
) -> None:
    """Stop processes, remove cgroups and restore cluster settings left by runs that died (only those)."""
    from nightcap.run.cleanup import reap_dead_runs

    done = reap_dead_runs(stale_after_s=stale_after_s)
    if namespace:
        from nightcap.platforms.base import PlatformError
        from nightcap.run.cleanup import sweep_cluster

        try:
            done += sweep_cluster(namespace, context, in_cluster)
        except PlatformError as exc:
            err.print(f"[red]namespace {namespace}: {exc}[/red]", highlight=False)
            raise typer.Exit(1)
    for line in done:
        out.print(line, highlight=False)
    out.print(f"{len(done)} thing(s) cleaned up" if done else "nothing left behind by dead runs")
    if config is not None:
        from nightcap.results.store import StoreError
        from nightcap.run.cleanup import apply_retention_for

        try:
            for line in apply_retention_for(str(config), list(set_)):
                out.print(line, highlight=False)
        except ConfigError as exc:
            err.print(f"[red]{exc.render()}[/red]", highlight=False)
            raise typer.Exit(2)
        except StoreError as exc:
            err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
            raise typer.Exit(2)


_AS_PROGRAM = False  # set by `main`, the console script: only then may a run end the process itself


def main() -> None:
    global _AS_PROGRAM
    _AS_PROGRAM = True
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
