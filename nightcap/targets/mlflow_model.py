"""Any MLflow model URI to a folder `mlflow models serve` can serve, and a record of what was served.

Accepted: a local folder, `file://`, `runs:/<run id>/<path>`, `models:/<name>/<version>`,
`models:/<name>@<alias>`, `models:/<name>/latest`, `models:/<logged model id>`, and any artifact URI MLflow
downloads itself (`s3://`, `gs://`, `mlflow-artifacts:/`). Tracking and registry lookups use
`target.tracking_uri`, else MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, else MLflow's default store when one
exists in the working directory (never a new empty one).

Two steps, because a bad URI must be refused before a Prefect server starts: `resolve` reads only the
model's metadata (its registry record and MLmodel file, milliseconds against a local store), `download`
fetches the whole model once per run. An alias is pinned to its version at `resolve`, so the model served
is the one recorded even if the alias moves meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import yaml

__all__ = ["ModelUriError", "ResolvedModel", "download", "resolve"]

_REMOTE_SCHEMES = ("runs", "models")
# MLflow retries an unreachable tracking server for minutes by default; resolving must answer in seconds
_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


class ModelUriError(ValueError):
    """`target.model_uri` names nothing servable; the message says what was tried."""

    def __init__(self, uri: str, problem: str, tried: list[str]):
        self.uri, self.problem, self.tried = uri, problem, tried
        text = f"target.model_uri {uri!r} cannot be resolved: {problem}"
        if tried:
            text += f" (tried: {'; '.join(tried)})"
        super().__init__(text)


@dataclass
class ResolvedModel:
    """A model URI pinned to one model: where to fetch it, and the identity recorded with the run."""

    uri: str  # as configured
    artifact_uri: str  # what `download` fetches: an alias or 'latest' pinned to its version
    mlmodel: dict[str, Any]  # the parsed MLmodel file
    local_dir: Path | None = None  # a local folder is served in place, never copied
    tracking_uri: str | None = None
    registry_uri: str | None = None
    registered_model: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_id: str | None = None
    tried: list[str] = field(default_factory=list)

    @property
    def signature_inputs(self) -> list[dict[str, Any]] | None:
        return _schema(self.mlmodel, "inputs")

    @property
    def input_example(self) -> dict[str, Any] | None:
        """MLflow's `saved_input_example_info` (where the example and the serving example are)."""
        info = self.mlmodel.get("saved_input_example_info")
        return info if isinstance(info, dict) else None

    @property
    def label(self) -> str:
        """One short string for tables: `wine v3 @champion`, `run 1a2b3c4d`, or the folder and model uuid."""
        if self.registered_model:
            return f"{self.registered_model} v{self.version}" + (f" @{self.alias}" if self.alias else "")
        uuid = str(self.mlmodel.get("model_uuid") or "")[:8]
        if self.run_id and self.uri.startswith("runs:"):
            return f"run {self.run_id[:8]}"
        name = self.local_dir.name if self.local_dir else self.uri.rstrip("/").rsplit("/", 1)[-1]
        return f"{name} {uuid}".strip()

    def describe(self) -> dict[str, Any]:
        """The `target.version` block of summary.json and the history: what exactly was served."""
        record: dict[str, Any] = {
            "model_uri": self.uri,
            "label": self.label,
            "registered_model": self.registered_model,
            "version": self.version or self.mlmodel.get("model_uuid"),
            "alias": self.alias,
            "run_id": self.run_id or self.mlmodel.get("run_id"),
            "model_id": self.model_id or self.mlmodel.get("model_id"),
            "model_uuid": self.mlmodel.get("model_uuid"),
            "flavors": sorted((self.mlmodel.get("flavors") or {}).keys()),
            "signature": {"inputs": self.signature_inputs, "outputs": _schema(self.mlmodel, "outputs")},
        }
        if self.tracking_uri and not self.local_dir:
            record["tracking_uri"] = _safe(self.tracking_uri)
        return record


def _schema(mlmodel: dict[str, Any], part: str) -> list[dict[str, Any]] | None:
    text = (mlmodel.get("signature") or {}).get(part)
    if not text:
        return None
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _safe(uri: str) -> str:
    """A URI without its password, for records and messages."""
    parsed = urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


def _read_mlmodel(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not an MLmodel file")
    return data


def _local_path(uri: str) -> Path | None:
    """The folder a local URI names, or None when the URI is for MLflow to fetch."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", ) or re.match(r"^[A-Za-z]:[\\/]", uri):  # a plain path (or a Windows drive)
        return Path(uri).expanduser()
    return None


def tracking_uris(tracking_uri: str | None) -> tuple[str | None, str | None, str]:
    """(tracking, registry, where they came from): the config first, then the environment, then MLflow's default."""
    if tracking_uri:  # the config names one store for both: an environment pointing elsewhere must not win
        return tracking_uri, tracking_uri, "target.tracking_uri"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, os.environ.get("MLFLOW_REGISTRY_URI") or env, "MLFLOW_TRACKING_URI"
    import mlflow

    default = mlflow.get_tracking_uri()  # MLflow's own default; reading it creates nothing
    return default, os.environ.get("MLFLOW_REGISTRY_URI") or default, "MLflow's default (no tracking URI set)"


def _store_missing(uri: str) -> str | None:
    """Why a local store URI names nothing (MLflow would create an empty store there), or None."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        database = uri.split(":///", 1)[1] if ":///" in uri else ""
        if database and database != ":memory:" and not Path(database).exists():
            return f"no SQLite tracking database at {database}"
    elif parsed.scheme in ("", "file"):
        folder = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        if not folder.is_dir():
            return f"no file tracking store at {folder}"
    return None


@contextmanager
def _using(tracking: str | None, registry: str | None) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to the model's for the duration, then restored.

    Why: in mlflow 3.17.2 `download_artifacts(..., tracking_uri=, registry_uri=)` ignores both for runs:/ and
    models:/ URIs and looks the model up in the process-wide default store (creating ./mlflow.db on the way).
    """
    from mlflow.tracking import _model_registry, _tracking_service

    tracking_mod, registry_mod = _tracking_service.utils, _model_registry.utils
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (getattr(tracking_mod, "_tracking_uri", None), getattr(registry_mod, "_registry_uri", None))
    try:
        for key, value in (("MLFLOW_TRACKING_URI", tracking), ("MLFLOW_REGISTRY_URI", registry)):
            if value:
                os.environ[key] = value
        tracking_mod._tracking_uri, registry_mod._registry_uri = tracking, registry
        yield
    finally:
        tracking_mod._tracking_uri, registry_mod._registry_uri = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _fail_fast() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _FAIL_FAST}
    for key, value in _FAIL_FAST.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def resolve(uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Pin `uri` to one model and read its metadata; raise ModelUriError naming what was tried."""
    uri = uri.strip()
    local = _local_path(uri)
    if local is not None:
        folder = local.resolve()
        tried = [f"the local folder {folder}"]
        if not folder.exists():
            raise ModelUriError(uri, "no such folder", tried)
        if not (folder / "MLmodel").is_file():
            raise ModelUriError(uri, "the folder has no MLmodel file (save the model with mlflow.<flavor>.save_model)",
                                tried)
        try:
            mlmodel = _read_mlmodel(folder / "MLmodel")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ModelUriError(uri, f"its MLmodel file cannot be read: {_first_line(exc)}", tried) from None
        return ResolvedModel(uri, artifact_uri=str(folder), mlmodel=mlmodel, local_dir=folder, tried=tried)
    return _resolve_remote(uri, tracking_uri)


def _resolve_remote(uri: str, tracking_uri: str | None) -> ResolvedModel:
    scheme = urlparse(uri).scheme
    try:
        tracking, registry, origin = tracking_uris(tracking_uri)
    except Exception as exc:  # noqa: BLE001 - an unusable MLflow setting is a refusal, not a traceback
        raise ModelUriError(uri, f"the tracking URI cannot be read: {_first_line(exc)}", []) from None
    tried = []
    if scheme in _REMOTE_SCHEMES:
        tried.append(f"tracking store {_safe(tracking or '')} ({origin})")
        if registry != tracking and scheme == "models":
            tried.append(f"model registry {_safe(registry or '')}")
        missing = _store_missing(registry if scheme == "models" else tracking)  # type: ignore[arg-type]
        if missing:
            hint = ("; set target.tracking_uri or MLFLOW_TRACKING_URI to the store the model was logged to"
                    if origin.startswith("MLflow") else "")
            raise ModelUriError(uri, missing + hint, tried)
    model = ResolvedModel(uri, artifact_uri=uri, mlmodel={}, tracking_uri=tracking, registry_uri=registry, tried=tried)
    from mlflow.exceptions import MlflowException

    with _fail_fast(), _using(tracking, registry):
        try:
            if scheme == "models":
                _pin_registered(model)
            elif scheme == "runs":
                _check_run(model)
            model.mlmodel = _fetch_mlmodel(model)
        except ModelUriError:
            raise
        except (MlflowException, OSError, ValueError) as exc:
            raise ModelUriError(uri, _first_line(exc), tried) from None
        except Exception as exc:  # noqa: BLE001 - e.g. requests errors from an unreachable server
            raise ModelUriError(uri, f"{type(exc).__name__}: {_first_line(exc)}", tried) from None
    return model


def _client(model: ResolvedModel) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=model.tracking_uri, registry_uri=model.registry_uri)


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<suffix>[^/]+)|@(?P<alias>[^/]+))?(?P<rest>/.*)?$")


def _pin_registered(model: ResolvedModel) -> None:
    """models:/name/3, models:/name@alias, models:/name/latest or /Stage, models:/m-<id>: pin to one version."""
    match = _MODELS_URI.match(model.uri)
    if not match:
        raise ModelUriError(model.uri, "not a models:/ URI MLflow knows (models:/<name>/<version> or "
                                       "models:/<name>@<alias>)", model.tried)
    name, suffix, alias, rest = match["name"], match["suffix"], match["alias"], match["rest"] or ""
    client = _client(model)
    if suffix is None and alias is None:  # models:/<logged model id>
        logged = client.get_logged_model(name)
        model.model_id, model.run_id = logged.model_id, logged.source_run_id
        return
    if alias is not None:
        mv = client.get_model_version_by_alias(name, alias)
        model.alias = alias
    elif suffix.isdigit():
        mv = client.get_model_version(name, suffix)
    elif suffix.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ModelUriError(model.uri, f"registered model {name!r} has no versions", model.tried)
        mv = max(versions, key=lambda v: int(v.version))
    else:  # a stage, deprecated in MLflow but still served by it
        latest = client.get_latest_versions(name, stages=[suffix])
        if not latest:
            raise ModelUriError(model.uri, f"registered model {name!r} has no version in stage {suffix!r}",
                                model.tried)
        mv = latest[0]
    model.registered_model, model.version = mv.name, str(mv.version)
    model.run_id, model.model_id = mv.run_id, getattr(mv, "model_id", None)
    model.artifact_uri = f"models:/{mv.name}/{mv.version}{rest}"


def _check_run(model: ResolvedModel) -> None:
    run_id = urlparse(model.uri).path.lstrip("/").split("/", 1)[0] or urlparse(model.uri).netloc
    if not run_id:
        raise ModelUriError(model.uri, "a runs:/ URI needs a run id: runs:/<run id>/<artifact path>", model.tried)
    _client(model).get_run(run_id)  # a clear 'Run ... not found' before any download
    model.run_id = run_id


def _fetch_mlmodel(model: ResolvedModel) -> dict[str, Any]:
    """Only the MLmodel file: a few hundred bytes whatever the model's size."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="nightcap-mlmodel-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=model.artifact_uri.rstrip("/") + "/MLmodel", dst_path=tmp,
                tracking_uri=model.tracking_uri, registry_uri=model.registry_uri)
        except Exception as exc:  # noqa: BLE001 - say it in the caller's terms
            raise ModelUriError(model.uri, f"no MLmodel file there ({_first_line(exc)})", model.tried) from None
        found = Path(path)
        if found.is_dir():
            found = found / "MLmodel"
        return _read_mlmodel(found)


def download(model: ResolvedModel, dst: Path) -> Path:
    """The whole model in a local folder (once per run); a local folder is returned as it is."""
    if model.local_dir is not None:
        return model.local_dir
    import mlflow.artifacts

    dst.mkdir(parents=True, exist_ok=True)
    with _using(model.tracking_uri, model.registry_uri):
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_uri, dst_path=str(dst),
                                                         tracking_uri=model.tracking_uri,
                                                         registry_uri=model.registry_uri))
    if not (path / "MLmodel").is_file():
        raise ModelUriError(model.uri, f"the download ({path}) holds no MLmodel file", model.tried)
    return path
