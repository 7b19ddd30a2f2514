"""The reference server's HTTP/1.1: reading one request off a connection, and framing a response.

Just enough HTTP for load generators and curl: a request line, headers, a body by Content-Length or
chunked (read and thrown away), ``Expect: 100-continue``, keep-alive by version and ``Connection``.
Anything it cannot parse is a :class:`BadRequest`: the server answers it and closes, as the client's
framing is then unknown. The limits bound what one connection can make the server buffer.

Only the standard library is imported: the canary runs this file's source, with the server's, in a stock
Python image (`nightcap.targets.canary.server_program`).
"""

from __future__ import annotations

import asyncio

__all__ = ["MAX_HEADER_BYTES", "MAX_BODY_BYTES", "BadRequest", "read_request", "response"]

MAX_HEADER_BYTES = 64 * 1024  # also the stream reader's limit: longer headers are a 413
MAX_BODY_BYTES = 16 * 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 413: "Payload Too Large", 503: "Service Unavailable"}


class BadRequest(Exception):
    """The request cannot be parsed; answer 400 and close, as the client's framing is unknown."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, str, bool] | None:
    """Parse request line, headers and body; None when the client closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest("incomplete request") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("headers too large", 413) from None
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest("malformed request line") from None
    if not version.startswith("HTTP/1.") or not method.isalpha() or not target:
        raise BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header")
        headers[name.lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        await _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadRequest("bad content-length") from None
        if length < 0:
            raise BadRequest("bad content-length")
        if length > MAX_BODY_BYTES:
            raise BadRequest("body too large", 413)
        if length:
            await reader.readexactly(length)
    return method, target, keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return
        total += size
        if total > MAX_BODY_BYTES:
            raise BadRequest("body too large", 413)
        await reader.readexactly(size + 2)


def response(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body
