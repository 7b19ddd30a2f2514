"""A run always ends: the API watch notices a Prefect API that went away, and the exit guard ends a process
that hangs after its report is written (as Prefect's log worker did at interpreter exit)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nightcap.run import exit_guard


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_the_watch_fires_once_the_api_stays_gone():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fired: list[str] = []
    # short intervals keep it fast; a healthy API is polled for longer than gone_after_s before it goes
    watch = exit_guard.ApiWatch(f"http://127.0.0.1:{server.server_address[1]}/api", gone_after_s=0.3, every_s=0.05,
                                on_gone=fired.append).start()
    time.sleep(0.45)
    assert not fired and watch.reason is None, "a healthy API is left alone"
    server.shutdown()
    server.server_close()
    gone = time.monotonic()
    while not fired and time.monotonic() - gone < 5:
        time.sleep(0.02)
    assert fired and fired[0] == watch.reason and "stopped answering for 0.3 s" in fired[0]
    assert 0.3 <= time.monotonic() - gone < 3  # its first failed poll comes after `gone`: never fired sooner


# argv: "enabled" or not, and the guard's grace_s (short here: each test waits for it, or a few times it)
HANGS_AT_EXIT = textwrap.dedent("""
    import sys, threading, time
    from nightcap.run import exit_guard
    if sys.argv[1] == "enabled":
        exit_guard.enable()
    exit_guard.arm("failed", grace_s=float(sys.argv[2]))
    threading._register_atexit(lambda: time.sleep(600))  # like Prefect's drain towards a server that is gone
    print("report written", flush=True)
""")


def test_a_process_that_hangs_at_exit_ends_with_the_runs_code():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HANGS_AT_EXIT, "enabled", "0.2"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "report written" in done.stdout
    assert "gave up on them" in done.stderr and time.monotonic() - started < 30


def test_after_the_report_a_signal_ends_it_at_once():
    proc = subprocess.Popen([sys.executable, "-c", HANGS_AT_EXIT, "enabled", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "report written"
    time.sleep(0.1)  # into the exit hang
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 1  # the run's code (failed), not a hang


def test_not_armed_where_the_process_is_not_the_runs():
    """A test runner or a `serve` process runs flows in-process: never ended by a run's guard."""
    proc = subprocess.Popen([sys.executable, "-c", HANGS_AT_EXIT, "not-enabled", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "report written"  # armed (it would be) before this line
        time.sleep(1.0)  # 5 times the grace an armed guard would wait
        assert proc.poll() is None, "not enabled: the guard leaves the process alone"
    finally:
        proc.kill()
        proc.wait(timeout=10)
