"""The reference server's capacity formula (its servers are tested for real in test_reference_server.py)."""

from __future__ import annotations

import pytest

from nightcap.targets.reference_capacity import reference_capacity, reference_throughput, stall_latency_ms


def test_capacity_formula() -> None:
    assert reference_capacity(4, 20) == pytest.approx(200)
    assert reference_capacity(4, 20, replicas=2) == pytest.approx(400)
    assert reference_capacity(4, 10, cpu_ms=10) == pytest.approx(200)  # no CPU limit given
    assert reference_capacity(8, 0, cpu_ms=10, cpu_limit=0.5) == pytest.approx(50)  # CPU binds
    assert reference_capacity(2, 40, cpu_ms=10, cpu_limit=2) == pytest.approx(40)  # slots bind
    # the MVA curve reaches the bound far from the crossover and stays below it near it
    assert reference_throughput(16, 4, 20) == pytest.approx(200)
    assert reference_throughput(2, 4, 20) == pytest.approx(100)
    assert reference_throughput(64, 64, 0, cpu_ms=10, cpu_limit=1) == pytest.approx(100, rel=1e-6)
    near = reference_throughput(4, 4, 20, cpu_ms=10, cpu_limit=1)
    assert near < reference_capacity(4, 20, cpu_ms=10, cpu_limit=1)
    assert near == pytest.approx(90.476, rel=1e-3)


def test_stall_latency_formula() -> None:
    """Every 2 s a 0.5 s stall: p50 untouched, p95 = service + 400 ms, p99 = service + 480 ms."""
    assert stall_latency_ms(0.5, 20, 2.0, 0.5) == pytest.approx(20)
    assert stall_latency_ms(0.95, 20, 2.0, 0.5) == pytest.approx(420)
    assert stall_latency_ms(0.99, 20, 2.0, 0.5) == pytest.approx(500)
    assert stall_latency_ms(0.75, 20, 2.0, 0.5) == pytest.approx(20)  # the 25% stalled sit above p75
    assert stall_latency_ms(0.95, 20, 2.0, 0.0) == pytest.approx(20)
    with pytest.raises(ValueError, match="stall_s"):
        stall_latency_ms(0.95, 20, 1.0, 1.5)
