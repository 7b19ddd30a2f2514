"""A run always ends: whatever the Prefect API does, the process exits a bounded time after its last stage.

Found by hand: a `nightcap run` whose Prefect server was killed stayed alive for minutes after its work was
done, its main thread waiting at interpreter exit for Prefect's log and event workers to ship to a server that
was gone, and a deployment's concurrency limit held every later night behind it. Two guards:

- `ApiWatch` polls the API's /health during the run; when it stays unreachable for `gone_after_s` it records
  why and stops the run the way SIGTERM does (teardown runs, the report folder is written, the night is
  failed with that reason) instead of measuring on with no one to report to.
- `arm` is called once the report folder is written: if the process has not exited `grace_s` later (log
  shipping, final state, interpreter exit), it ends itself with the run's exit code. From then on SIGINT and
  SIGTERM end it at once: there is nothing left to tear down.

Both act only in a process that belongs to the run (`enable`: `nightcap run`, or a flow-run process a Prefect
worker started), never in a test runner or a `serve` process that runs flows in-process.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

import httpx

log = logging.getLogger(__name__)

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 130}
_state: dict[str, object] = {"enabled": False, "armed": False}


def enable() -> None:
    """This process exists for one run: the guards may end it."""
    _state["enabled"] = True


def enabled() -> bool:
    """`nightcap run` enables it; a Prefect worker's flow-run process (it sets PREFECT__FLOW_RUN_ID) is one too."""
    return bool(_state["enabled"]) or bool(os.environ.get("PREFECT__FLOW_RUN_ID"))


def armed() -> bool:
    """The run's report is written and the guard is counting down (its signal handlers are in place)."""
    return bool(_state["armed"])


def _exit_now(code: int, why: str) -> None:
    try:
        sys.stderr.write(f"nightcap: {why}; exiting with {code}\n")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(code)


def exit_if_api_gone(code: int) -> None:
    """End the process now if the run was stopped because its Prefect API is gone: its teardown is done and its
    report written, and interpreter exit would only wait on log and event workers that cannot ship."""
    if api_gone_reason() and enabled():
        _exit_now(code, "the Prefect API is gone: logs and events of this run were not shipped")


def arm(status: str, grace_s: float = 20.0) -> None:
    """The run's work is done (teardown, report folder): exit with its code if still alive `grace_s` from now;
    SIGINT/SIGTERM end it at once."""
    if not enabled() or _state["armed"]:
        return
    _state["armed"] = True
    code = EXIT_CODES.get(status, 1)

    def late() -> None:
        _exit_now(code, f"the run ended {grace_s:g} s ago but the process had not exited (shipping logs or "
                        "events to an unreachable Prefect API?); gave up on them")

    timer = threading.Timer(grace_s, late)
    timer.daemon = True
    timer.start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _f: _exit_now(130 if code == 0 else code,
                                                             f"signal {signum} after the run ended"))


class ApiWatch:
    """Stops the run when the Prefect API stays unreachable for `gone_after_s` seconds (see the module doc)."""

    def __init__(self, api_url: str, gone_after_s: float = 10.0, every_s: float = 2.0,
                 on_gone: Callable[[str], None] | None = None) -> None:
        self.url = api_url.rstrip("/") + "/health"
        self.gone_after_s = gone_after_s
        self.every_s = every_s
        self.reason: str | None = None
        self._on_gone = on_gone or _interrupt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nightcap-api-watch", daemon=True)

    def start(self) -> "ApiWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        failing_since: float | None = None
        while not self._stop.wait(self.every_s):
            try:
                ok = httpx.get(self.url, timeout=min(self.every_s, 2.0)).status_code < 500
            except httpx.HTTPError:
                ok = False
            if ok:
                failing_since = None
                continue
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= self.gone_after_s:
                self.reason = (f"the Prefect API ({self.url.rsplit('/', 1)[0]}) stopped answering for "
                               f"{self.gone_after_s:g} s: the run was stopped (teardown done, steps kept in steps.csv "
                               "and the history); check the Prefect server, then run again")
                log.error("%s", self.reason)
                self._on_gone(self.reason)
                return


def _interrupt(_reason: str) -> None:
    """Unwind the run like SIGTERM does (the flow's handler turns it into KeyboardInterrupt, teardown runs).

    First, Prefect's client stops retrying: once it has connected, it retries a refused connection 5 times with
    exponential backoff (~1 minute per call), and the engine makes a call for every subflow and state it ends.
    """
    try:
        from prefect.settings import get_current_settings

        get_current_settings().client.max_retries = 0
    except Exception as exc:  # noqa: BLE001 - a Prefect without this setting: the exit guard still bounds it
        log.warning("could not turn off Prefect client retries: %s", exc)
    os.kill(os.getpid(), signal.SIGTERM)


_watch: list[ApiWatch] = []


def watch_api(api_url: str | None, gone_after_s: float = 10.0) -> ApiWatch | None:
    """Start watching the API for this process's run (only where the guards may act)."""
    if not api_url or not enabled():
        return None
    watch = ApiWatch(api_url, gone_after_s).start()
    _watch.append(watch)
    return watch


def api_gone_reason() -> str | None:
    """Why the run was stopped by the API watch, if it was."""
    return next((w.reason for w in _watch if w.reason), None)
