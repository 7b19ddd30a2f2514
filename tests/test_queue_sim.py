"""The queue simulation that bounds open-loop p95s in the flow tests agrees with queueing theory."""

from __future__ import annotations

import numpy as np
import pytest

from queue_sim import mdc_p95_quantile_ms, sojourns


def test_md1_mean_response_is_pollaczek_khinchine():
    """M/D/1 at 50% load, 40 ms service: mean wait rho*s / (2(1 - rho)) = 20 ms, so 60 ms in all."""
    times = sojourns(np.random.default_rng(3), rate=12.5, slots=1, service_s=0.040, window_s=2000, warmup_s=10)
    assert np.mean(times) * 1000 == pytest.approx(60.0, rel=0.05)


def test_light_load_waits_for_nothing_and_the_p95_quantiles_rise():
    """At 1% of 4 slots almost nobody queues; at 70% the 99th percentile of a short run's p95 is far above its median."""
    assert mdc_p95_quantile_ms(1, 4, 40, window_s=3, windows=2, quantile=0.99, runs=200) == pytest.approx(40, abs=0.5)
    median = mdc_p95_quantile_ms(70, 4, 40, window_s=3, windows=2, quantile=0.5, runs=400)
    high = mdc_p95_quantile_ms(70, 4, 40, window_s=3, windows=2, quantile=0.99, runs=400)
    assert 60 < median < 90 < high
