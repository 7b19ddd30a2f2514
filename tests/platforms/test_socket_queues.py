"""Where requests wait, as the kernel counts it: /proc/net/tcp parsed for the local platform's ports."""

from __future__ import annotations

import socket

from nightcap.platforms.socket_queues import parse_tcp_table, port_queues

TABLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000007 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D432 01 00000000:0000004A 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:D433 08 00000001:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0
"""


def test_the_accept_queue_open_connections_and_callers_who_left_per_port() -> None:
    """Port 8080 (0x1F90): 7 connections not accepted yet, 2 open, 1 whose caller closed; the client's own side
    (local port 0xD431) is not the server's. Port 9000 listens idle; an unknown port is all zeros."""
    q = parse_tcp_table(TABLE, [8080, 9000, 1234])
    assert q[8080].to_dict() == {"accept_queue": 7, "established": 2, "client_closed": 1, "syn_recv": 0}
    assert q[9000].accept_queue == 0 and q[9000].established == 0
    assert q[1234].to_dict() == {"accept_queue": 0, "established": 0, "client_closed": 0, "syn_recv": 0}


def test_a_listening_socket_nobody_accepts_from_shows_its_queue() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        q = port_queues([port])[port]
        assert q.accept_queue == 3 and q.established == 3
        clients[0].close()
        assert port_queues([port])[port].client_closed == 1  # the kernel still holds it for the server
    finally:
        for c in clients[1:]:
            c.close()
        server.close()
