"""Which `Platform` a run gets, and the pod it starts with: the one place that chooses an implementation.

It imports every implementation (`platforms/local.py`, `platforms/external.py`, `kube/platform.py`), so it sits
above both packages, with the run that asks for one; they import only the seam, `platforms/base.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nightcap.config import Config
from nightcap.platforms.base import Platform, PodSpec

if TYPE_CHECKING:
    from nightcap.processes.registry import RunRegistry
    from nightcap.targets.plan import TargetPlan


def make_platform(config: Config, plan: "TargetPlan", run_id: str, out: Path,
                  registry: "RunRegistry | None") -> Platform:
    """`target.kind: url` is measured where it runs; otherwise replicas on `platform.kind`."""
    if plan.command is None:
        from nightcap.platforms.external import ExternalPlatform

        return ExternalPlatform(config)
    if config.platform.kind == "kubernetes":
        from nightcap.kube.platform import KubernetesPlatform

        return KubernetesPlatform(config, run_id, registry=registry)
    from nightcap.platforms.local import LocalPlatform

    return LocalPlatform(config, plan, run_id, out / "replicas", registry=registry)


def initial_spec(config: Config, plan: "TargetPlan") -> PodSpec:
    """The configured pod, with the target's own default concurrency when none is set."""
    p = config.platform
    return PodSpec(cpu=p.cpu, memory=p.memory, concurrency=p.concurrency or plan.default_concurrency)


def resize(platform: Platform, spec: PodSpec) -> None:
    """Give the replicas `spec`: in place when the platform can change only the CPU of running pods (the local
    platform's cgroups), else by replacing them (`set_resources`). Nothing when they have it already."""
    if getattr(platform, "spec", None) == spec:
        return
    in_place = getattr(platform, "resize_cpu_in_place", None)
    if in_place is None or not in_place(spec):
        platform.set_resources(spec)


def set_replicas(platform: Platform, replicas: int) -> None:
    """Scale to `replicas` for a stage that switches back and forth (paired windows): a scale-down parks the
    replicas taken away where the platform can (the local one keeps them running out of the Service, so the
    next scale-up costs no start); elsewhere a plain scale."""
    park = getattr(platform, "park", None)
    if park is not None and replicas < platform.replicas:
        park(replicas)
    elif platform.replicas != replicas:
        platform.scale(replicas)
