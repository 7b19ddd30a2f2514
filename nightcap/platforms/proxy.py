"""The local stand-in for a Kubernetes Service: one stable port, new connections spread round-robin.

Like kube-proxy it balances per connection (L4), so a keep-alive client stays on one replica until it
reconnects; that is why the locustfile re-opens connections periodically. Runs as its own process so its
CPU is accounted apart from the flow. Backends are read from a JSON file the platform rewrites whenever
replicas become ready or go away.
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

    def refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self.mtime:
            return
        try:
            raw = json.loads(self.path.read_text() or "[]")
        except (OSError, ValueError):
            return
        self.mtime = mtime
        self.items = [(h, int(p)) for h, p in (item.rsplit(":", 1) for item in raw)]
        self.cycle = itertools.cycle(self.items)

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


async def _serve(port: int, backends: Backends, host: str) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        backends.refresh()  # one stat per connection: a replica is routable as soon as the platform says ready
        for _ in range(max(len(backends.items), 1)):
            target = backends.pick()
            if target is None:
                break
            try:
                up_r, up_w = await asyncio.open_connection(*target)
            except OSError:
                continue  # a replica that just died: try the next one, as a Service would after endpoints update
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
            return
        client_w.close()

    async def refresher() -> None:
        while True:
            backends.refresh()
            await asyncio.sleep(0.2)

    backends.refresh()
    server = await asyncio.start_server(handle, host, port, backlog=1024, reuse_address=True)
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
