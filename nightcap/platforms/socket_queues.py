"""Where requests wait on this machine: the kernel's view of the local platform's listening ports.

After an open-loop overload a request can wait in four places before anyone works on it: the generator (sent,
no answer yet), the local proxy's listen backlog (connections the kernel completed that the proxy has not
accepted), a replica's listen backlog (the same, for the server) and the server's own queue (accepted, not yet
answered). The kernel counts the middle two and one more thing that matters after time-outs: connections
the client already closed while the server still holds them (CLOSE_WAIT), i.e. work for callers who left.

Read from /proc/net/tcp{,6} (Linux; empty elsewhere): for a LISTEN socket `rx_queue` is the accept queue's
length (`ss -lt`'s Recv-Q). Pure parsing plus one file read, no root needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

LISTEN, ESTABLISHED, SYN_RECV, CLOSE_WAIT = "0A", "01", "03", "08"
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True)
class PortQueue:
    """One listening port's connections (summary.json `autoscale.samples[].queues`)."""

    accept_queue: int  # completed connections the server has not accepted yet (its listen backlog in use)
    established: int  # open connections to the port: accepted, or waiting in the accept queue
    client_closed: int  # CLOSE_WAIT: the caller closed (gave up), the server still holds the connection
    syn_recv: int  # handshakes under way

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_tcp_table(text: str, ports: Iterable[int]) -> dict[int, PortQueue]:
    """Per port in `ports` (local side), from the text of /proc/net/tcp or tcp6 (several tables concatenated)."""
    wanted = set(ports)
    counts = {p: [0, 0, 0, 0] for p in wanted}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[1] or fields[0] == "sl":
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        if port not in wanted:
            continue
        state, rx_queue = fields[3], int(fields[4].split(":")[1], 16)
        row = counts[port]
        if state == LISTEN:
            row[0] += rx_queue
        elif state == ESTABLISHED:
            row[1] += 1
        elif state == CLOSE_WAIT:
            row[2] += 1
        elif state == SYN_RECV:
            row[3] += 1
    return {p: PortQueue(*c) for p, c in counts.items()}


def port_queues(ports: Iterable[int], tables: Iterable[Path] = TABLES) -> dict[int, PortQueue]:
    """The kernel's current counts for these local ports (zeros where /proc/net/tcp is not readable)."""
    text = ""
    for table in tables:
        try:
            text += table.read_text() + "\n"
        except OSError:
            continue
    return parse_tcp_table(text, ports)
