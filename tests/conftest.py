"""Shared fixtures: one Prefect test harness per session, and a checker that a run left nothing behind.

`prefect_api` starts `prefect_test_harness` once (it costs ~12 s) and yields its API URL, so flows can run
in-process and `nightcap run` subprocesses can reuse the same server (PREFECT_API_URL) instead of starting
their own. `leftovers` tags everything a test starts with a token in the environment (children inherit
it) and, after the test, fails it if any process, cgroup or run record of the test's runs is still there.
The fault tests count what they injected; the session ends with one line that sums up the tests that
passed (a test that failed, or left something behind, is named as failed and its faults are not counted).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from hypothesis import settings

# CI runs the property-test examples that ran here: a random draw must not fail a landing by luck.
# Before changing a property or the code under it, run it with HYPOTHESIS_RANDOM=1 (and more examples).
settings.register_profile("nightcap", derandomize=not os.environ.get("HYPOTHESIS_RANDOM"))
settings.load_profile("nightcap")

TOKEN_VAR = "NIGHTCAP_TEST_TOKEN"

FAULTS = {"passed": 0, "injected": 0, "failed": 0, "left_something": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture's teardown knows whether the test passed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def prefect_api():
    """A throwaway Prefect API for the whole session (in-process flows and subprocess runs share it)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def prefect_server_process(tmp_path_factory):
    """One real `prefect server start` (private PREFECT_HOME, free port, no UI) for the tests that drive
    Prefect as people do: its CLI, a worker, automations. ~12 s, paid once per session."""
    from prefect_cli import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as info:
        yield info


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (tests/pg_server.py: ~3 s); skipped, saying why, where none can
    start (no server binaries, no driver)."""
    from pg_server import pg_server, why_not

    reason = why_not()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    with pg_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres.url(postgres.new_database())


def _tagged(token: str) -> list[psutil.Process]:
    """Every live process whose environment carries `token` (our own process and its parents excluded)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TOKEN_VAR) == token:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def nightcap_cgroups() -> set[Path]:
    """Every `nightcap-*` cgroup under the bases the local platform uses (cpu and memory, v1 or v2)."""
    from nightcap.platforms.cgroups import detect, leftover_groups

    return set(leftover_groups(detect()))


@dataclass
class Trace:
    """What one test started: tag, history DB, faults injected, processes it owns on purpose."""

    token: str
    root: Path
    db: Path
    faults: list[str] = field(default_factory=list)
    spared: set[int] = field(default_factory=set)  # unrelated processes the test started itself
    cgroups_before: set[Path] = field(default_factory=set)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, TOKEN_VAR: self.token, **extra}

    def fault(self, what: str) -> None:
        self.faults.append(what)

    def processes(self) -> list[psutil.Process]:
        return [p for p in _tagged(self.token) if p.pid not in self.spared]

    def run_ids(self) -> set[str]:
        ids: set[str] = set()
        if self.db.exists():
            with sqlite3.connect(self.db) as con:
                try:
                    ids |= {r[0] for r in con.execute("select run_id from runs")}
                except sqlite3.Error:
                    pass
        ids |= {p.stem for p in (self.root / ".nightcap" / "runs").glob("*.json")}
        return ids

    def cgroups(self) -> list[Path]:
        ids = self.run_ids()
        return sorted(g for g in nightcap_cgroups() - self.cgroups_before if any(i in g.name for i in ids))

    def leftovers(self, wait_s: float = 8.0) -> list[str]:
        """What of the test's runs is still there (after giving teardown a moment)."""
        deadline = time.monotonic() + wait_s
        while True:
            left = [f"process {p.pid} {' '.join(p.cmdline()[:6])}" for p in self.processes() if p.is_running()]
            left += [f"cgroup {g}" for g in self.cgroups()]
            left += [f"run record {p}" for p in (self.root / ".nightcap" / "runs").glob("*.json")]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.25)

    def steps_lost(self, measured: int, out: Path) -> int:
        """Steps measured but missing from steps.csv or the history DB."""
        from nightcap.steps import read_steps_csv

        csv_rows = len(read_steps_csv(out / "steps.csv")) if (out / "steps.csv").exists() else 0
        db_rows = 0
        if self.db.exists():
            with sqlite3.connect(self.db) as con:
                db_rows = con.execute("select count(*) from steps").fetchone()[0]
        return max(measured - csv_rows, 0) + max(measured - db_rows, 0)


@pytest.fixture
def leftovers(tmp_path, monkeypatch, request):
    """Run the test inside tmp_path with a tag; afterwards nothing of its runs may be left."""
    trace = Trace(token=uuid.uuid4().hex, root=tmp_path, db=tmp_path / "history.db",
                  cgroups_before=nightcap_cgroups())
    monkeypatch.setenv(TOKEN_VAR, trace.token)
    monkeypatch.chdir(tmp_path)
    yield trace
    left = trace.leftovers()
    call = getattr(request.node, "report_call", None)
    if call is not None and call.passed and not left:  # its own asserts include "no step lost"
        FAULTS["passed"] += 1
        FAULTS["injected"] += len(trace.faults)
    else:
        FAULTS["failed"] += 1
    if left:
        FAULTS["left_something"] += 1
        for proc in trace.processes():  # only what this test tagged: keep the shared machine clean
            try:
                os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
            except (OSError, psutil.Error):
                pass
        from nightcap.platforms.cgroups import remove_group

        for group in trace.cgroups():
            remove_group(group)
        pytest.fail("the run left something behind:\n  " + "\n  ".join(left))


def fault_suite_line(faults: dict[str, int]) -> str:
    """What the fault-injecting tests showed: only tests that passed count towards the claim."""
    line = (f"fault suite: {faults['passed']} test(s) passed with {faults['injected']} faults injected: every run "
            "left nothing behind and lost no step")
    if faults["failed"]:
        line += (f"; {faults['failed']} test(s) FAILED, not counted ({faults['left_something']} of them left "
                 "something behind)")
    return line


def pytest_sessionfinish(session):
    """An xdist worker hands its fault counts to the controller, which prints the one line for all of them."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["faults"] = dict(FAULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for key, count in getattr(node, "workeroutput", {}).get("faults", {}).items():
        FAULTS[key] += count


def pytest_terminal_summary(terminalreporter):
    if FAULTS["passed"] or FAULTS["failed"]:
        terminalreporter.write_line(fault_suite_line(FAULTS))


@pytest.fixture(autouse=True)
def _no_lease_renews_past_its_test():
    """A test that ends a run without releasing its lease (a simulated crash) would leave the renewal thread
    retrying against an API mock that is gone, until the interpreter's exit."""
    yield
    import sys

    lease = sys.modules.get("nightcap.kube.lease")
    if lease is not None:
        lease.stop_all_renewals(wait_s=0.5)
