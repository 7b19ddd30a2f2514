"""The results history on a real SQLite file and a real PostgreSQL server: what a nightly run writes, keeps and
compares, and the errors that stop a night whose history cannot be written."""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from nightcap.config import validate
from nightcap.steps import StepRow
from nightcap.results.store import SCHEMA_VERSION, HistoryStore, StoreError

SECRET = "sk-test-never-store-me-0123456789"


def make_config(name: str = "ref", **target):
    return validate({"target": {"name": name, "kind": "reference", **target}, "slo": {"p95_ms": 1000}})


def step(n: int, rps: float = 100.0, **extra) -> StepRow:
    values = dict(
        stage="single_client", step=n, replicas=1, cpu=1.0, memory=256 * 2**20, concurrency=4,
        users=2**n, rps=rps, p95_ms=12.5, replica_cpu_pct=[40.0 + n], replica_memory_mb=[80.0],
        events=[f"step {n}"],
    )
    return StepRow(**{**values, **extra})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path):
    """Every test of this file on both: a SQLite file in a folder that does not exist yet (the store must create
    it), and a fresh database on the session's real PostgreSQL server (tests/pg_server.py)."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path}/nested/dir/history.db"


def stored_text(db_url: str, tmp_path: Path) -> bytes:
    """Everything the history holds, as bytes: the SQLite files, or every row of every table on PostgreSQL."""
    if db_url.startswith("sqlite"):
        return b"".join(p.read_bytes() for p in (tmp_path / "nested/dir").iterdir())
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        text = "".join(str(r) for t in ("runs", "steps", "schema_version")
                       for r in conn.exec_driver_sql(f"select {t}::text from {t}"))
    engine.dispose()
    return text.encode()


def test_run_and_steps_are_written(db_url, tmp_path):
    config = make_config(version="v1")
    store = HistoryStore(db_url)
    assert db_url.startswith("postgresql") or (tmp_path / "nested/dir/history.db").exists()
    store.start_run("run-1", config, {"version": "v1", "service_ms": 20}, flow_run_id="f-1")
    assert store.get_run("run-1")["status"] == "running"
    for n in range(3):
        store.add_step("run-1", step(n, rps=100.0 * (n + 1)))
    store.finish_run("run-1", "completed", {"saturation_rps": 300.0, "rps_per_core": 150.0, "slo_users": 8},
                     {"saturation": {"rps": 300.0}})
    store.close()

    reopened = HistoryStore(db_url)  # a new process reading last night's file
    run = reopened.get_run("run-1")
    assert run["status"] == "completed"
    assert run["flow_run_id"] == "f-1"
    assert run["target_name"] == "ref" and run["platform"] == "local"
    assert run["config_hash"] == config.config_hash()
    assert run["target_version"] == {"version": "v1", "service_ms": 20}
    assert run["saturation_rps"] == 300.0 and run["slo_users"] == 8.0 and run["p95_at_operating_ms"] is None
    assert run["summary"] == {"saturation": {"rps": 300.0}}
    assert run["finished_at"] >= run["started_at"]
    rows = reopened.steps_of("run-1")
    assert [r.rps for r in rows] == [100.0, 200.0, 300.0]
    assert rows[0] == step(0, rps=100.0)  # every StepRow field survives the round trip
    assert reopened.schema_version() == SCHEMA_VERSION


def test_failed_run_keeps_its_steps(db_url):
    store = HistoryStore(db_url)
    store.start_run("crash", make_config(), {})
    store.add_step("crash", step(0))
    store.add_step("crash", step(1, valid=False, note="worker died mid-step"))
    store.close()  # the runner dies here: finish_run is never called

    later = HistoryStore(db_url)
    assert later.get_run("crash")["status"] == "running"
    assert later.mark_abandoned(older_than_s=3600) == []  # too recent to call abandoned
    assert later.mark_abandoned(older_than_s=0) == ["crash"]
    run = later.get_run("crash")
    assert run["status"] == "failed" and "abandoned" in run["note"]
    assert [(r.step, r.valid) for r in later.steps_of("crash")] == [(0, True), (1, False)]

    later.start_run("cancelled", make_config(), {})
    later.add_step("cancelled", step(0))
    later.finish_run("cancelled", "cancelled", {}, {"stages": {"single_client": {"status": "cancelled"}}})
    assert later.get_run("cancelled")["status"] == "cancelled"
    assert len(later.steps_of("cancelled")) == 1


def test_unknown_run_and_status_are_refused(db_url):
    store = HistoryStore(db_url)
    with pytest.raises(KeyError, match="start_run first"):
        store.add_step("nope", step(0))
    store.start_run("r", make_config(), {})
    with pytest.raises(ValueError, match="status"):
        store.finish_run("r", "exploded", {}, {})


def test_no_secret_is_stored(db_url, tmp_path):
    config = make_config(headers={"X-Tenant": SECRET}, api_key_env="NIGHTCAP_API_KEY")
    config.store.url = f"postgresql+psycopg://nightcap:{SECRET}@db.example/nightcap"
    config.target.url = f"http://user:{SECRET}@127.0.0.1:8080"
    # header values and secret-named keys are masked even when the caller names no secret
    HistoryStore(db_url).start_run("r", config, {"image": "model:1", "api_key": SECRET})
    # free text (notes, events, summaries) is scrubbed of the secrets the caller knows about
    store = HistoryStore(db_url, redact=[SECRET])
    store.add_step("r", step(0, note=f"401 with Bearer {SECRET}", events=[SECRET]))
    store.finish_run("r", "failed", {}, {"error": f"Authorization: Bearer {SECRET}", "token": SECRET}, note=SECRET)
    store.close()
    run = HistoryStore(db_url).get_run("r")
    assert run["config"]["target"]["headers"] == {"X-Tenant": "***"}
    assert run["config"]["target"]["api_key_env"] == "NIGHTCAP_API_KEY"  # the variable's name is not a secret
    assert run["config"]["target"]["url"] == "http://user:***@127.0.0.1:8080"
    assert run["config"]["store"]["url"] == "postgresql+psycopg://nightcap:***@db.example/nightcap"
    assert SECRET.encode() not in stored_text(db_url, tmp_path)  # the db, and its WAL if any


def test_comparable_runs_filter_by_hash_and_status(db_url):
    store = HistoryStore(db_url)
    base = make_config("ref")
    other = make_config("other")
    assert base.config_hash() == make_config("ref", service_ms=80, version="v2").config_hash()
    for i, status in enumerate(["completed", "failed", "completed", "cancelled", "completed", "completed"]):
        store.start_run(f"ref-{i}", base, {"service_ms": 20})
        store.finish_run(f"ref-{i}", status, {"saturation_rps": 200.0 + i}, {})
    store.start_run("ref-running", base, {})
    store.start_run("other-0", other, {})
    store.finish_run("other-0", "completed", {"saturation_rps": 1.0}, {})

    found = store.comparable_runs(base.config_hash(), last_n=3, exclude_run_id="ref-5")
    assert [r["run_id"] for r in found] == ["ref-4", "ref-2", "ref-0"]  # newest first, completed only
    assert all(r["config_hash"] == base.config_hash() for r in found)
    assert [r["run_id"] for r in store.comparable_runs(other.config_hash(), 7, None)] == ["other-0"]
    assert store.comparable_runs("0" * 16, 7, None) == []


def test_history_frame(db_url):
    store = HistoryStore(db_url)
    for i in range(4):
        store.start_run(f"ref-{i}", make_config("ref"), {"service_ms": 20 + i})
        store.add_step(f"ref-{i}", step(0))
        store.finish_run(f"ref-{i}", "completed", {"saturation_rps": 100.0 + i, "p95_at_operating_ms": 50.0}, {})
    store.start_run("other", make_config("other"), {"image": "registry/model:7"})

    frame = store.history(last=10)
    assert len(frame) == 5
    assert list(frame["run_id"])[-1] == "other"  # oldest first, so plots read left to right
    assert frame["started_at"].is_monotonic_increasing
    only_ref = store.history(target="ref", last=2)
    assert list(only_ref["run_id"]) == ["ref-2", "ref-3"]
    assert list(only_ref["saturation_rps"]) == [102.0, 103.0]
    assert list(only_ref["steps"]) == [1, 1]
    assert list(only_ref["version"]) == ["service_ms=22", "service_ms=23"]
    assert frame.iloc[-1]["version"] == "registry/model:7"
    assert store.history(target="missing").empty


OLD_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, run_id VARCHAR(64) NOT NULL UNIQUE, started_at DATETIME,
    finished_at DATETIME, status VARCHAR(16) NOT NULL, target_name VARCHAR(120), platform VARCHAR(32),
    config_hash VARCHAR(64), saturation_rps FLOAT
);
CREATE TABLE steps (
    id INTEGER PRIMARY KEY, run_id VARCHAR(64) NOT NULL REFERENCES runs(run_id),
    stage TEXT, step INTEGER, replicas INTEGER, cpu FLOAT, memory INTEGER, concurrency INTEGER,
    users INTEGER, rps FLOAT
);
"""


def test_migration_from_an_older_schema_keeps_rows(tmp_path):
    path = tmp_path / "old.db"
    config = make_config("ref")
    with sqlite3.connect(path) as conn:  # a history written by an early nightcap
        conn.executescript(OLD_SCHEMA)
        started = (datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=1)).isoformat(sep=" ")
        conn.execute(
            "INSERT INTO runs (run_id, started_at, finished_at, status, target_name, platform, config_hash, "
            "saturation_rps) VALUES ('old-1', ?, ?, 'completed', 'ref', 'local', ?, 210.5)",
            (started, started, config.config_hash()),
        )
        conn.execute(
            "INSERT INTO steps (run_id, stage, step, replicas, cpu, memory, concurrency, users, rps) "
            "VALUES ('old-1', 'single_client', 0, 1, 1.0, NULL, 4, 8, 210.5)"
        )
    store = HistoryStore(f"sqlite:///{path}")
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        step_columns = {row[1] for row in conn.execute("PRAGMA table_info(steps)")}
    assert {"rps_per_core", "slo_users", "target_version", "summary", "flow_run_id"} <= columns
    assert {"p95_ms", "replica_cpu_pct", "events", "valid"} <= step_columns
    old = store.get_run("old-1")
    assert old["saturation_rps"] == 210.5 and old["rps_per_core"] is None
    assert store.steps_of("old-1")[0].rps == 210.5
    assert [r["run_id"] for r in store.comparable_runs(config.config_hash(), 7, None)] == ["old-1"]

    store.start_run("new-1", config, {"service_ms": 20})
    store.add_step("new-1", step(0))
    store.finish_run("new-1", "completed", {"saturation_rps": 211.0, "rps_per_core": 105.5}, {})
    store.close()
    again = HistoryStore(f"sqlite:///{path}")  # opening twice is a no-op
    assert list(again.history(last=5)["run_id"]) == ["old-1", "new-1"]


def test_bad_url_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="not a database URL"):
        HistoryStore("history.db")
    with pytest.raises(StoreError) as info:
        HistoryStore("postgresql+nosuchdriver://user:hunter2@localhost/db")
    assert "hunter2" not in str(info.value)


def test_history_table_and_trend_plot(db_url, tmp_path):
    from rich.console import Console

    from nightcap.results.history_cli import history_command
    from nightcap.results.plots import trend_plot

    console = Console(record=True, width=140)
    if db_url.startswith("sqlite"):
        history_command(db_url.replace("history.db", "missing.db"), None, 5, console=console)
        assert "No history yet" in console.export_text()
    store = HistoryStore(db_url)
    for i, status in enumerate(["completed", "failed", "completed"]):
        store.start_run(f"ref-{i}", make_config("ref"), {"image": f"model:{i}"})
        store.finish_run(f"ref-{i}", status, {"saturation_rps": 200.0 + i, "rps_per_core": 100.0,
                                              "p95_at_operating_ms": 50.0, "slo_users": 40}, {})
    history_command(db_url, "ref", 10, console=console)
    text = console.export_text()
    assert "202.0" in text and "model:2" in text and "failed" in text
    assert trend_plot(store.history(last=10), tmp_path / "plots" / "trend.png") == "trend.png"
    assert (tmp_path / "plots" / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trend_plot(store.history(target="none"), tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


@pytest.mark.slow  # starts a process and kills it
def test_sigkill_mid_run_leaves_a_consistent_history(db_url):
    """A runner killed without warning: the file opens, every written step is there, the run is marked."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal
        from nightcap.config import validate
        from nightcap.steps import StepRow
        from nightcap.results.store import HistoryStore
        store = HistoryStore({db_url!r})
        config = validate({{"target": {{"name": "ref", "kind": "reference"}}, "slo": {{"p95_ms": 1000}}}})
        store.start_run("killed", config, {{}})
        for n in range(3):
            store.add_step("killed", StepRow(stage="single_client", step=n, replicas=1, cpu=1.0, memory=None,
                                             concurrency=4, users=n + 1, rps=10.0 * (n + 1)))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -signal.SIGKILL
    store = HistoryStore(db_url)
    assert [r.rps for r in store.steps_of("killed")] == [10.0, 20.0, 30.0]
    assert store.mark_abandoned(older_than_s=0) == ["killed"]
    assert store.get_run("killed")["status"] == "failed"
    assert store.comparable_runs(store.get_run("killed")["config_hash"], 7, None) == []


# --- a history that cannot be written stops the night before it starts ---------------------------------------


def test_missing_driver_names_store_url_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine without `nightcap[postgres]`
    with pytest.raises(StoreError) as info:
        HistoryStore("postgresql+psycopg://nightcap:hunter2@127.0.0.1:5432/nightcap")
    text = str(info.value)
    assert text.startswith("store.url postgresql+psycopg://nightcap:***@127.0.0.1:5432/nightcap needs the database "
                           "driver 'psycopg'"), text
    assert "pip install 'nightcap[postgres]'" in text and "hunter2" not in text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_refused_connection_says_start_the_server():
    with pytest.raises(StoreError) as info:
        HistoryStore(f"postgresql+psycopg://nightcap@127.0.0.1:{closed_port()}/nightcap")
    assert "store.url postgresql+psycopg://nightcap@127.0.0.1:" in str(info.value)
    assert "start the database server, or correct the host and port in store.url" in str(info.value)


@pytest.mark.parametrize("command", ["run", "validate", "preflight"])
def test_commands_exit_2_naming_store_url_before_starting_anything(command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nightcap.cli import app

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("target: {name: ref, kind: reference}\nslo: {p95_ms: 500}\n")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    url = f"store.url=postgresql+psycopg://nightcap@127.0.0.1:{closed_port()}/nightcap"
    result = CliRunner().invoke(app, [command, str(config), "--set", url])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "store.url postgresql+psycopg://nightcap@127.0.0.1:" in said and "nightcap[postgres]" in said
    assert not (tmp_path / "reports").exists() and not (tmp_path / ".prefect").exists()
    monkeypatch.delitem(sys.modules, "psycopg")  # the driver is there, the server is not
    result = CliRunner().invoke(app, [command, str(config), "--set", url])
    assert result.exit_code == 2 and "start the database server" in " ".join(result.output.split()), result.output


class FakeClock:
    """Stands in for `time` in store_connect: its retry backoff sleeps on this clock, not the wall's."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_write_lost_mid_run_is_retried_then_fails_loudly(db_url, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from nightcap.results import store_connect

    clock = FakeClock()  # the backoff (0.5 s, then doubling) within the budget, without waiting for it
    monkeypatch.setattr(store_connect, "time", clock)
    store = HistoryStore(db_url, retry_s=1.0)
    store.start_run("r", make_config(), {})
    real_begin, failures = store.engine.begin, [2]

    def flaky_begin():
        if failures[0] > 0:
            failures[0] -= 1
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        return real_begin()

    monkeypatch.setattr(store.engine, "begin", flaky_begin)
    store.add_step("r", step(0))  # two failures, then it goes through
    assert len(store.steps_of("r")) == 1 and clock.slept == [0.5, 0.5]  # backoff, cut to the budget left
    store.add_step("r", step(0))  # the same step again (a retry after a lost acknowledgement): one row
    assert len(store.steps_of("r")) == 1
    failures[0] = 10**6
    clock.slept.clear()
    with pytest.raises(StoreError, match="cannot write to the results history"):
        store.add_step("r", step(1))
    assert sum(clock.slept) == pytest.approx(1.0)  # it gave up when its budget was spent, not before or after


@pytest.mark.slow
def test_missing_rights_say_what_to_grant(postgres):
    database = postgres.new_database()
    postgres.sql("DO $$ BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    postgres.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=database)
    with pytest.raises(StoreError) as info:
        HistoryStore(postgres.url(database, user="reader"))
    assert "store.url postgresql+psycopg://reader@" in str(info.value) and "grant the user in store.url" in str(info.value)
    HistoryStore(postgres.url(database)).close()  # the owner creates the tables; reader may read but not write
    postgres.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", database=database)
    reader = HistoryStore(postgres.url(database, user="reader"))
    with pytest.raises(StoreError, match="grant the user in store.url"):
        reader.probe_write()


@pytest.mark.slow
def test_a_database_restart_mid_run_loses_no_step(postgres):
    """The server goes down between two steps and is back 1.5 s later: the next write waits for it (retries on
    a fresh connection), and no step is lost."""
    url = postgres.url(postgres.new_database())
    store = HistoryStore(url, retry_s=60)
    store.start_run("r", make_config(), {})
    store.add_step("r", step(0))
    postgres.stop()
    restart = threading.Timer(1.5, postgres.start)
    restart.start()
    t0 = time.monotonic()
    try:
        store.add_step("r", step(1))  # the server is down now
    finally:
        restart.join(timeout=90)
    assert time.monotonic() - t0 >= 1.0, "the write went through while the server was down?"
    for n in range(2, 4):
        store.add_step("r", step(n))
    store.finish_run("r", "completed", {"saturation_rps": 1.0}, {})
    assert [r.step for r in store.steps_of("r")] == list(range(4))


@pytest.mark.slow
def test_concurrent_writers_and_a_reader_on_postgresql(postgres):
    """Two runs (different targets) writing at once into a new database, and `nightcap history` reading meanwhile."""
    from rich.console import Console

    from nightcap.results.history_cli import history_command

    url = postgres.url(postgres.new_database())
    errors: list[BaseException] = []

    def night(target: str) -> None:
        try:
            store = HistoryStore(url)  # both create/migrate the new database at once
            store.start_run(f"{target}-1", make_config(target), {})
            for n in range(40):
                store.add_step(f"{target}-1", step(n, rps=float(n), users=n + 1))
            store.finish_run(f"{target}-1", "completed", {"saturation_rps": 40.0}, {})
            store.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    writers = [threading.Thread(target=night, args=(t,)) for t in ("alpha", "beta")]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) and reads < 50:
        try:
            history_command(url, None, 5, console=Console(record=True, width=160))
            reads += 1
        except SystemExit:  # the tables may not exist yet in the first instant
            pass
    for w in writers:
        w.join(timeout=60)
    assert not errors, errors
    store = HistoryStore(url)
    assert [len(store.steps_of(f"{t}-1")) for t in ("alpha", "beta")] == [40, 40]
    assert sorted(store.history(last=5)["status"]) == ["completed", "completed"] and reads >= 1


@pytest.mark.slow
def test_regression_check_on_postgresql(pg_url):
    from nightcap.analysis.regression import check_regression

    store = HistoryStore(pg_url)
    config = make_config("ref")
    for i, rps in enumerate([210.0, 212.0, 208.0, 213.0, 211.0]):
        store.start_run(f"n{i}", config, {})
        store.finish_run(f"n{i}", "completed", {"saturation_rps": rps, "rps_per_core": rps / 2}, {})
    history = store.comparable_runs(config.config_hash(), 7)
    result = check_regression({"saturation_rps": 150.0, "rps_per_core": 75.0}, history)
    assert result.verdict == "regressed" and result.message.startswith("saturation_rps fell 29%")
    assert check_regression({"saturation_rps": 209.0, "rps_per_core": 104.5}, history).verdict == "ok"


def test_a_locked_history_is_waited_for_and_what_it_refused_is_written_at_the_end(tmp_path, monkeypatch):
    """Another writer holds the SQLite file locked: a step written mid-run gives up quickly (the measurement goes
    on); at the end of the run `ensure_steps` writes it, on fresh connections."""
    from nightcap.results import store_connect

    monkeypatch.setattr(store_connect, "BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "history.db"
    store = HistoryStore(f"sqlite:///{path}", retry_s=10)
    config = make_config()
    store.start_run("r", config, {})
    store.add_step("r", step(0))
    holder = sqlite3.connect(path, timeout=1, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="database is locked"):
        store.add_step("r", step(1), retry_s=0.1)  # mid-run: a short budget
    assert time.monotonic() - t0 < 3
    threading.Timer(0.2, holder.rollback).start()  # after its first try (busy 0.05 s) failed
    assert store.ensure_steps("r", [step(0), step(1), step(2)], config) == 2  # waits for the lock, writes both
    holder.close()
    assert [r.step for r in store.steps_of("r")] == [0, 1, 2]


def test_a_history_replaced_mid_run_gets_the_whole_run_again(tmp_path):
    """The file was deleted and a new one created (a pooled connection kept writing to the old one): at the end
    the run and every step are written to the file that is there now."""
    path = tmp_path / "history.db"
    store = HistoryStore(f"sqlite:///{path}")
    config = make_config()
    store.start_run("r", config, {"service_ms": 20}, flow_run_id="f")
    store.add_step("r", step(0))
    for leftover in tmp_path.glob("history.db*"):
        leftover.unlink()
    store.add_step("r", step(1))  # lands in the deleted file, through a pooled connection
    assert store.ensure_steps("r", [step(0), step(1)], config, {"service_ms": 20}, "f") == 2
    store.finish_run("r", "completed", {"saturation_rps": 1.0}, {})
    again = HistoryStore(f"sqlite:///{path}")
    assert again.get_run("r")["status"] == "completed" and len(again.steps_of("r")) == 2
