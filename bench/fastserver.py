"""A tiny, fast HTTP/1.1 server that counts what it answers: the common target of the generator benchmark.

Why not the reference server: every generator is measured here by requests *the server* answered in a
window, so each tool is counted the same way, with nothing added to any of them. `GET /count` returns the
number of other requests answered so far (and is not counted). Keep-alive, Content-Length bodies only
(what Locust's FastHttpUser and wrk send); anything else closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class Counter:
    served = 0


class _Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at)
                try:
                    length = int(lower[at + 15:stop if stop >= 0 else None])
                except ValueError:
                    self.transport.close()
                    return
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if head.startswith(b"GET /count"):
                body = str(Counter.served).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                Counter.served += 1
                self.transport.write(_OK)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
