"""A node pool's size per zone, put back through the Compute Engine API (`instanceGroupManagers.resize`).

GKE's `set_node_pool_size` gives every zone of a pool the same count, so a pool found with uneven zones (2, 2,
1 after a stock-out) cannot be restored through it. Each zone of a pool is one managed instance group (the
NodePool's `instance_group_urls`); resizing each one to its recorded size restores the pool as found. The
credentials need `compute.instanceGroupManagers.update` on the project (roles/container.clusterAdmin does not
include it; roles/compute.instanceAdmin.v1 does).
"""

from __future__ import annotations

import re
from typing import Any

from nightcap.platforms.base import PlatformError

CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_ZONE = re.compile(r"/zones/([^/]+)/instanceGroup")


def session(http: Any = None) -> Any:
    """An authorized requests session (Application Default Credentials: gcloud login or Workload Identity)."""
    if http is not None:
        return http
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=[CLOUD_SCOPE])
    return AuthorizedSession(credentials)


def resize_groups(pool: str, groups: list[str], zones: dict[str, int], http: Any, clock: Any, poll_s: float,
                  timeout_s: float) -> None:
    """Resize each zone's instance group of `pool` to `zones[zone]` and wait for each operation."""
    by_zone = {m.group(1): url for url in groups if (m := _ZONE.search(url))}
    missing = sorted(set(zones) - set(by_zone))
    if missing:
        raise PlatformError(f"node pool {pool} has no instance group in zone(s) {', '.join(missing)} any more, so its "
                            f"size per zone ({zones}) could not be restored: resize it by hand")
    http = session(http)
    for zone, count in sorted(zones.items()):
        url = by_zone[zone].replace("/instanceGroups/", "/instanceGroupManagers/")
        answer = http.post(f"{url}/resize", params={"size": count}, timeout=60)
        if answer.status_code >= 400:
            raise PlatformError(f"resize of node pool {pool} in zone {zone} to {count} node(s) failed "
                                f"({answer.status_code}): {answer.text[:300]}; the credentials need "
                                "compute.instanceGroupManagers.update (roles/compute.instanceAdmin.v1)")
        _wait(http, answer.json(), f"resize of node pool {pool} in zone {zone}", clock, poll_s, timeout_s)


def _wait(http: Any, operation: dict[str, Any], what: str, clock: Any, poll_s: float, timeout_s: float) -> None:
    deadline = clock.monotonic() + timeout_s
    while operation.get("status") != "DONE":
        if clock.monotonic() >= deadline:
            raise PlatformError(f"{what}: operation {operation.get('name')} not done after {timeout_s:.0f}s")
        clock.sleep(poll_s)
        answer = http.get(operation["selfLink"], timeout=60)
        if answer.status_code >= 400:
            raise PlatformError(f"{what}: reading operation {operation.get('name')} failed ({answer.status_code})")
        operation = answer.json()
    errors = (operation.get("error") or {}).get("errors") or []
    if errors:
        raise PlatformError(f"{what} failed: {'; '.join(str(e.get('message')) for e in errors)}")
