"""The smoke request after deploy: a refused payload, a refused connection or a timeout stop the run with the
status and the body's start (a throwaway in-process HTTP server; milliseconds)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from nightcap.processes.ports import free_port
from nightcap.targets.smoke import SmokeFailed, smoke_request


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/ok":
            assert self.headers["Content-Type"] == "application/json"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"predictions": [1]}')
            return
        self.send_response(400)
        self.end_headers()
        self.wfile.write(b'{"error_code": "BAD_REQUEST", "message": "Failed to enforce schema: ' + body + b'"}' + b"x" * 500)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_2xx_answer_passes(server: str) -> None:
    result = smoke_request(f"{server}/ok", "POST", b"{}", {}, timeout_s=5)
    assert result.status == 200 and result.body_start == '{"predictions": [1]}'


def test_a_400_names_the_status_the_body_start_and_the_option(server: str) -> None:
    with pytest.raises(SmokeFailed) as caught:
        smoke_request(f"{server}/invocations", "POST", b'{"inputs": [[1.0]]}', {}, timeout_s=5,
                      payload_option="target.payload_csv")
    text = str(caught.value)
    assert text.startswith('the model answered 400 Bad Request to the payload: {"error_code": "BAD_REQUEST"')
    assert text.endswith("; check target.payload_csv")
    assert '{"inputs": [[1.0]]}' in text  # the body's start, as the server said it
    assert text.count("x") < 320  # at most 300 characters of the body


def test_connection_refused_names_the_url_option() -> None:
    url = f"http://127.0.0.1:{free_port()}/invocations"
    t0 = time.monotonic()
    with pytest.raises(SmokeFailed, match=r"nothing answered at .* \(connection refused\); check target.url"):
        smoke_request(url, "POST", b"{}", {}, timeout_s=5, url_option="target.url")
    assert time.monotonic() - t0 < 2


def test_a_timeout_names_request_timeout(server: str) -> None:
    with pytest.raises(SmokeFailed, match=r"did not answer the first request within 0.2 s \(target.request_timeout_s\)"):
        smoke_request(f"{server}/slow", "POST", b"{}", {}, timeout_s=0.2, url_option="target.url")
