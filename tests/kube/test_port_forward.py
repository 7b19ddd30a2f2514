"""The port-forward pipes a bounded number of connections at once: a connection storm waits in the backlog."""

from __future__ import annotations

import socket
import threading
import time

from nightcap.kube.port_forward import PortForward


def test_a_connection_storm_gets_at_most_max_tunnels_threads_and_every_connection_is_served() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    opened: list[socket.socket] = []
    stop = threading.Event()

    def echo() -> None:  # the pod: answers one byte per connection, then closes
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = server.accept()
            except OSError:
                continue
            c.recv(1)
            c.sendall(b"k")
            c.close()

    threading.Thread(target=echo, daemon=True).start()
    peak = 0

    def open_remote() -> socket.socket:
        nonlocal peak
        s = socket.create_connection(("127.0.0.1", port))
        opened.append(s)
        time.sleep(0.02)  # a tunnel through the API server takes a while to open
        peak = max(peak, sum(1 for t in threading.enumerate() if t.name == "nightcap port-forward tunnel"))
        return s

    forward = PortForward(open_remote, max_tunnels=8)
    try:
        clients = [socket.create_connection(("127.0.0.1", forward.port)) for _ in range(60)]
        for c in clients:
            c.sendall(b"x")
        answers = []
        for c in clients:
            c.settimeout(10)
            answers.append(c.recv(1))
            c.close()
        assert answers == [b"k"] * 60 and len(opened) == 60
        assert 1 <= peak <= 8, peak  # the tunnels at once (counted by name: other tests' threads are not)
    finally:
        forward.close()
        stop.set()
        server.close()
