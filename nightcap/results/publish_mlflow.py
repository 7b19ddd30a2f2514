"""The night's answer where MLflow users already look: tags on the model version that was measured, and one MLflow
run per night in `publish.mlflow_experiment` with the headline figures, the config and the report folder.

What is written comes from `mlflow_fields.py` (pure); this module only talks to the tracking server, through
MLflow's own client. The history stays the source of truth: a publication that fails (the server down, no
permission, a deleted experiment) returns a warning for summary.json and report.md and never raises, and it is
bounded in time. Why: MLflow's HTTP client retries a refused connection for minutes by default (7 retries,
backoff factor 2), so its retries and timeout are set for the duration of the publication only (`BOUNDS`,
whatever the environment says), and once one part has failed or `BUDGET_S` has passed, the rest is skipped.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlparse

from nightcap.results import mlflow_fields as fields
from nightcap.results.mlflow_fields import ModelVersionRef
from nightcap.results.redact import sanitize

if TYPE_CHECKING:
    from nightcap.config import Config
    from nightcap.targets.mlflow_model import ResolvedModel

# one retry a second later (MLflow parses the backoff factor as an int), 10 s per request: a server that is down
# answers in a second or two, one that hangs costs at most ~20 s per call, and a failed call stops the publication
BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
          "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
BUDGET_S = 60.0
ARTIFACTS = ("report.md", "summary.json")  # and every PNG in the report folder


class _OutOfTime(RuntimeError):
    pass


@dataclass
class Published:
    """What the publication wrote, and what it could not (`warnings`: one line each, for summary.json)."""

    server: str  # the tracking URI, password hidden
    experiment: str
    run_id: str | None = None  # the night's MLflow run
    version: ModelVersionRef | None = None  # the version tagged
    artifacts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # nothing wrong, but worth a log line
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def lines(self) -> list[str]:
        """Log lines saying where the night went."""
        out = []
        if self.run_id:
            out.append(f"MLflow: run {self.run_id} in experiment {self.experiment!r} on {self.server} "
                       f"({len(self.artifacts)} artifacts)")
        if self.version is not None:
            out.append(f"MLflow: tags nightcap.* set on {self.version.label}")
        return out + [f"MLflow: {n}" for n in self.notes]


@contextmanager
def bounded_http() -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded for the duration, then the environment as it was."""
    saved = {k: os.environ.get(k) for k in BOUNDS}
    os.environ.update(BOUNDS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def publish_night(config: "Config", summary: Mapping[str, Any], out: Path, model: "ResolvedModel",
                  redact: Iterable[str] = (), now: datetime | None = None) -> Published:
    """Log the night's run, then tag the model version it measured; never raises (failures are `warnings`)."""
    secrets = [s for s in (*redact, _password(model.tracking_uri), _password(model.registry_uri)) if s]
    server = str(sanitize(model.tracking_uri or "", secrets))
    done = Published(server=server, experiment=fields.experiment_name(config))
    started = time.monotonic()
    checked_at = now or datetime.now(timezone.utc)

    def left() -> float:
        remaining = BUDGET_S - (time.monotonic() - started)
        if remaining <= 0:
            raise _OutOfTime(f"gave up after {BUDGET_S:.0f} s")
        return remaining

    def warn(what: str, exc: BaseException) -> None:
        text = _first_line(exc)
        done.warnings.append(str(sanitize(
            f"MLflow publication failed ({what} on {server}): {text}; the night is recorded and reported "
            "as usual (publish.mlflow: false turns the publication off)", secrets)))

    with bounded_http():
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=model.tracking_uri, registry_uri=model.registry_uri)
        except Exception as exc:  # noqa: BLE001 - an unusable URI is a warning, not a failed night
            warn("the client", exc)
            return _timed(done, started)
        version = None
        try:
            left()
            version = _version_of(client, model, done)
            _log_run(client, config, summary, out, model, version, done, secrets, left)
        except Exception as exc:  # noqa: BLE001 - never a failed night
            warn("the night's run", exc)
            return _timed(done, started)  # the server refused the run: the version's tags would fail the same way
        if version is not None:
            try:
                left()
                for key, value in fields.version_tags(summary, checked_at).items():
                    client.set_model_version_tag(version.name, version.version, key, value)
                    left()
                done.version = version
            except Exception as exc:  # noqa: BLE001
                warn(f"the tags on {version.label}", exc)
    return _timed(done, started)


def _timed(done: Published, started: float) -> Published:
    done.duration_s = round(time.monotonic() - started, 2)
    return done


def _version_of(client: Any, model: "ResolvedModel", done: Published) -> ModelVersionRef | None:
    """The registered version the URI names: pinned at resolve for models:/ (an alias to its version), looked up by
    run for runs:/ (tagged only when that run produced exactly one version)."""
    if model.registered_model and model.version:
        return ModelVersionRef(model.registered_model, str(model.version))
    if model.uri.startswith("runs:") and model.run_id:
        versions = client.search_model_versions(f"run_id = '{model.run_id}'")
        if len(versions) == 1:
            return ModelVersionRef(versions[0].name, str(versions[0].version))
        done.notes.append(f"{model.uri}: its run produced {len(versions) or 'no'} registered versions, so no version "
                          "was tagged (use a models:/ URI to name one)")
        return None
    done.notes.append(f"{model.uri} names no registered model version: only the night's run was logged")
    return None


def artifact_location(tracking_uri: str | None, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside the database for a SQLite store, since MLflow's default
    there is ./mlruns of whatever directory the night runs in; None (the store's or server's default) otherwise."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    database = tracking_uri.split(":///", 1)[1].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / "mlruns" / re.sub(r"[^\w.-]", "-", experiment)).as_uri()


def _experiment_id(client: Any, name: str, tracking_uri: str | None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))
        except MlflowException:  # created by another night meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        raise RuntimeError(f"experiment {name!r} is deleted: restore it, or set publish.mlflow_experiment")
    return found.experiment_id


def _log_run(client: Any, config: "Config", summary: Mapping[str, Any], out: Path, model: "ResolvedModel",
             version: ModelVersionRef | None, done: Published, secrets: list[str],
             left: Callable[[], float]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    experiment_id = _experiment_id(client, done.experiment, model.tracking_uri)
    left()
    tags = fields.run_tags(summary, model.uri, version)
    run = client.create_run(experiment_id, tags={k: v for k, v in tags.items() if k != "mlflow.runName"},
                            run_name=tags.get("mlflow.runName"))
    done.run_id = run.info.run_id
    ok = False
    try:
        stamp = int(time.time() * 1000)
        left()
        client.log_batch(done.run_id,
                         metrics=[Metric(k, v, stamp, 0) for k, v in fields.metrics(summary).items()],
                         params=[Param(k, v) for k, v in fields.params(config, secrets).items()])
        for path in [out / name for name in fields_artifacts(out)]:
            left()
            client.log_artifact(done.run_id, str(path))
            done.artifacts.append(path.name)
        ok = True
    finally:
        try:
            if ok or left() > 0:  # a run left RUNNING reads as a night still going
                client.set_terminated(done.run_id, fields.run_status(summary) if ok else "FAILED")
        except Exception:  # noqa: BLE001 - the first failure is the one reported
            if ok:
                raise


def fields_artifacts(out: Path) -> list[str]:
    """report.md, summary.json and the plots: the report folder without steps.csv (the history has the steps)."""
    names = [n for n in ARTIFACTS if (out / n).is_file()]
    return names + sorted(p.name for p in out.glob("*.png") if p.is_file())


def _password(uri: str | None) -> str | None:
    try:
        return urlparse(uri).password if uri else None
    except ValueError:
        return None


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
