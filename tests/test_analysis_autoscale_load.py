"""The autoscale stage's load plan: default phases long enough for the controller, and users paced to a rate."""

from __future__ import annotations

import pytest

from nightcap.analysis.autoscale_load import default_phases, node_pool_note, offered_load
from nightcap.config import AutoscaleConfig


def test_default_phases_hold_long_enough_for_the_controller_to_act() -> None:
    a = AutoscaleConfig(sync_period_s=15, readiness_delay_s=30, stabilization_s=300, overload=3.0)
    base, over, down = default_phases(a, headroom=0.7)
    assert [p.name for p in (base, over, down)] == ["baseline", "overload", "recovery"]
    assert (base.load, over.load, down.load) == (0.7, 3.0, 0.7)
    assert base.duration_s == 45  # three sync periods
    assert over.duration_s == 120  # max(8 sync periods, readiness delay + 4 sync periods)
    assert down.duration_s == 360  # stabilization + 4 sync periods
    quick = default_phases(AutoscaleConfig(sync_period_s=1, readiness_delay_s=10, stabilization_s=5), 0.5)
    assert quick[1].duration_s == 14 and quick[2].duration_s == 9


def test_offered_load_paces_enough_users_to_offer_the_rate() -> None:
    users, per_user = offered_load(3.0, sat_users=4, sat_rps=100.0, max_users=500)
    assert users == 36 and users * per_user == pytest.approx(300.0)  # 3x the in-flight the rate needs
    users, per_user = offered_load(0.7, sat_users=1, sat_rps=50.0, max_users=500)
    assert users == 8 and users * per_user == pytest.approx(35.0)  # at least 8 users
    users, per_user = offered_load(3.0, sat_users=100, sat_rps=1000.0, max_users=64)
    assert users == 64 and users * per_user == pytest.approx(3000.0)  # capped at load.max_users, rate kept


def test_node_pool_note_says_what_was_done_with_the_nodes() -> None:
    assert node_pool_note("local", {"min": 1, "max": 5}, True).endswith("not available on the local platform")
    assert node_pool_note("kubernetes", {"min": 2, "max": 5}, True) == "node-pool autoscaling on (2-5 nodes)"
    assert "platform.gke is not set" in node_pool_note("kubernetes", {"max": 5}, False)
    assert node_pool_note("kubernetes", None, True) == "node-pool autoscaling not requested (autoscale.nodes)"
