"""What a night writes to MLflow, taken from summary.json and the config alone: the tags on the model version,
and the night's MLflow run (metrics, params, tags).

Pure (no MLflow import: tests/test_layering.py holds it), so the mapping is tested in milliseconds; the client
calls are in `publish_mlflow.py`. Every figure is read from summary.json's keys (`READS`, held against
tests/golden/summary_keys.json), never recomputed. The names are a contract: docs/contracts.md#mlflow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from nightcap.analysis.regression_result import OK, REGRESSED
from nightcap.quantities import format_cpu, format_memory
from nightcap.results.redact import config_dump
from nightcap.results.summary import headline_figures

if TYPE_CHECKING:
    from nightcap.config import Config

TRACKED_SCHEMES = ("runs:", "models:")  # URIs that name a model on a tracking server (or store)
INCONCLUSIVE = "inconclusive"

# the tags on the model version, in the order docs/contracts.md lists them
RPS_PER_POD, POD, OPERATING_RPS, P95_AT_OPERATING = ("nightcap.rps_per_pod", "nightcap.pod", "nightcap.operating_rps",
                                                      "nightcap.p95_ms_at_operating")
CHECKED_AT, VERDICT, RUN_ID = "nightcap.checked_at", "nightcap.verdict", "nightcap.run_id"
VERSION_TAGS = (RPS_PER_POD, POD, OPERATING_RPS, P95_AT_OPERATING, CHECKED_AT, VERDICT, RUN_ID)

# the night's run: its tags beside VERDICT and RUN_ID
TARGET, STATUS, MODEL_URI, MODEL_NAME, MODEL_VERSION, CONFIG_HASH = (
    "nightcap.target", "nightcap.status", "nightcap.model_uri", "nightcap.model_name", "nightcap.model_version",
    "nightcap.config_hash")

# metric -> (figure key, interval key) in summary.json; an interval is logged as <metric>_low / <metric>_high
INTERVALS: dict[str, tuple[str, str]] = {
    "saturation_rps": ("saturation.rps", "saturation.rps_ci"),
    "operating_rps": ("operating_point.rps", "operating_point.rps_ci"),
    "p95_at_operating_ms": ("operating_point.p95_ms", "operating_point.p95_ci"),
    "slo_rps": ("slo_capacity.rps", "slo_capacity.rps_ci"),
    "rps_per_pod": ("capacity.per_pod.rps", "capacity.per_pod.ci"),
    "slo_rate_rps": ("slo_capacity.rate_rps", "slo_capacity.rate_rps_interval"),
    "canary_rps_per_core": ("canary.rps_per_core", "canary.rps_ci"),
}
# every summary.json key read here (tests/results/test_publish_mlflow.py holds them against the golden key list)
READS = ("run_id", "status", "verdict", "answer", "config_hash", "target.name", "saturation.inconclusive",
         "capacity.per_pod.pod", "platform.cpu", "platform.memory", "platform.concurrency", "regression.verdict",
         *(k for pair in INTERVALS.values() for k in pair))

MAX_PARAM_VALUE = 6000  # MLflow 3's limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MAX_TAG_VALUE = 8000  # a run tag's (MAX_TAG_VAL_LENGTH)
MAX_KEY = 250
_KEY_CHARS = re.compile(r"[^\w./\- :]")  # what MLflow accepts in a param, metric or tag name


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: what the version tags are set on."""

    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def tracked(model_uri: str | None) -> bool:
    """True when the URI names a model a tracking server holds (`runs:/`, `models:/`), not a local folder."""
    return bool(model_uri) and model_uri.strip().startswith(TRACKED_SCHEMES)  # type: ignore[union-attr]


def publishes(config: "Config") -> bool:
    """Whether the night is published to MLflow: `publish.mlflow` on and a tracked `target.model_uri`."""
    return config.publish.mlflow and config.target.kind == "mlflow" and tracked(config.target.model_uri)


def experiment_name(config: "Config") -> str:
    return config.publish.mlflow_experiment or f"nightcap/{config.target.name}"


def get(summary: Mapping[str, Any], dotted: str) -> Any:
    """summary.json's value at a dotted key, None where any part is missing."""
    node: Any = summary
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def night_verdict(summary: Mapping[str, Any]) -> str:
    """ok / regressed from the regression check; inconclusive when it gave neither or the night did not complete."""
    if summary.get("status") != "completed" or summary.get("verdict") == "failed":
        return INCONCLUSIVE
    verdict = get(summary, "regression.verdict")
    return verdict if verdict in (OK, REGRESSED) else INCONCLUSIVE


def pod_label(pod: Mapping[str, Any] | None) -> str:
    """`cpu=1 memory=1Gi concurrency=2`, in the units manifests use (no limit: `unlimited`)."""
    pod = pod or {}
    cpu, memory, concurrency = pod.get("cpu"), pod.get("memory"), pod.get("concurrency")
    return (f"cpu={format_cpu(cpu) if cpu else 'unlimited'} memory={format_memory(memory)} "
            f"concurrency={concurrency if concurrency is not None else 'default'}")


def _figures_count(summary: Mapping[str, Any]) -> bool:
    """False when tonight's headline is inconclusive: the history records none of its figures, nor does MLflow."""
    return not get(summary, "saturation.inconclusive")


def _text(value: Any) -> str:
    """A tag or param value: the number as summary.json has it; '' for none (on a version tag: tonight has no such
    figure, and an older night's must not stay beside tonight's checked_at)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def version_tags(summary: Mapping[str, Any], checked_at: datetime) -> dict[str, str]:
    """The tags set on the model version: tonight's answer on the page people already read."""
    counts = _figures_count(summary)
    head = headline_figures(dict(summary)) if counts else {}
    pod = get(summary, "capacity.per_pod.pod") or {k: get(summary, f"platform.{k}")
                                                     for k in ("cpu", "memory", "concurrency")}
    return {
        RPS_PER_POD: _text(get(summary, "capacity.per_pod.rps") if counts else None),
        POD: pod_label(pod),
        OPERATING_RPS: _text(head.get("operating_rps")),
        P95_AT_OPERATING: _text(head.get("p95_at_operating_ms")),
        CHECKED_AT: checked_at.isoformat(timespec="seconds"),
        VERDICT: night_verdict(summary),
        RUN_ID: str(summary.get("run_id") or ""),
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures (names: nightcap.analysis.figures) and the intervals summary.json gives them."""
    if not _figures_count(summary):  # the canary is measured apart from the model: it still counts
        out: dict[str, float] = {}
        names = ["canary_rps_per_core"]
    else:
        out = {k: float(v) for k, v in headline_figures(dict(summary)).items() if _number(v) is not None}
        names = list(INTERVALS)
    for name in names:
        figure_key, interval_key = INTERVALS[name]
        value = _number(get(summary, figure_key))
        if value is not None:
            out[name] = value
        interval = get(summary, interval_key)
        if isinstance(interval, (list, tuple)) and len(interval) == 2:
            for suffix, bound in zip(("_low", "_high"), interval):
                if _number(bound) is not None:
                    out[name + suffix] = float(bound)
    return out


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys (`slo.p95_ms`); lists as JSON; unset (None) settings left out."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = _key(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
        elif value is None or (isinstance(value, Mapping) and not value):
            continue
        else:
            text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else _text(value)
            out[name] = text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 1] + "…"
    return out


def _key(name: str) -> str:
    return _KEY_CHARS.sub("_", name)[:MAX_KEY]


def params(config: "Config", redact: Iterable[str] = ()) -> dict[str, str]:
    """The config as the history stores it (headers, passwords and secret-looking keys masked), flattened."""
    return flat_params(config_dump(config, redact))


def run_tags(summary: Mapping[str, Any], model_uri: str, version: ModelVersionRef | None) -> dict[str, str]:
    """The night's MLflow run: which model and night it measured, and how the night ended."""
    tags = {
        RUN_ID: str(summary.get("run_id") or ""),
        TARGET: str(get(summary, "target.name") or ""),
        STATUS: str(summary.get("status") or ""),
        VERDICT: night_verdict(summary),
        MODEL_URI: model_uri,
        CONFIG_HASH: str(summary.get("config_hash") or ""),
        "mlflow.runName": f"{get(summary, 'target.name')} {summary.get('run_id')}",
        "mlflow.note.content": str(summary.get("answer") or ""),
    }
    if version is not None:
        tags.update({MODEL_NAME: version.name, MODEL_VERSION: version.version})
    return {k: v[:MAX_TAG_VALUE] for k, v in tags.items() if v != ""}


def run_status(summary: Mapping[str, Any]) -> str:
    """The MLflow run's end: FINISHED for a completed night (whatever its verdict), FAILED otherwise."""
    return "FINISHED" if summary.get("status") == "completed" else "FAILED"
