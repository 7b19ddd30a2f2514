"""The local stand-in for a Kubernetes Service: one stable port, new connections spread round-robin.

Like kube-proxy it balances per connection (L4), so a keep-alive client stays on one replica until it
reconnects; that is why the locustfile re-opens connections periodically. Runs as its own process so its
CPU is accounted apart from the flow. Backends are read from a JSON file the platform rewrites whenever
replicas become ready or go away.

It holds no queue a Service would not (docs/autoscaling.md): kube-proxy rewrites a client's connection to a pod,
so nothing waits in between. Here a connection waits at most in the proxy's own listen backlog (kept short,
`BACKLOG`: when the proxy falls behind, new connections are refused at the handshake as a full pod's would be,
instead of queueing unseen) and while its pod connection is being made; a client that gives up meanwhile is
never forwarded (with kube-proxy its handshake would simply stop), so a replica never works for a caller who
left before it was reached.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
from pathlib import Path


class Backends:
    def __init__(self, path: Path):
        self.path = path
        self.mtime = 0.0
        self.items: list[tuple[str, int]] = []
        self.cycle = itertools.cycle([])

    def refresh(self) -> set[tuple[str, int]]:
        """Re-read the file when it changed; returns the backends it no longer lists."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return set()
        if mtime == self.mtime:
            return set()
        try:
            raw = json.loads(self.path.read_text() or "[]")
        except (OSError, ValueError):
            return set()
        self.mtime = mtime
        before = set(self.items)
        self.items = [(h, int(p)) for h, p in (item.rsplit(":", 1) for item in raw)]
        self.cycle = itertools.cycle(self.items)
        return before - set(self.items)

    def pick(self) -> tuple[str, int] | None:
        return next(self.cycle) if self.items else None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


REFRESH_S = 0.2  # how soon a change of the backends file reaches the proxy
BACKLOG = 128  # Linux's historical somaxconn: a few hundred ms of arrivals at the rates measured here


async def _connect(target: tuple[str, int], client_r: asyncio.StreamReader
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
    """Connect to `target`, meanwhile keeping what the client sends; None when the client left first."""
    connect = asyncio.ensure_future(asyncio.open_connection(*target))
    head = b""
    while not connect.done():
        read = asyncio.ensure_future(client_r.read(65536))
        await asyncio.wait({connect, read}, return_when=asyncio.FIRST_COMPLETED)
        if not read.done():
            read.cancel()  # nothing was consumed: the pipe reads it later
            break
        try:
            data = read.result()
        except ConnectionError:
            data = b""
        if not data:  # the caller closed before its pod was reached: a Service would never have reached it
            connect.cancel()
            if connect.done() and not connect.cancelled() and connect.exception() is None:
                connect.result()[1].close()
            return None
        head += data
    up_r, up_w = await connect
    return up_r, up_w, head


async def _serve(port: int, backends: Backends, host: str) -> None:
    # open connections per backend: a backend the platform takes away loses them, as a terminated pod's
    # connections break (the local platform also takes away replicas it keeps running: `LocalPlatform.park`)
    open_to: dict[tuple[str, int], set[asyncio.StreamWriter]] = {}

    def refresh() -> None:
        for gone in backends.refresh():
            for w in open_to.pop(gone, set()):
                w.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        refresh()  # one stat per connection: a replica is routable as soon as the platform says ready
        for _ in range(max(len(backends.items), 1)):
            target = backends.pick()
            if target is None:
                break
            try:
                connected = await _connect(target, client_r)
            except OSError:
                continue  # a replica that just died: try the next one, as a Service would after endpoints update
            if connected is None:
                break
            up_r, up_w, head = connected
            if head:
                up_w.write(head)
            held = open_to.setdefault(target, set())
            held.update((up_w, client_w))
            try:
                await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
            finally:
                held.difference_update((up_w, client_w))
            return
        client_w.close()

    async def refresher() -> None:
        while True:
            refresh()
            await asyncio.sleep(REFRESH_S)

    refresh()
    server = await asyncio.start_server(handle, host, port, backlog=BACKLOG, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(refresher())
    print(f"proxy listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()
    task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backends", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, Backends(args.backends), args.host))
    os._exit(0)


if __name__ == "__main__":
    main()
