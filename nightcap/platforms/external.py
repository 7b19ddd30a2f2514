"""A target nightcap does not run (`target.kind: url`): load goes to its URL; nothing is deployed or scaled.

It can only be observed from outside, so steps carry no per-replica CPU or memory, and the report says
the platform's limits were not enforced.
"""

from __future__ import annotations

from nightcap.config import Config
from nightcap.platforms.base import AutoscaleStatus, HpaSpec, Observation, PlatformError, PodSpec


class ExternalPlatform:
    kind = "external"
    limits_enforced = False
    limits_note = "limits not enforced: target.kind 'url' is measured as it runs (nightcap neither starts nor sizes it)"

    def __init__(self, config: Config):
        assert config.target.url
        self.config = config
        self._spec: PodSpec | None = None

    @property
    def service_url(self) -> str:
        return str(self.config.target.url).rstrip("/")

    @property
    def replicas(self) -> int:
        return 1

    @property
    def spec(self) -> PodSpec | None:
        return self._spec

    def deploy(self, spec: PodSpec, replicas: int) -> None:
        self._spec = spec  # nothing to start; a target that hangs or fails shows in the measured steps

    def scale(self, replicas: int, wait: bool = True) -> None:
        if replicas != 1:
            raise PlatformError("target.kind 'url' cannot be scaled by nightcap; drop the scaling/autoscale stages")

    def set_resources(self, spec: PodSpec) -> None:
        raise PlatformError("target.kind 'url' cannot be resized by nightcap; drop the tune stage")

    def observe(self) -> Observation:
        return Observation(metrics_available=False)

    def enable_autoscaling(self, hpa: HpaSpec) -> None:
        raise PlatformError("target.kind 'url' cannot be autoscaled by nightcap; drop the autoscale stage")

    def autoscaling_status(self) -> AutoscaleStatus:
        return AutoscaleStatus(current_replicas=1, desired_replicas=1, ready_replicas=1)

    def disable_autoscaling(self) -> None:
        pass

    def teardown(self) -> None:
        pass
