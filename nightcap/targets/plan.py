"""From `target:` in the config to what the platform starts and what the load generator sends."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, PrivateAttr

from nightcap.config import Config, ConfigError, TargetConfig
from nightcap.targets.mlflow_model import ModelUriError, ResolvedModel, download, resolve
from nightcap.targets.payloads import (
    GENERIC_BODY,
    PayloadError,
    Payloads,
    csv_bodies,
    file_bodies,
    model_payloads,
    payload_plan_source,
)


@dataclass
class TargetPlan:
    """How to run one replica and how to talk to it."""

    command: list[str] | None  # argv with {port} and {concurrency}; None for an external URL
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    payloads: list[bytes] = field(default_factory=list)
    default_concurrency: int = 1
    version: dict[str, object] = field(default_factory=dict)  # what changes night to night, recorded per run
    payload_source: str = "configured"  # where the bodies came from, for the report
    payload_synthetic: bool = False  # invented from a signature: the report says so
    payload_option: str = "target.payload_file"  # the setting to name when the target refuses the bodies
    downloaded: Path | None = None  # the model fetched for this run; removed when the run ends
    model: ResolvedModel | None = None  # target.model_uri pinned at resolve: where the night's answer is published


def payloads_for(target: TargetConfig) -> list[bytes]:
    """The bodies the config names: a CSV, a JSON(-lines) file, the bundled model's rows, else a generic one."""
    return _configured(target).bodies


def _configured(target: TargetConfig) -> Payloads:
    if target.payload_csv:
        return Payloads(csv_bodies(Path(target.payload_csv)), f"target.payload_csv {target.payload_csv}")
    if target.payload_file:
        return Payloads(file_bodies(Path(target.payload_file)), f"target.payload_file {target.payload_file}")
    if target.kind == "mlflow" and not target.model_uri:
        from nightcap.targets.bundled_model import sample_payloads

        return Payloads([json.dumps(p).encode() for p in sample_payloads(64)], "the bundled model's wine rows")
    if target.kind == "reference":
        return Payloads([GENERIC_BODY], "any body (the reference server does not read it)")
    return Payloads([GENERIC_BODY], "a generic JSON body (set target.payload_file to send the target's own)")


def check_target(config: Config) -> ResolvedModel | None:
    """Refuse, before anything starts, a model URI that resolves to nothing or a model nothing can be sent to;
    the model it pinned (None without a model URI), for `plan_target` to download that very one.

    Reads only metadata (the MLmodel file and the registry record): milliseconds against a local store.
    """
    t = config.target
    for key, value in (("target.payload_file", t.payload_file), ("target.payload_csv", t.payload_csv)):
        if value and not Path(value).is_file():
            raise ConfigError([f"{key}: no such file {value!r} (relative paths are from {Path.cwd()})"], "target")
    if t.kind != "mlflow" or not t.model_uri:
        return None
    try:
        model = resolve(t.model_uri, t.tracking_uri)
        if not (t.payload_file or t.payload_csv):
            payload_plan_source(model.input_example, model.signature_inputs)
    except ModelUriError as exc:
        raise ConfigError([str(exc)], "target") from None
    except PayloadError as exc:
        raise ConfigError([f"target.model_uri {t.model_uri!r}: {exc}"], "target") from None
    return model


class CheckedConfig(BaseModel):
    """A config `nightcap run` validated, with the model it pinned: the flow takes both as they are.

    Prefect records flow parameters with `jsonable_encoder`, which serializes a model's fields only: the UI shows
    the config's path and target; the config and the pinned model are private attributes, so the flow neither
    parses the YAML nor resolves the model URI again (a 'latest' that moved meanwhile would be another model).
    Without them (the parameters read back from Prefect's API), the flow loads `path` as a deployment run does.
    """

    model_config = ConfigDict(frozen=True)
    path: str
    target: str
    _config: Config | None = PrivateAttr(default=None)
    _model: ResolvedModel | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, path: str | Path, config: Config, model: ResolvedModel | None) -> "CheckedConfig":
        checked = cls(path=str(path), target=config.target.name)
        checked._config, checked._model = config, model
        return checked

    @property
    def config(self) -> Config | None:
        return self._config

    @property
    def model(self) -> ResolvedModel | None:
        return self._model


MODELS_ROOT = Path(".nightcap") / "models"
OWNER_FILE = ".owner-pid"


def plan_target(config: Config, workdir: Path | None = None, model: ResolvedModel | None = None) -> TargetPlan:
    """What to start and what to send. A model URI is downloaded here, once per run, into `workdir` (default: a
    fresh folder under .nightcap/models/): `model` as `check_target` pinned it, else resolved here."""
    t = config.target
    if t.kind == "mlflow" and t.model_uri:
        plan = _plan_model(config, workdir, model)
    else:
        payloads = _configured(t)
        plan = _plan_kind(config)
        plan.payloads, plan.payload_source, plan.payload_option = payloads.bodies, payloads.source, payloads.option
    if config.platform.kind == "kubernetes" and t.kind in ("mlflow", "command") and t.image:
        plan.version["image"] = t.image  # what the pods ran: the model URI only says which model it should serve
    return plan


def _plan_kind(config: Config) -> TargetPlan:
    t = config.target
    if t.kind == "reference":
        cmd = [sys.executable, "-m", "nightcap.targets.reference_server", "--port", "{port}", "--slots", "{concurrency}",
               "--service-ms", str(t.service_ms), "--queue", str(t.queue), "--cpu-ms", str(t.cpu_ms)]
        if t.coherency_ms:
            cmd += ["--coherency-ms", str(t.coherency_ms)]
        if t.memory_mb:
            cmd += ["--memory-mb", str(t.memory_mb)]
        if t.stall_s:
            cmd += ["--stall-every-s", str(t.stall_every_s), "--stall-s", str(t.stall_s)]
        if t.work_kb:
            cmd += ["--work-kb", str(t.work_kb)]
        version = {"service_ms": t.service_ms, "cpu_ms": t.cpu_ms, "slots": t.slots, "queue": t.queue,
                   "coherency_ms": t.coherency_ms}
        if t.work_kb:
            version["work_kb"] = t.work_kb
        if t.stall_s:
            version.update(stall_every_s=t.stall_every_s, stall_s=t.stall_s)
        return TargetPlan(cmd, default_concurrency=t.slots, version=version)
    if t.kind == "mlflow":
        from nightcap.targets.bundled_model import ensure_model, serve_command, serve_env

        model_dir = ensure_model()
        version = {"model_uri": str(model_dir), "version": t.version or _model_version(model_dir)}
        return TargetPlan(serve_command(model_dir), env=serve_env(model_dir), default_concurrency=1, version=version)
    if t.kind == "command":
        assert t.command
        return TargetPlan(list(t.command), default_concurrency=1, version={"command": t.command[0], "version": t.version})
    return TargetPlan(None, url=t.url, version={"url": t.url, "version": t.version})


def _plan_model(config: Config, workdir: Path | None, model: ResolvedModel | None) -> TargetPlan:
    """One's own model: download it once, and take its payload from the config or the model."""
    from nightcap.targets.bundled_model import serve_command, serve_env

    t = config.target
    assert t.model_uri
    if model is None or model.uri != t.model_uri.strip():
        model = resolve(t.model_uri, t.tracking_uri)
    downloaded = None
    if model.local_dir is None:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="run-", dir=_models_root()))
            (workdir / OWNER_FILE).write_text(str(os.getpid()))  # `reap_orphan_models` frees it if we die
        downloaded = workdir
    try:
        model_dir = download(model, workdir or Path("."))
        payloads = (_configured(t) if t.payload_file or t.payload_csv
                    else model_payloads(model_dir, model.input_example, model.signature_inputs))
    except BaseException:
        if downloaded is not None:
            shutil.rmtree(downloaded, ignore_errors=True)
        raise
    version = model.describe()
    if t.version:
        version["version"] = t.version
    return TargetPlan(serve_command(model_dir), env=serve_env(model_dir), payloads=payloads.bodies, default_concurrency=1,
                      version=version, payload_source=payloads.source, payload_synthetic=payloads.synthetic,
                      payload_option=payloads.option, downloaded=downloaded, model=model)


def _models_root() -> Path:
    root = MODELS_ROOT
    root.mkdir(parents=True, exist_ok=True)
    return root


def reap_orphan_models(root: Path | None = None) -> list[str]:
    """Remove downloaded models whose run died without `release` (SIGKILL, a lost machine): one line each.

    Each download folder holds its owner's pid; a folder whose owner is gone is freed. A live run's is kept.
    """
    root = root or MODELS_ROOT
    done: list[str] = []
    for folder in sorted(root.glob("run-*")) if root.is_dir() else []:
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours (or still being created): never guess
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed the model a dead run downloaded ({folder}, pid {pid})")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release(plan: TargetPlan) -> None:
    """Remove the model this run downloaded (a local folder is never touched)."""
    if plan.downloaded is not None:
        shutil.rmtree(plan.downloaded, ignore_errors=True)
        plan.downloaded = None


def _model_version(model_dir: Path) -> str | None:
    try:
        for line in (model_dir / "MLmodel").read_text().splitlines():
            if line.startswith("model_uuid:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def api_key(target: TargetConfig) -> str | None:
    """The key, from the environment or a Prefect Secret block; held in memory only."""
    if target.api_key_env:
        value = os.environ.get(target.api_key_env)
        if not value:
            raise ValueError(f"target.api_key_env names {target.api_key_env}, but that environment variable is not set")
        return value
    if target.api_key_secret_block:
        from prefect.blocks.system import Secret

        return Secret.load(target.api_key_secret_block).get()
    return None
