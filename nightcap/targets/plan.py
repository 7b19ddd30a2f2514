"""From `target:` in the config to what the platform starts and what the load generator sends."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nightcap.config import Config, TargetConfig


@dataclass
class TargetPlan:
    """How to run one replica and how to talk to it."""

    command: list[str] | None  # argv with {port} and {concurrency}; None for an external URL
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    payloads: list[bytes] = field(default_factory=list)
    default_concurrency: int = 1
    version: dict[str, object] = field(default_factory=dict)  # what changes night to night, recorded per run


def _csv_payloads(path: Path, limit: int = 1000) -> list[bytes]:
    """Each CSV row becomes one MLflow-style `dataframe_split` request body."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        columns = next(reader)
        bodies = []
        for row in reader:
            values: list[object] = []
            for cell in row:
                try:
                    values.append(float(cell))
                except ValueError:
                    values.append(cell)
            bodies.append(json.dumps({"dataframe_split": {"columns": columns, "data": [values]}}).encode())
            if len(bodies) >= limit:
                break
    if not bodies:
        raise ValueError(f"target.payload_csv {path} has a header but no rows")
    return bodies


def _file_payloads(path: Path) -> list[bytes]:
    """A JSON file is one body; a .jsonl file is one body per line."""
    text = path.read_bytes()
    if path.suffix == ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    return [b" ".join(text.split(b"\n"))]


def payloads_for(target: TargetConfig) -> list[bytes]:
    if target.payload_csv:
        return _csv_payloads(Path(target.payload_csv))
    if target.payload_file:
        return _file_payloads(Path(target.payload_file))
    if target.kind == "mlflow" and not target.model_uri:
        from nightcap.targets.bundled_model import sample_payloads

        return [json.dumps(p).encode() for p in sample_payloads(64)]
    return [b'{"inputs": [[1.0, 2.0, 3.0]]}']


def plan_target(config: Config) -> TargetPlan:
    t = config.target
    payloads = payloads_for(t)
    if t.kind == "reference":
        cmd = [sys.executable, "-m", "nightcap.targets.reference_server", "--port", "{port}", "--slots", "{concurrency}",
               "--service-ms", str(t.service_ms), "--queue", str(t.queue), "--cpu-ms", str(t.cpu_ms)]
        if t.coherency_ms:
            cmd += ["--coherency-ms", str(t.coherency_ms)]
        if t.memory_mb:
            cmd += ["--memory-mb", str(t.memory_mb)]
        if t.stall_s:
            cmd += ["--stall-every-s", str(t.stall_every_s), "--stall-s", str(t.stall_s)]
        version = {"service_ms": t.service_ms, "cpu_ms": t.cpu_ms, "slots": t.slots, "queue": t.queue,
                   "coherency_ms": t.coherency_ms}
        if t.stall_s:
            version.update(stall_every_s=t.stall_every_s, stall_s=t.stall_s)
        return TargetPlan(cmd, payloads=payloads, default_concurrency=t.slots, version=version)
    if t.kind == "mlflow":
        from nightcap.targets.bundled_model import ensure_model, serve_command, serve_env

        model_dir = Path(t.model_uri) if t.model_uri else ensure_model()
        if not (model_dir / "MLmodel").exists():
            raise ValueError(f"target.model_uri {model_dir} is not an MLflow model folder (no MLmodel file)")
        version = {"model_uri": str(model_dir), "version": t.version or _model_version(model_dir)}
        return TargetPlan(serve_command(model_dir), env=serve_env(), payloads=payloads, default_concurrency=1,
                          version=version)
    if t.kind == "command":
        assert t.command
        return TargetPlan(list(t.command), payloads=payloads, default_concurrency=1,
                          version={"command": t.command[0], "version": t.version})
    return TargetPlan(None, url=t.url, payloads=payloads, version={"url": t.url, "version": t.version})


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
