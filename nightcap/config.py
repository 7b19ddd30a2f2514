"""One validated object that flows through every stage.

Configs are YAML files validated into `Config` (its sections: `nightcap.config_sections`,
`nightcap.config_history`). Unknown keys are errors, every problem is reported at once with its YAML path,
and nothing starts until the whole file is valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from nightcap.config_history import CanaryConfig, PublishConfig, RegressionConfig, RetentionConfig, StoreConfig
from nightcap.config_sections import (
    KUBERNETES_WARMUP_S,
    KUBERNETES_WINDOW_S,
    AutoscaleConfig,
    AutoscalePhase,
    GkeConfig,
    KubernetesConfig,
    LoadConfig,
    PlatformConfig,
    ScalingConfig,
    SearchConfig,
    SizingConfig,
    SloConfig,
    Strict,
    TargetConfig,
    TuneConfig,
)

# the sections are re-exported: `from nightcap.config import SloConfig` is how the rest of the code reads them
__all__ = ["AutoscaleConfig", "AutoscalePhase", "CanaryConfig", "Config", "ConfigError", "GkeConfig",
           "KubernetesConfig", "KUBERNETES_WARMUP_S", "KUBERNETES_WINDOW_S", "LoadConfig", "PlatformConfig",
           "RegressionConfig", "RetentionConfig",
           "STAGE_NAMES", "ScalingConfig", "SearchConfig", "SizingConfig", "SloConfig", "StoreConfig", "PublishConfig",
           "TargetConfig", "TuneConfig", "apply_override", "load_config", "parse_yaml", "validate"]

STAGE_NAMES = ("tune", "single_client", "multi_client", "scaling", "sizing", "autoscale", "regression")
StageName = Literal["tune", "single_client", "multi_client", "scaling", "sizing", "autoscale", "regression"]
# Stages that read an earlier stage's results: any one of the listed stages gives them what they need.
STAGE_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "sizing": (("single_client", "multi_client"), "the latency at the operating point"),
    "autoscale": (("scaling", "single_client", "multi_client"), "one pod's saturation point"),
    "regression": (("tune", "single_client", "multi_client"), "tonight's saturation point"),
}

MAX_CONFIG_BYTES = 1_000_000


class Config(Strict):
    target: TargetConfig
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    slo: SloConfig
    stages: list[StageName] = Field(default_factory=lambda: ["single_client"])
    tune: TuneConfig = Field(default_factory=TuneConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    sizing: SizingConfig = Field(default_factory=SizingConfig)
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @model_validator(mode="before")
    @classmethod
    def _kubernetes_windows(cls, data: Any) -> Any:
        """Windows long enough for metrics-server on Kubernetes, unless the config sets them."""
        platform, load = (data.get("platform"), data.get("load", {})) if isinstance(data, dict) else (None, None)
        if isinstance(platform, dict) and platform.get("kind") == "kubernetes" and isinstance(load, dict):
            data = {**data, "load": {"window_s": KUBERNETES_WINDOW_S, "warmup_s": KUBERNETES_WARMUP_S, **load}}
        return data

    @field_validator("stages")
    @classmethod
    def _ordered_unique(cls, stages: list[str]) -> list[str]:
        if len(set(stages)) != len(stages):
            raise ValueError("stages must not repeat a stage")
        for stage, (givers, what) in STAGE_NEEDS.items():
            if stage in stages and not set(givers) & set(stages):
                names = ", ".join(repr(g) for g in givers[:-1]) + f" or {givers[-1]!r}"
                raise ValueError(f"stage {stage!r} needs {what} from stage {names}, and none of them is in "
                                 f"stages; add one of them to stages, or remove {stage!r}")
        return sorted(stages, key=STAGE_NAMES.index)

    @model_validator(mode="after")
    def _safety(self) -> "Config":
        if self.search.max_users > self.load.max_users:
            raise ValueError(
                f"search.max_users ({self.search.max_users}) exceeds the safety limit load.max_users "
                f"({self.load.max_users}); lower the first or raise the second"
            )
        if self.platform.kind == "kubernetes" and self.target.model_uri and not self.target.image:
            # the URI is resolved on this machine (payload, version); a cluster pod cannot serve a local download
            raise ValueError(
                f"target.model_uri {self.target.model_uri!r} cannot be served from a cluster pod by itself: build an "
                f"image that serves it (`mlflow models build-docker -m {self.target.model_uri} -n IMAGE`, pushed "
                "where the nodes pull from) and set target.image to it; target.model_uri then gives the payload and "
                "the version recorded")
        if self.platform.kind == "kubernetes" and self.target.kind in ("reference", "mlflow", "command") and not self.target.image:
            raise ValueError("platform.kind 'kubernetes' needs target.image (the container image to deploy)")
        if self.platform.kind == "local" and self.load.generator == "cluster":
            raise ValueError("load.generator 'cluster' needs platform.kind 'kubernetes'; use 'local' (or leave it unset)")
        return self

    @property
    def generator_site(self) -> Literal["cluster", "local"]:
        """Where load is generated: load.generator, or the platform's default (cluster on kubernetes)."""
        return self.load.generator or ("cluster" if self.platform.kind == "kubernetes" else "local")

    def identity(self) -> dict[str, Any]:
        """What makes two runs comparable: target name, platform and load settings (not the model version)."""
        return {
            "target": self.target.name,
            "platform": self.platform.kind,
            "load": self._load_identity(),
            "search": _without_added_defaults(self.search.model_dump(exclude={"warm_start"}), SearchConfig()),
            "slo": self.slo.model_dump(),
        }

    def _load_identity(self) -> dict[str, Any]:
        # the generator's site counts only when it is not the platform's default, so configs written before
        # load.generator existed keep their hash (and their history)
        load = self.load.model_dump(exclude={"max_users", "max_rps", "max_duration_s", "locust_image", "generator"})
        load = _without_added_defaults(load, LoadConfig())
        # the arrivals' spacing changes what p95_at_operating_ms means, and the history tells nights apart by that
        # (nightcap.results.meanings), not by the comparison key: every night keeps the key it had before
        load["arrivals"] = "constant"
        default = "cluster" if self.platform.kind == "kubernetes" else "local"
        if self.generator_site != default:
            load["generator"] = self.generator_site
        return load

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# keys added to the sections the comparison key reads after that key was first written: at their defaults they
# are left out, so a history keeps its nights across an upgrade that only adds settings
ADDED_TO_IDENTITY = {"confirm_windows", "confirm_max_windows", "pairs", "verify_windows"}


def _without_added_defaults(values: dict[str, Any], defaults: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not (k in ADDED_TO_IDENTITY and v == getattr(defaults, k))}


class ConfigError(Exception):
    """Every problem in a config, each with its YAML path and what is allowed."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s), nothing was started:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item).startswith("function-") or item in ("constrained-float", "constrained-int"):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    where = _loc(error["loc"])
    kind = error["type"]
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{where}: unknown key (check the spelling; see configs/ for every allowed key)"
    if kind == "missing":
        return f"{where}: required, but missing"
    if kind == "literal_error":
        return f"{where}: {msg} (got {error.get('input')!r})"
    got = repr(error.get("input"))
    got = got if len(got) <= 80 else got[:60] + f"... ({len(got)} characters)"
    return f"{where}: {msg} (got {got})" if "input" in error and not isinstance(error.get("input"), dict) else f"{where}: {msg}"


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases, so a YAML bomb cannot expand in memory."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in nightcap configs", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str, source: str = "config") -> Any:
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([f"the file is {len(text)} bytes; configs are limited to {MAX_CONFIG_BYTES}"], source)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - safe loader without aliases
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from None
    except RecursionError:
        raise ConfigError(["the YAML is nested too deeply to be a config"], source) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError([f"a value cannot be read: {exc}"], source) from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value`; the value is parsed as YAML (`stages=["tune"]`)."""
    if "=" not in assignment:
        raise ConfigError([f"--set {assignment!r}: expected dotted.key=value"], "--set")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError([f"--set {assignment!r}: the key has an empty part"], "--set")
    value = parse_yaml(raw, "--set") if raw.strip() else ""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError([f"--set {key}: {part!r} is not a section"], "--set")
        node = child
    node[parts[-1]] = value


def validate(data: Any, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of sections (target, slo, stages, ...)"], source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors(include_url=False)], source) from None
    except (OverflowError, RecursionError, TypeError, ValueError) as exc:
        raise ConfigError([f"value cannot be used: {exc}"], source) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # refuse before reading it into memory
            raise ConfigError([f"the file is {size} bytes; configs are limited to {MAX_CONFIG_BYTES}"], str(path))
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], str(path)) from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of sections (target, slo, stages, ...)"], str(path))
    for assignment in overrides or []:
        apply_override(data, assignment)
    return validate(data, str(path))
