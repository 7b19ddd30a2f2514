"""`nightcap init MODEL_URI`: a commented config for one's own model, from the bundled model to one's own.

The text is written by hand (not dumped from the pydantic model) so every section keeps a comment saying
what to edit; `nightcap init` validates it with the same loader `nightcap run` uses before saying it is ready.
"""

from __future__ import annotations

import re

from nightcap.targets.mlflow_model import ResolvedModel
from nightcap.targets.payloads import NO_PAYLOAD_HINT, describe_inputs

_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def default_name(model: ResolvedModel) -> str:
    """The registered model's name, else the folder's: the identity nightly runs are compared under."""
    if model.registered_model:
        raw = model.registered_model
    elif model.local_dir is not None:
        raw = model.local_dir.name
    else:
        raw = model.uri.rstrip("/").rsplit("/", 1)[-1] or "model"
    name = _NAME.sub("-", raw).strip("-._") or "model"
    return name[:120] if name[0].isalnum() else f"m{name}"[:120]


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def payload_lines(model: ResolvedModel) -> list[str]:
    """The payload part of `target:`, saying where the bodies will come from."""
    if model.input_example:
        return ["  # payload: the model's saved input example (one request per example row).",
                "  # To send your own bodies instead, set one of:",
                "  # payload_file: payloads.jsonl   # one JSON request body per line",
                "  # payload_csv: rows.csv          # CSV rows, sent as MLflow dataframe_split"]
    if model.signature_inputs:
        return [f"  # payload: SYNTHETIC rows built from the model's signature ({describe_inputs(model.signature_inputs)});",
                "  # the model accepts them, but real rows measure real cost. Prefer one of:",
                "  # payload_file: payloads.jsonl   # one JSON request body per line",
                "  # payload_csv: rows.csv          # CSV rows, sent as MLflow dataframe_split"]
    return ["  # payload: the model has neither an input example nor a signature, so nightcap cannot tell what it",
            f"  # accepts: {NO_PAYLOAD_HINT}. Uncomment one:",
            "  # payload_file: payloads.jsonl",
            "  # payload_csv: rows.csv"]


# Everything after `target:`: the same for every model (the local platform, every stage on), so it is plain text.
LOCAL_SECTIONS = """platform:
  kind: local                # replicas are processes on this machine, under cgroup CPU/memory limits
  replicas: 1
  cpu: 1                     # cores per replica; the tune stage may pick another size
  memory: 1Gi
  concurrency: 1             # uvicorn workers per replica (`mlflow models serve -w`'s)
  ready_timeout_s: 120

load:
  workers: 2                 # generator processes for the multi-client ramp
  warmup_s: 1
  window_s: 2
  max_users: 256             # safety limit: a run that would exceed it is refused
  max_duration_s: 1800

search:
  start_users: 1
  max_users: 32
  max_windows: 2
  refine_steps: 2

slo:                         # EDIT: the latency and error rate your users accept
  p95_ms: 250
  max_error_rate: 0.01

# Every stage; drop the ones you do not need (deploy and teardown always run).
stages: [tune, single_client, multi_client, scaling, sizing, autoscale, regression]

tune:                        # pod sizes to compare; the planner measures about a third of the grid
  cpu: [0.5, 1]
  memory: [768Mi, 1Gi]
  concurrency: [1, 2, 4]
  replicas: 1

scaling:
  max_replicas: 2

sizing:                      # EDIT: the traffic to size the cluster for, and your node shape
  users: [50, 120]
  rps: [1000]
  node_allocatable_cpu: 3.92
  price_per_core_hour: 0.034
  think_time_s: 1.0

autoscale:
  target_cpu_pct: 80
  min_replicas: 1
  max_replicas: 4
  overload: 3
  sync_period_s: 2
  stabilization_s: 8
  readiness_delay_s: 2
  sample_s: 2

store:
  url: sqlite:///.nightcap/history.db
"""


def target_lines(model: ResolvedModel, name: str, tracking_uri: str | None = None) -> list[str]:
    """The `target:` section: the model's name, where it is loaded from and where its payloads come from."""
    target = [
        "target:",
        f"  name: {name}" + " " * max(1, 22 - len(name)) + "# the identity nightly runs are compared under",
        "  kind: mlflow",
        f"  model_uri: {_yaml_str(str(model.local_dir) if model.local_dir else model.uri)}   # {model.label}",
    ]
    if tracking_uri:
        target.append(f"  tracking_uri: {_yaml_str(tracking_uri)}   # where models:/ and runs:/ URIs are looked up")
    elif not model.local_dir:
        target.append("  # tracking_uri: http://127.0.0.1:5000   # else MLFLOW_TRACKING_URI is used")
    target += [
        "  path: /invocations",
        "  ready_path: /ping",
        "  startup_timeout_s: 120",
        *payload_lines(model),
    ]
    return target


def render(model: ResolvedModel, name: str, tracking_uri: str | None = None) -> str:
    """The YAML text of a capacity-check config for `model` on the local platform, every stage on."""
    header = f"""# Capacity check for {model.label}, written by `nightcap init {model.uri}`.
# Run it:  nightcap run <this file>     Check it:  nightcap validate <this file>
# Every key is described in the README's Configuration table.
"""
    return header + "\n".join(target_lines(model, name, tracking_uri)) + "\n\n" + LOCAL_SECTIONS
