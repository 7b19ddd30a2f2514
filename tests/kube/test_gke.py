"""GKE node-pool autoscaling through the real client and its REST transport, against a local fake API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gke_api import OPS, POOL, FakeGke, _enum_names, serve
from nightcap.config import GkeConfig
from nightcap.platforms.base import PlatformError
from nightcap.kube.gke import GkeNodePools


@pytest.fixture()
def fake() -> Any:
    state = FakeGke()
    state.client, stop = serve(state)
    yield state
    stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def pools(fake: FakeGke, clock: FakeClock | None = None, **kwargs: Any) -> GkeNodePools:
    gke = GkeConfig(project="p1", location="europe-west4", cluster="c1", node_pool="pool-a")
    return GkeNodePools(gke, client=fake.client, clock=clock or FakeClock(), **kwargs)


def test_set_reads_original_sends_full_name_and_polls_operation(fake: FakeGke) -> None:
    clock = FakeClock()
    np = pools(fake, clock)
    np.set_autoscaling(True, 2, 7)
    methods = [(m, p) for m, p, _ in fake.requests]
    assert methods == [
        ("GET", f"/v1/{POOL}"),
        ("POST", f"/v1/{POOL}:setAutoscaling"),
        ("GET", f"/v1/{OPS}/operation-1"),
        ("GET", f"/v1/{OPS}/operation-1"),
    ]
    body = fake.requests[1][2]  # the full resource name travels in the URL (REST mapping of `name`)
    # the stage's limits are the pool's totals: "2-7 nodes" is true however many zones the pool spans
    assert body == {"autoscaling": {"enabled": True, "totalMinNodeCount": 2, "totalMaxNodeCount": 7}}
    assert fake.autoscaling["totalMaxNodeCount"] == 7
    assert clock.sleeps == [np.poll_s, np.poll_s]  # one sleep before each poll, on the fake clock
    assert np.original_settings()["maxNodeCount"] == 3


def test_restore_writes_back_the_original_exactly_once(fake: FakeGke) -> None:
    np = pools(fake)
    np.set_autoscaling(True, 0, 10)
    np.set_autoscaling(True, 1, 12)  # a second change keeps the first original
    np.restore()
    np.restore()  # idempotent: nothing more is sent
    sets = [b for m, p, b in fake.requests if p.endswith(":setAutoscaling")]
    assert len(sets) == 3
    assert _enum_names(sets[-1]["autoscaling"]) == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3,
                                       "locationPolicy": "BALANCED"}
    assert fake.autoscaling == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3, "locationPolicy": "BALANCED"}


def test_restore_without_change_sends_nothing(fake: FakeGke) -> None:
    pools(fake).restore()
    assert fake.requests == []


def test_busy_cluster_is_retried_with_backoff(fake: FakeGke) -> None:
    fake.set_errors = [(400, "FAILED_PRECONDITION", "Cluster is running incompatible operation operation-99."),
                       (503, "UNAVAILABLE", "try again")]
    clock = FakeClock()
    np = pools(fake, clock)
    np.set_autoscaling(True, 1, 5)
    assert sum(1 for _, p, _ in fake.requests if p.endswith(":setAutoscaling")) == 3
    assert clock.sleeps[:2] == [np.backoff_initial_s, 2 * np.backoff_initial_s]
    assert fake.autoscaling["totalMaxNodeCount"] == 5


def test_a_failed_precondition_that_is_not_a_busy_cluster_is_reported_at_once(fake: FakeGke) -> None:
    """Not two minutes of retries blamed on "another cluster operation": GKE's own reason, and what to change."""
    fake.set_errors = [(400, "FAILED_PRECONDITION", "Autopilot clusters do not support node pool autoscaling changes.")]
    with pytest.raises(PlatformError) as err:
        pools(fake).set_autoscaling(True, 1, 5)
    assert "Autopilot clusters do not support" in str(err.value) and "remove autoscale.nodes" in str(err.value)
    assert "another cluster operation" not in str(err.value)
    assert sum(1 for _, p, _ in fake.requests if p.endswith(":setAutoscaling")) == 1


def test_regional_limits_are_described_per_zone_and_in_total() -> None:
    from google.cloud import container_v1

    from nightcap.kube.gke import describe

    per_zone = container_v1.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=5)
    assert describe(per_zone, 3) == "autoscaling on, 1-5 nodes per zone (3-15 over 3 zones)"
    total = container_v1.NodePoolAutoscaling(enabled=True, total_min_node_count=1, total_max_node_count=5)
    assert describe(total, 3) == "autoscaling on, 1-5 nodes in total"


def test_permission_denied_names_the_pool_and_permission(fake: FakeGke) -> None:
    fake.set_errors = [(403, "PERMISSION_DENIED", "Required 'container.clusters.update' permission")]
    with pytest.raises(PlatformError) as err:
        pools(fake).set_autoscaling(True, 1, 5)
    assert POOL in str(err.value) and "container.clusters.update" in str(err.value)
    assert sum(1 for _, p, _ in fake.requests if p.endswith(":setAutoscaling")) == 1  # not retried


def test_busy_for_too_long_gives_up_with_a_clear_message(fake: FakeGke) -> None:
    fake.set_errors = [(400, "FAILED_PRECONDITION", "another operation is in progress")] * 20
    np = pools(fake)
    np.attempts = 3
    with pytest.raises(PlatformError, match="still failed after 3 attempts"):
        np.set_autoscaling(True, 1, 5)


def test_failed_operation_is_reported(fake: FakeGke) -> None:
    fake.fail_operation = True
    with pytest.raises(PlatformError, match="quota exceeded"):
        pools(fake).set_autoscaling(True, 1, 50)


def test_restoration_after_a_failure_mid_stage(fake: FakeGke) -> None:
    """The stage fails after node autoscaling was changed; teardown's restore puts the original back."""
    np = pools(fake)

    def autoscale_stage() -> None:
        np.set_autoscaling(True, 0, 20)
        raise RuntimeError("load generator died mid-stage")

    with pytest.raises(RuntimeError):
        try:
            autoscale_stage()
        finally:
            np.restore()
    assert fake.autoscaling == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3, "locationPolicy": "BALANCED"}


def test_a_dead_runs_change_is_restored_from_the_saved_original(fake: FakeGke) -> None:
    first = pools(fake)
    first.set_autoscaling(False, 0, 0)
    saved = json.loads(json.dumps(first.original_settings()))  # what the run registry stores
    # the run dies here; a later run restores the pool from the record
    pools(fake, original=saved).restore()
    assert fake.autoscaling == {"enabled": True, "minNodeCount": 1, "maxNodeCount": 3, "locationPolicy": "BALANCED"}


def test_failed_restore_can_be_retried(fake: FakeGke) -> None:
    np = pools(fake)
    np.set_autoscaling(True, 0, 9)
    fake.set_errors = [(403, "PERMISSION_DENIED", "denied")]
    with pytest.raises(PlatformError):
        np.restore()
    np.restore()
    assert fake.autoscaling["maxNodeCount"] == 3


def test_a_pool_without_autoscaling_gets_its_size_back(fake: FakeGke) -> None:
    """Autoscaling off before the stage: the autoscaler then chose the size; restore puts back the node count."""
    fake.autoscaling = {}  # GKE shows no fields for a pool whose autoscaling was never on
    fake.locations = ["europe-west4-a", "europe-west4-b"]
    counted: list[int] = []

    def nodes_now() -> dict[str, int]:
        counted.append(1)
        return {z: fake.node_count for z in fake.locations}  # the pool's Kubernetes nodes, per zone

    np = pools(fake, zone_counts=nodes_now)
    np.set_autoscaling(True, 1, 9)
    assert counted == [1]  # counted once, before the change
    fake.node_count = 7  # the autoscaler grew the pool during the stage
    np.restore()
    posts = [(p.rsplit(":", 1)[1], b) for m, p, b in fake.requests if m == "POST"]
    assert posts[-2:] == [("setAutoscaling", {"autoscaling": {}}), ("setSize", {"nodeCount": 3})]
    assert fake.autoscaling == {} and fake.node_count == 3
    assert np.record()["zones"] == {"europe-west4-a": 3, "europe-west4-b": 3}


def test_uneven_zones_are_restored_zone_by_zone(fake: FakeGke) -> None:
    """2 + 1 nodes found: `set_node_pool_size` would make it 2 + 2; each zone's instance group is resized."""
    import requests

    fake.autoscaling = {}
    fake.locations = ["europe-west4-a", "europe-west4-b"]
    found = {"europe-west4-a": 2, "europe-west4-b": 1}
    np = pools(fake, zone_counts=lambda: dict(found), http=requests.Session())
    np.set_autoscaling(True, 1, 9)
    fake.groups = {"europe-west4-a": 4, "europe-west4-b": 4}  # the autoscaler grew both zones
    np.restore()
    assert fake.groups == found
    assert not any(p.endswith(":setSize") for _, p, _ in fake.requests)


def test_a_dead_runs_pool_size_is_restored_from_its_record(fake: FakeGke) -> None:
    from nightcap.kube.gke import restore_recorded

    fake.autoscaling = {"enabled": False}
    first = pools(fake, zone_counts=lambda: {"europe-west4-a": fake.node_count})
    first.set_autoscaling(True, 0, 10)
    record = json.loads(json.dumps(first.record()))  # what the run registry stores
    fake.node_count = 8
    restore_recorded(record, client=fake.client, clock=FakeClock())
    assert fake.node_count == 3 and not fake.autoscaling.get("enabled")


def test_an_autoscaled_pool_keeps_the_autoscalers_size(fake: FakeGke) -> None:
    np = pools(fake, zone_counts=lambda: pytest.fail("an autoscaled pool's size is the autoscaler's"))
    np.set_autoscaling(True, 0, 10)
    np.restore()
    assert not any(p.endswith(":setSize") for _, p, _ in fake.requests)


def test_a_pool_whose_size_cannot_be_read_is_not_changed(fake: FakeGke) -> None:
    fake.autoscaling = {"enabled": False}

    def unreadable() -> dict[str, int]:
        raise PlatformError("list nodes cluster-wide failed (403)")

    with pytest.raises(PlatformError, match="could not be restored"):
        pools(fake, zone_counts=unreadable).set_autoscaling(True, 1, 5)
    assert not any(m == "POST" for m, _, _ in fake.requests)
