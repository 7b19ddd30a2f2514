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
from typing import Optional

import typer
from rich.console import Console

from nightcap.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True, soft_wrap=True)  # errors and answers stay one line each, whatever the terminal
out = Console(soft_wrap=True)


@app.command()
def run(
    config: Path = typer.Argument(Path("configs/local.yaml"), help="YAML capacity-check config"),
    set_: list[str] = typer.Option([], "--set", help="override a key: dotted.key=value (value parsed as YAML)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="report folder (default reports/<target>-<run id>)"),
) -> None:
    """Run the capacity-check flow on CONFIG."""
    try:
        cfg = load_config(config, set_)
        from nightcap.run.lock import RunLock
        from nightcap.run.safety import check_safety_limits

        check_safety_limits(cfg)
        from nightcap.targets.plan import check_target

        check_target(cfg)  # a model URI that resolves to nothing is refused here, before any server starts
        RunLock(cfg.target.name).check()  # before a Prefect server is started for nothing
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except RuntimeError as exc:
        err.print(f"[red]refused, nothing was started: {exc}[/red]", highlight=False)
        raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _sigterm)
    from nightcap.run.prefect_server import prefect_api

    try:
        with prefect_api(strip_env=tuple(v for v in [cfg.target.api_key_env] if v)) as api:
            err.print(f"Prefect API: {api}", highlight=False)
            from flows.capacity_check import capacity_check

            try:
                state = capacity_check(config=str(config), overrides=list(set_),
                                       out=str(out_dir) if out_dir else None, return_state=True)
            finally:
                _flush_logs()
    except KeyboardInterrupt:
        err.print("interrupted: every process and cgroup of the run was stopped; measured steps are in the report")
        raise typer.Exit(130)
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1)
    summary = _summary_of(state)
    if summary:
        out.print(summary.get("answer", ""), highlight=False)
    folder = _report_folder(out_dir, summary)
    if folder:
        out.print(f"report: {folder}/report.md  (summary.json, steps.csv, plots)", highlight=False)
    if not os.environ.get("NIGHTCAP_EXTERNAL_API"):
        out.print("Prefect UI: run `make ui` and open http://127.0.0.1:4200 to see this run", highlight=False)
    if state.is_failed():
        err.print(f"[red]run failed: {state.message}[/red]", highlight=False)
        raise typer.Exit(1)
    from nightcap.results.verdicts import EXIT_INCONCLUSIVE, STATE_INCONCLUSIVE

    if state.name == STATE_INCONCLUSIVE:  # completed, but a stage ran without answering: its own exit code
        err.print(f"[yellow]run {state.message}[/yellow]", highlight=False)
        raise typer.Exit(EXIT_INCONCLUSIVE)


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


def _report_folder(out_dir: Optional[Path], summary: dict) -> Optional[str]:
    if out_dir:
        return str(out_dir)
    run_id = summary.get("run_id")
    name = summary.get("target", {}).get("name")
    return f"reports/{name}-{run_id}" if run_id and name else None


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
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
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
    except ConfigError as exc:
        err.print(f"[red]{exc.render()}[/red]", highlight=False)
        raise typer.Exit(2)
    except (OSError, ValueError) as exc:  # a payload file that cannot be read
        err.print(f"[red]{config}: {exc}[/red]", highlight=False)
        raise typer.Exit(2)
    if cfg.platform.kind != "kubernetes":
        out.print(f"ok    platform: platform.kind {cfg.platform.kind}: no cluster to check; the config and its safety "
                  "limits are valid", highlight=False)
        return
    from nightcap.platforms.preflight import preflight

    checks = preflight(cfg, payloads=payloads)
    for check in checks:
        out.print(check.line(), highlight=False)
    failed = sum(1 for c in checks if not c.ok)
    out.print(f"not ready: {failed} problem(s) to fix" if failed else "ready", highlight=False)
    raise typer.Exit(1 if failed else 0)


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
def cleanup(
    stale_after_s: float = typer.Option(60.0, help="a run whose heartbeat is older than this is dead"),
) -> None:
    """Stop processes, remove cgroups and restore cluster settings left by runs that died (only those)."""
    from nightcap.run.cleanup import reap_dead_runs

    done = reap_dead_runs(stale_after_s=stale_after_s)
    for line in done:
        out.print(line, highlight=False)
    out.print(f"{len(done)} thing(s) cleaned up" if done else "nothing left behind by dead runs")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
