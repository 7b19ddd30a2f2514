"""Results history: one row per run and one per measured step, in any SQL database SQLAlchemy speaks.

A nightly check is only useful if it can say what changed since last night, so every run is recorded here
(a SQLite file by default, PostgreSQL by `store.url`), and a night whose history cannot be written does not
run (`probe_write`; errors name store.url and the fix: `store_connect.py`). Steps are written one at a time
as they are measured, each in its own short transaction, so a run that crashes or is killed keeps what it
measured (`mark_abandoned` later marks it failed); a lost database is retried, and at the end of a run
`ensure_steps` writes again whatever the history lost. The schema (`history_schema.py`) is created on first
use and migrated forward by adding columns, never dropped. What a row holds is `history_rows.py`; no secret
reaches the database (`redact.py`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from nightcap.analysis.change_points import finite
from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.results import store_connect
from nightcap.results.history_rows import finish_values, run_dict, run_values, step_row, step_values, utc_now
from nightcap.results.history_schema import SCHEMA_VERSION, migrate, runs, schema_version, steps
from nightcap.results.meanings import changed_figures, stored_meanings
from nightcap.steps import StepRow
from nightcap.results.store_connect import DEFAULT_URL, StoreError

__all__ = ["DEFAULT_URL", "RUN_STATUSES", "SCHEMA_VERSION", "HistoryStore", "StoreError", "check_writable",
           "model_label", "version_label"]

if TYPE_CHECKING:
    import pandas as pd

    from nightcap.config import Config

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "completed", "failed", "cancelled")
T = TypeVar("T")


def version_label(target_version: Mapping[str, Any] | None) -> str:
    """One short string for tables: the model's label (`wine v3 @champion`), version, image or URI, else the
    reference timings."""
    if not target_version:
        return ""
    for key in ("label", "version", "image", "model_uri"):
        if target_version.get(key):
            return str(target_version[key])
    return " ".join(f"{k}={v}" for k, v in sorted(target_version.items()) if v not in (None, "", [], {}))


def model_label(target_version: Mapping[str, Any] | None) -> str | None:
    """A model's or image's version label; None for a reference server's timings (its settings, not a version)."""
    if not target_version or not any(target_version.get(k) for k in ("label", "version", "image")):
        return None
    return version_label(target_version)


class HistoryStore:
    """The runs and steps history behind `store.url`; opening it creates or migrates the schema."""

    def __init__(self, url: str | None = None, *, redact: Iterable[str] = (), echo: bool = False,
                 retry_s: float = 0.0) -> None:
        """Open (create or migrate) the history; `retry_s` is how long a write keeps retrying a lost database."""
        self.url = url or DEFAULT_URL
        self._redact = [s for s in redact if s]
        self.retry_s = retry_s
        self.display_url = store_connect.display(self.url)
        self.engine: Engine = store_connect.create(self.url, echo=echo)
        try:
            self._migrate()
        except StoreError:
            self.engine.dispose()
            raise

    # -- schema ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create what is missing and add columns an older nightcap did not have; never drop."""
        try:
            found = migrate(self.engine)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(store_connect.explain(self.display_url, exc)) from None
        if found is not None and found > SCHEMA_VERSION:
            log.warning("history at %s has schema version %s, newer than this nightcap (%s); writing only the "
                        "columns this version knows", self.display_url, found, SCHEMA_VERSION)

    def probe_write(self) -> None:
        """Check now that this user may write a run and a step (rolled back): a night that could not store its
        history must stop before it deploys, not discover it after hours of measuring."""
        probe = "nightcap-write-probe"
        try:
            with self.engine.connect() as conn:
                trans = conn.begin()
                try:
                    conn.execute(runs.insert().values(run_id=probe, status="running", started_at=utc_now()))
                    conn.execute(steps.insert().values(run_id=probe, recorded_at=utc_now()))
                    conn.execute(runs.update().where(runs.c.run_id == probe).values(updated_at=utc_now()))
                    conn.execute(steps.delete().where(steps.c.run_id == probe))
                    conn.execute(runs.delete().where(runs.c.run_id == probe))
                finally:
                    trans.rollback()
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(store_connect.explain(self.display_url, exc, "write to")) from None

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)

    # -- writing --------------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        config: "Config",
        target_version: Mapping[str, Any] | None = None,
        flow_run_id: str | None = None,
    ) -> None:
        """Record a run as 'running' before anything is measured, so even a crash leaves a trace.

        Starting an existing run id again (a retried flow) marks it running and keeps its steps.
        """
        now = utc_now()
        values = run_values(config, target_version, flow_run_id, self._redact, now)

        def write(conn: sa.Connection) -> None:
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).first()
            if exists:
                conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))
            else:
                conn.execute(runs.insert().values(run_id=run_id, started_at=now, **values))

        self.transaction(write)

    def add_step(self, run_id: str, row: StepRow, retry_s: float | None = None) -> None:
        """Append one measured step right away, in its own transaction, so a later crash keeps it.

        Writing the same step again (a retry after a connection dropped before the commit was acknowledged)
        keeps one row: a step is identified by its run, stage and number. `retry_s` (default: the store's)
        bounds how long a lost database is retried; mid-run a short one keeps the measurement going."""
        data = step_values(row, self._redact)
        now = utc_now()

        def write(conn: sa.Connection) -> None:
            self._require(conn, run_id)
            same = conn.execute(sa.select(steps.c.id).where(steps.c.run_id == run_id, steps.c.step == row.step,
                                                            steps.c.stage == row.stage)).first()
            if same is None:
                conn.execute(steps.insert().values(run_id=run_id, recorded_at=now, **data))
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(updated_at=now))

        self.transaction(write, retry_s)

    def ensure_steps(self, run_id: str, rows: list[StepRow], config: "Config",
                     target_version: Mapping[str, Any] | None = None, flow_run_id: str | None = None) -> int:
        """At the end of a run: make sure the history holds the run and every one of its steps, on fresh
        connections (a pooled SQLite connection keeps writing to a file that was deleted or replaced); writes
        what is missing (the run row too, if the database was recreated) and returns how many steps it wrote.
        Raises StoreError if the database cannot be reached or written."""
        self.engine.dispose()
        store_connect.retrying(lambda: migrate(self.engine), self.display_url, self.retry_s, "open")  # a new file
        with self.engine.connect() as conn:
            has_run = conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).first() is not None
            stored = set() if not has_run else {(r[0], r[1]) for r in conn.execute(
                sa.select(steps.c.stage, steps.c.step).where(steps.c.run_id == run_id))}
        if not has_run:
            self.start_run(run_id, config, target_version, flow_run_id)
        missing = [row for row in rows if (row.stage, row.step) not in stored]
        for row in missing:
            self.add_step(run_id, row)
        return len(missing)

    def heartbeat(self, run_id: str) -> None:
        """Say the run is alive during a long step, so `mark_abandoned` leaves it alone."""
        self.transaction(lambda conn: conn.execute(runs.update().where(runs.c.run_id == run_id).values(updated_at=utc_now())))

    def finish_run(
        self,
        run_id: str,
        status: str,
        headline: Mapping[str, Any] | None = None,
        summary: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> None:
        """Close a run with its status and headline figures; steps already written stay as they are."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, not {status!r}")
        headline = dict(headline or {})
        unknown = sorted(set(headline) - set(HEADLINE_NAMES))
        if unknown:
            log.warning("history: ignoring unknown headline figures %s (known: %s)", unknown, HEADLINE_NAMES)
        values = finish_values(status, headline, summary, note, self._redact, utc_now())

        def write(conn: sa.Connection) -> None:
            self._require(conn, run_id)
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))

        self.transaction(write)

    def mark_abandoned(self, older_than_s: float) -> list[str]:
        """Mark runs still 'running' with no sign of life for `older_than_s` as failed; return their ids.

        A runner killed with SIGKILL never calls finish_run; without this its run would look
        in progress forever. Its steps are kept.
        """
        cutoff = utc_now() - timedelta(seconds=max(0.0, older_than_s))
        last_seen = sa.func.coalesce(runs.c.updated_at, runs.c.started_at)

        def write(conn: sa.Connection) -> list[str]:
            ids = list(
                conn.execute(
                    sa.select(runs.c.run_id).where(runs.c.status == "running", last_seen < cutoff)
                ).scalars()
            )
            if ids:
                conn.execute(
                    runs.update()
                    .where(runs.c.run_id.in_(ids), runs.c.status == "running")
                    .values(
                        status="failed",
                        finished_at=utc_now(),
                        note=f"abandoned: no sign of life for more than {older_than_s:g} s (runner died?)",
                    )
                )
            return ids

        return self.transaction(write)

    # -- reading --------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return run_dict(row) if row else None

    def steps_of(self, run_id: str) -> list[StepRow]:
        """The steps of one run in the order they were measured."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)
            ).mappings().all()
        return [step_row(row) for row in rows]

    def comparable_runs(
        self, config_hash: str, last_n: int = 7, exclude_run_id: str | None = None,
        meanings: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The last `last_n` completed runs with the same comparison key, newest first.

        Failed, cancelled and still-running runs are never a baseline: their figures are partial. Given
        tonight's `meanings` (`nightcap.results.meanings`), a figure an earlier night measured another way is
        blanked in that night (a new baseline starts) and named in its `meaning_changed`.
        """
        query = (
            sa.select(runs)
            .where(runs.c.config_hash == config_hash, runs.c.status == "completed")
            .order_by(runs.c.started_at.desc(), runs.c.id.desc())
            .limit(max(0, int(last_n)))
        )
        if exclude_run_id is not None:
            query = query.where(runs.c.run_id != exclude_run_id)
        with self.engine.connect() as conn:
            found = [run_dict(row) for row in conn.execute(query).mappings()]
        for run in found if meanings else []:
            run["meaning_changed"] = changed_figures(meanings or {}, stored_meanings(run))
            for name in run["meaning_changed"]:
                run[name] = None
        return found

    def latest_nights(self, target: str | None = None) -> list[dict[str, Any]]:
        """The newest run of each target that has ended (completed, failed or cancelled), by target name: what
        `nightcap metrics` exposes. A run still 'running' is left out, so the night before stays the latest."""
        newest = sa.func.row_number().over(partition_by=runs.c.target_name,
                                           order_by=(runs.c.started_at.desc(), runs.c.id.desc()))
        ranked = sa.select(runs.c.id, newest.label("newest")).where(runs.c.status != "running")
        if target:
            ranked = ranked.where(runs.c.target_name == target)
        ranked_q = ranked.subquery()
        query = (sa.select(runs).join(ranked_q, ranked_q.c.id == runs.c.id).where(ranked_q.c.newest == 1)
                 .order_by(runs.c.target_name))
        with self.engine.connect() as conn:
            return [run_dict(row) for row in conn.execute(query).mappings()]

    def history(self, target: str | None = None, last: int = 30) -> "pd.DataFrame":
        """The last `last` runs (any status), oldest first, one row each, for tables and trend plots."""
        import pandas as pd

        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(max(0, int(last)))
        if target:
            query = query.where(runs.c.target_name == target)
        with self.engine.connect() as conn:
            rows = [run_dict(row) for row in conn.execute(query).mappings()]
            counts = dict(
                conn.execute(
                    sa.select(steps.c.run_id, sa.func.count()).where(
                        steps.c.run_id.in_([r["run_id"] for r in rows])
                    ).group_by(steps.c.run_id)
                ).all()
            ) if rows else {}
        columns = [
            "run_id", "started_at", "finished_at", "status", "target_name", "platform", "config_hash",
            "version", *HEADLINE_NAMES, "canary", "steps", "steps_pruned", "figure_meanings", "regression",
            "verdict", "flow_run_id", "target_version", "note",
        ]
        records = []
        for row in reversed(rows):
            row["version"] = version_label(row["target_version"])
            # a regressed night ends its flow run Failed yet stays a completed measurement (and a baseline)
            row["regression"] = ((row.get("summary") or {}).get("regression") or {}).get("verdict")
            row["verdict"] = (row.get("summary") or {}).get("verdict")  # "inconclusive": a stage did not answer
            # the platform canary's rps per core that night (kept in its summary), beside the model's figures
            row["canary"] = finite(((row.get("summary") or {}).get("canary") or {}).get("rps_per_core"))
            row["steps"] = int(counts.get(row["run_id"], 0))
            row["steps_pruned"] = int(row.get("steps_pruned") or 0)
            row["figure_meanings"] = stored_meanings(row)
            records.append({name: row.get(name) for name in columns})
        frame = pd.DataFrame.from_records(records, columns=columns)
        for name in ("started_at", "finished_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        for name in (*HEADLINE_NAMES, "canary"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        return frame

    # -- plumbing -------------------------------------------------------------------------------

    def transaction(self, action: Callable[[sa.Connection], T], retry_s: float | None = None) -> T:
        """One short transaction, retried for `retry_s` when the database is lost (it restarts, a file is
        locked); a failure is a StoreError naming store.url and the fix, never its password."""

        def attempt() -> T:
            with self.engine.begin() as conn:
                return action(conn)

        return store_connect.retrying(attempt, self.display_url, self.retry_s if retry_s is None else retry_s)

    @staticmethod
    def _require(conn: sa.Connection, run_id: str) -> None:
        if conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).first() is None:
            raise KeyError(f"run {run_id!r} is not in the history; call start_run first")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_writable(url: str) -> str:
    """Open the history at `url` (creating or migrating it) and check a run could be written; returns the URL
    to show. Raises StoreError naming store.url and what to install, start or grant."""
    store = HistoryStore(url)
    try:
        store.probe_write()
        return store.display_url
    finally:
        store.close()

