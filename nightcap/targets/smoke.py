"""One request right after deploy, before any load: a target that refuses the payload stops the run in seconds.

Without it a model answering 400 to every body was ramped through every level, and the run ended "no
saturation point" with the reason buried in steps.csv.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus

import httpx

BODY_CHARS = 300


class SmokeFailed(RuntimeError):
    """The target did not answer one request with 2xx; the message says what it answered and what to check."""


@dataclass
class SmokeResult:
    status: int
    elapsed_ms: float
    body_start: str


def _reason(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def smoke_request(url: str, method: str, body: bytes, headers: dict[str, str], timeout_s: float,
                  payload_option: str = "target.payload_file", url_option: str | None = None) -> SmokeResult:
    """Send `body` once; raise SmokeFailed on a non-2xx answer, a refused connection or a timeout.

    `url_option` names the setting to check when nothing answers (`target.url` for an external target;
    None when nightcap started the server itself, whose logs are then the place to look).
    """
    where = url_option or "the replica logs in the report folder (replicas/)"
    sent = {"Content-Type": "application/json", **headers}
    t0 = time.monotonic()
    try:
        with httpx.Client(timeout=timeout_s) as client:
            response = client.request(method, url, content=body, headers=sent)
    except httpx.TimeoutException:
        raise SmokeFailed(f"the target did not answer the first request within {timeout_s:g} s "
                          f"(target.request_timeout_s) at {url}; check {where}") from None
    except httpx.ConnectError as exc:
        raise SmokeFailed(f"nothing answered at {url} ({_short(exc)}); check {where}") from None
    except httpx.HTTPError as exc:
        raise SmokeFailed(f"the first request to {url} failed: {_short(exc)}; check {where}") from None
    elapsed = (time.monotonic() - t0) * 1000
    text = response.text[:BODY_CHARS]
    if not 200 <= response.status_code < 300:
        raise SmokeFailed(f"the model answered {_reason(response.status_code)} to the payload: {text.strip() or '(empty body)'}"
                          f"; check {payload_option}")
    return SmokeResult(response.status_code, round(elapsed, 1), text)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "Connection refused" in text or "[Errno 111]" in text:
        return "connection refused"
    return text[:200]
