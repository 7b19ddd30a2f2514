"""Which `Platform` a run gets, and the pod it starts with: the one place that chooses an implementation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nightcap.config import Config
from nightcap.platforms.base import Platform, PodSpec

if TYPE_CHECKING:
    from nightcap.run.registry import RunRegistry
    from nightcap.targets.plan import TargetPlan


def make_platform(config: Config, plan: "TargetPlan", run_id: str, out: Path,
                  registry: "RunRegistry | None") -> Platform:
    """`target.kind: url` is measured where it runs; otherwise replicas on `platform.kind`."""
    if plan.command is None:
        from nightcap.platforms.external import ExternalPlatform

        return ExternalPlatform(config)
    if config.platform.kind == "kubernetes":
        from nightcap.platforms.kubernetes import KubernetesPlatform

        return KubernetesPlatform(config, run_id, registry=registry)
    from nightcap.platforms.local import LocalPlatform

    return LocalPlatform(config, plan, run_id, out / "replicas", registry=registry)


def initial_spec(config: Config, plan: "TargetPlan") -> PodSpec:
    """The configured pod, with the target's own default concurrency when none is set."""
    p = config.platform
    return PodSpec(cpu=p.cpu, memory=p.memory, concurrency=p.concurrency or plan.default_concurrency)
