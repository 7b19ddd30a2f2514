"""Listen ports for the processes a run starts, chosen so that nothing else takes them first.

`bind(0)` hands out a port from the kernel's ephemeral range and we close it before the child binds
it; in that gap any outgoing connection (Prefect's API client, Locust, the proxy) can take the same
number as its source port, and the child dies with "address in use". Ports below the ephemeral range
are never used as source ports, so we pick from there, check that each is free, and never hand the
same number out twice in one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000
_given: set[int] = set()
_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's source-port range (Linux default 32768–60999)."""
    try:
        low, high = (int(x) for x in _RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def candidate_range() -> tuple[int, int] | None:
    """Ports to pick from: below the ephemeral range when there is room, else above it, else None."""
    low, high = ephemeral_range()
    if low - _LOWEST >= 2000:
        return _LOWEST, low - 1
    if 65535 - high >= 2000:
        return high + 1, 65535
    return None  # the source ports cover nearly everything: only the kernel's choice is left


def free_port(attempts: int = 200) -> int:
    """A free loopback port outside the ephemeral range, not handed out before by this process."""
    span = candidate_range()
    if span is not None:
        with _lock:
            for _ in range(attempts):
                port = random.randint(*span)
                if port not in _given and _bindable(port):
                    _given.add(port)
                    return port
    with socket.socket() as s:  # no room outside the range, or it is crowded: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
