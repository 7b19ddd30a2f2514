"""The reference server's capacity formula (its servers are tested for real in test_reference_server.py)."""

from __future__ import annotations

import pytest

from nightcap.targets.reference_capacity import reference_capacity, reference_throughput


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
