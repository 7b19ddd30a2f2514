"""Start the load generator `load.generator` asks for: pods in the cluster, or processes on this machine.

Apart from `base.py` because it imports both implementations, which import `base.py` themselves. Each is
imported when chosen: a local run does not pay for the Kubernetes client's import.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightcap.config import Config
from nightcap.load.base import Generator, GeneratorError
from nightcap.locust_env import locust_source_texts
from nightcap.platforms.base import Platform

if TYPE_CHECKING:
    from nightcap.processes.registry import RunRegistry


def start_generator(config: Config, run_id: str, workers: int, payloads: list[bytes], api_key: str | None,
                    platform: Platform | None, registry: "RunRegistry | None", logdir: Path) -> Generator:
    """Locust master + workers where `load.generator` says: pods in the cluster, or local processes.

    In the cluster they reuse the platform's API client (same credentials, same namespace, same run labels),
    and send to the Service's DNS name; local processes send to `platform.service_url`. A generator that
    fails to start is stopped before the error propagates (pods created, processes spawned), as a
    `GeneratorError`.
    """
    t = config.target
    gen: Any
    if config.generator_site == "cluster":
        from nightcap.load.kubernetes import KubernetesLocust

        api = getattr(getattr(platform, "kube", None), "api", None)
        gen = KubernetesLocust(config, run_id, api_client=api, payloads=payloads, api_key=api_key,
                               locust_sources=locust_source_texts(), workers=workers,
                               clock=getattr(platform, "clock", time))
    else:
        from nightcap.load.local import LocalLocust

        gen = LocalLocust(workers, payloads, t.path, t.method, t.headers, t.request_timeout_s,
                          config.load.reconnect_s, api_key=api_key, registry=registry, logdir=logdir,
                          worker_cpu=config.load.worker_cpu, key_source_var=t.api_key_env)
    try:
        gen.start()
    except BaseException as exc:
        try:
            gen.stop()
        except Exception as stop_exc:
            logging.getLogger(__name__).warning("cleaning up the load generator that failed to start: %s", stop_exc)
        if isinstance(exc, Exception) and not isinstance(exc, GeneratorError):
            raise GeneratorError(f"the load generator did not start ({config.generator_site}): {exc}") from exc
        raise
    return gen
