"""Listen ports never collide with outgoing source ports, and a master that loses its port is restarted."""

from __future__ import annotations

import socket

import psutil
import pytest

from nightcap.load.driver import LoadError
from nightcap.load.local import LocalLocust
from nightcap.processes.ports import candidate_range, ephemeral_range, free_port


def test_ports_are_outside_the_ephemeral_range_and_never_repeat() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(not (low <= p <= high) for p in ports)
    span = candidate_range()
    assert span is not None  # this machine's range leaves room below it
    assert all(span[0] <= p <= span[1] for p in ports)


def test_a_range_that_covers_nearly_every_port_falls_back_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nightcap.processes.ports.ephemeral_range", lambda: (1024, 65000))
    assert candidate_range() is None
    assert 1 <= free_port() <= 65535


def test_a_port_in_use_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        taken.listen()
        monkeypatch.setattr("nightcap.processes.ports.candidate_range", lambda: (busy, busy))
        assert free_port(attempts=5) != busy  # every pick was busy: the kernel's choice instead


def _generator() -> LocalLocust:
    return LocalLocust(workers=1, payloads=[b"{}"], path="/", method="GET", headers={}, timeout_s=2.0,
                       reconnect_s=0.0)


@pytest.mark.slow
def test_master_whose_web_port_was_taken_is_restarted_on_new_ports() -> None:
    gen = _generator()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", gen.web_port))  # what an outgoing connection could do in the gap
    squatter.listen()
    taken = gen.web_port
    try:
        gen.start(timeout_s=30)
        assert gen.web_port != taken
        assert gen.client.window()["worker_count"] == 1
        pids = [p.pid for p in gen.worker_procs] + [gen.master.pid]
    finally:
        gen.stop()
        squatter.close()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.mark.slow
def test_a_master_that_keeps_dying_names_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    busy = squatter.getsockname()[1]
    monkeypatch.setattr("nightcap.load.local.free_port", lambda: busy)
    gen = _generator()
    try:
        with pytest.raises(LoadError, match=r"failed to start 2 times \(could not bind its port\); last lines of .*master\.log"):
            gen.start(timeout_s=30, attempts=2)
        assert gen.master is None and gen.worker_procs == []
    finally:
        gen.stop()
        squatter.close()
