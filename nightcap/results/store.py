"""Results history: one row per run and one per measured step, in any SQL database SQLAlchemy speaks.

A nightly check is only useful if it can say what changed since last night, so every run is recorded
here (a SQLite file by default, PostgreSQL or anything else by `store.url`). Steps are written one at
a time as they are measured, each in its own short transaction, so a run that crashes, is cancelled
or is killed keeps everything it measured; `mark_abandoned` later marks such runs failed.

The schema (`history_schema.py`) is created on first use and migrated forward by adding columns; nothing
is ever dropped. No secret reaches the database: the config dump has `target.headers` values and
secret-looking keys replaced, and any string given in `redact` is scrubbed from everything written
(`redact.py`).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError, SQLAlchemyError

from nightcap.analysis.change_points import finite
from nightcap.results.history_schema import (HEADLINE_FIGURES, SCHEMA_VERSION, STEP_FIELDS, metadata, runs,
                                             schema_version, steps)
from nightcap.results.redact import config_dump, sanitize
from nightcap.results.steps import StepRow

if TYPE_CHECKING:
    import pandas as pd

    from nightcap.config import Config

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///.nightcap/history.db"
RUN_STATUSES = ("running", "completed", "failed", "cancelled")
_MAX_TEXT = 4000


class StoreError(Exception):
    """The history database cannot be opened or written; the message says what to change."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _number(value: Any) -> float | None:
    """Headline figures are plain floats; NaN, inf and non-numbers are stored as NULL."""
    return finite(value)


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

    def __init__(self, url: str | None = None, *, redact: Iterable[str] = (), echo: bool = False) -> None:
        self.url = url or DEFAULT_URL
        self._redact = [s for s in redact if s]
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StoreError(
                f"store.url {self.url!r} is not a database URL; use e.g. sqlite:///.nightcap/history.db "
                "or postgresql+psycopg://user@host/db"
            ) from None
        self.display_url = parsed.render_as_string(hide_password=True)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                try:
                    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the folder for {self.display_url}: {exc.strerror}") from None
            connect_args["timeout"] = 30  # wait for a concurrent writer instead of failing at once
        try:
            self.engine: Engine = sa.create_engine(self.url, echo=echo, connect_args=connect_args, future=True)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise StoreError(f"cannot use store.url {self.display_url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    # -- schema ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create what is missing and add columns an older nightcap did not have; never drop."""
        try:
            metadata.create_all(self.engine, checkfirst=True)
            inspector = sa.inspect(self.engine)
            for table in (runs, steps, schema_version):
                existing = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in existing:
                        self._add_column(table, column)
                for index in table.indexes:
                    index.create(self.engine, checkfirst=True)
            with self.engine.begin() as conn:
                found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
                if found is None:
                    conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION, migrated_at=_now()))
                elif found < SCHEMA_VERSION:
                    conn.execute(
                        schema_version.update().values(version=SCHEMA_VERSION, migrated_at=_now())
                    )
                elif found > SCHEMA_VERSION:
                    log.warning(
                        "history at %s has schema version %s, newer than this nightcap (%s); writing only the "
                        "columns this version knows",
                        self.display_url,
                        found,
                        SCHEMA_VERSION,
                    )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the results history at {self.display_url}: {exc.__class__.__name__}: "
                             f"{_first_line(exc)}") from None

    def _add_column(self, table: sa.Table, column: sa.Column) -> None:
        kind = column.type.compile(dialect=self.engine.dialect)
        ddl = f"ALTER TABLE {table.name} ADD COLUMN {self.engine.dialect.identifier_preparer.quote(column.name)} {kind}"
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(ddl))
            log.info("history: added column %s.%s", table.name, column.name)
        except (OperationalError, ProgrammingError):
            # another process may have added it a moment ago; only a real absence is an error
            columns = {c["name"] for c in sa.inspect(self.engine).get_columns(table.name)}
            if column.name not in columns:
                raise

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
        now = _now()
        values = {
            "flow_run_id": str(flow_run_id) if flow_run_id else None,
            "updated_at": now,
            "finished_at": None,
            "status": "running",
            "target_name": config.target.name,
            "platform": config.platform.kind,
            "config_hash": config.config_hash(),
            "target_version": sanitize(dict(target_version or {}), self._redact),
            "config": config_dump(config, self._redact),
        }
        with self._write() as conn:
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id)).first()
            if exists:
                conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))
            else:
                conn.execute(runs.insert().values(run_id=run_id, started_at=now, **values))

    def add_step(self, run_id: str, row: StepRow) -> None:
        """Append one measured step right away, in its own transaction, so a later crash keeps it."""
        data = sanitize(
            {name: getattr(row, name) for name, _ in STEP_FIELDS}, self._redact
        )
        for name in ("note",):
            if isinstance(data.get(name), str):
                data[name] = data[name][:_MAX_TEXT]
        now = _now()
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute(steps.insert().values(run_id=run_id, recorded_at=now, **data))
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(updated_at=now))

    def heartbeat(self, run_id: str) -> None:
        """Say the run is alive during a long step, so `mark_abandoned` leaves it alone."""
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(updated_at=_now()))

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
        unknown = sorted(set(headline) - set(HEADLINE_FIGURES))
        if unknown:
            log.warning("history: ignoring unknown headline figures %s (known: %s)", unknown, HEADLINE_FIGURES)
        values: dict[str, Any] = {name: _number(headline.get(name)) for name in HEADLINE_FIGURES if name in headline}
        now = _now()
        values.update(status=status, updated_at=now, finished_at=None if status == "running" else now)
        if summary is not None:
            values["summary"] = sanitize(dict(summary), self._redact)
        if note is not None:
            values["note"] = sanitize(note, self._redact)[:_MAX_TEXT]
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))

    def mark_abandoned(self, older_than_s: float) -> list[str]:
        """Mark runs still 'running' with no sign of life for `older_than_s` as failed; return their ids.

        A runner killed with SIGKILL never calls finish_run; without this its run would look
        in progress forever. Its steps are kept.
        """
        cutoff = _now() - timedelta(seconds=max(0.0, older_than_s))
        last_seen = sa.func.coalesce(runs.c.updated_at, runs.c.started_at)
        with self._write() as conn:
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
                        finished_at=_now(),
                        note=f"abandoned: no sign of life for more than {older_than_s:g} s (runner died?)",
                    )
                )
        return ids

    # -- reading --------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return _run_dict(row) if row else None

    def steps_of(self, run_id: str) -> list[StepRow]:
        """The steps of one run in the order they were measured."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)
            ).mappings().all()
        names = [name for name, _ in STEP_FIELDS]
        out = []
        for row in rows:
            data = {name: row[name] for name in names}
            for name in ("replica_cpu_pct", "replica_memory_mb", "events"):
                data[name] = list(data[name] or [])
            out.append(StepRow(**data))
        return out

    def comparable_runs(
        self, config_hash: str, last_n: int = 7, exclude_run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The last `last_n` completed runs with the same comparison key, newest first.

        Failed, cancelled and still-running runs are never a baseline: their figures are partial.
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
            return [_run_dict(row) for row in conn.execute(query).mappings()]

    def history(self, target: str | None = None, last: int = 30) -> "pd.DataFrame":
        """The last `last` runs (any status), oldest first, one row each, for tables and trend plots."""
        import pandas as pd

        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(max(0, int(last)))
        if target:
            query = query.where(runs.c.target_name == target)
        with self.engine.connect() as conn:
            rows = [_run_dict(row) for row in conn.execute(query).mappings()]
            counts = dict(
                conn.execute(
                    sa.select(steps.c.run_id, sa.func.count()).where(
                        steps.c.run_id.in_([r["run_id"] for r in rows])
                    ).group_by(steps.c.run_id)
                ).all()
            ) if rows else {}
        columns = [
            "run_id", "started_at", "finished_at", "status", "target_name", "platform", "config_hash",
            "version", *HEADLINE_FIGURES, "canary", "steps", "regression", "verdict", "flow_run_id", "target_version",
            "note",
        ]
        records = []
        for row in reversed(rows):
            row["version"] = version_label(row["target_version"])
            # a regressed night ends its flow run Failed yet stays a completed measurement (and a baseline)
            row["regression"] = ((row.get("summary") or {}).get("regression") or {}).get("verdict")
            row["verdict"] = (row.get("summary") or {}).get("verdict")  # "inconclusive": a stage did not answer
            # the platform canary's rps per core that night (kept in its summary), beside the model's figures
            row["canary"] = _number(((row.get("summary") or {}).get("canary") or {}).get("rps_per_core"))
            row["steps"] = int(counts.get(row["run_id"], 0))
            records.append({name: row.get(name) for name in columns})
        frame = pd.DataFrame.from_records(records, columns=columns)
        for name in ("started_at", "finished_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        for name in (*HEADLINE_FIGURES, "canary"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        return frame

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One short transaction; database errors become a StoreError naming the store, never its password."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot write to the results history at {self.display_url}: {_first_line(exc)}"
            ) from None

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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else exc.__class__.__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL keeps readers off the writer's back and survives a crash mid-write with a consistent file."""
    cursor = dbapi_conn.cursor()
    try:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # noqa: BLE001 - in-memory and some network filesystems cannot do WAL
            pass
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def _run_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    for name in ("started_at", "updated_at", "finished_at"):
        data[name] = _as_utc(data.get(name))
    for name in ("target_version", "config", "summary"):
        if isinstance(data.get(name), str):  # a foreign writer may have stored JSON text
            try:
                data[name] = json.loads(data[name])
            except ValueError:
                pass
    data.pop("id", None)
    return data
