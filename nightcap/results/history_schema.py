"""The history database's tables: one row per run (headline figures as columns), one per measured step.

Step columns follow `StepRow`'s fields, so a field added there becomes a column (added by the store's
forward migration, never dropped).
"""

from __future__ import annotations

import time
from dataclasses import fields
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.steps import StepRow

# 1: runs and steps. 2: runs.figure_meanings (how each figure was measured: a change starts a new baseline)
# and runs.steps_pruned / artifacts_pruned (removed by retention; the run's headline figures stay for the trend).
SCHEMA_VERSION = 2

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, unique=True),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("started_at", sa.DateTime),  # naive UTC everywhere, so SQLite and PostgreSQL agree
    sa.Column("updated_at", sa.DateTime),  # heartbeat: last step or status change
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False, default="running"),
    sa.Column("target_name", sa.String(120)),
    sa.Column("platform", sa.String(32)),
    sa.Column("config_hash", sa.String(64)),
    sa.Column("target_version", sa.JSON),
    sa.Column("config", sa.JSON),
    *[sa.Column(name, sa.Float) for name in HEADLINE_NAMES],  # one column per headline figure
    sa.Column("summary", sa.JSON),
    sa.Column("note", sa.Text),
    sa.Column("figure_meanings", sa.JSON),
    sa.Column("steps_pruned", sa.Integer),
    sa.Column("artifacts_pruned", sa.Boolean),
    sa.Index("ix_runs_comparable", "config_hash", "status", "started_at"),
    sa.Index("ix_runs_target", "target_name", "started_at"),
)


def _step_column(name: str, kind: str) -> sa.Column:
    if name in ("replica_cpu_pct", "replica_memory_mb", "events"):
        return sa.Column(name, sa.JSON)
    if kind == "bool":
        return sa.Column(name, sa.Boolean)
    if kind.startswith("int"):
        return sa.Column(name, sa.BigInteger if name == "memory" else sa.Integer)
    if kind.startswith("float"):
        return sa.Column(name, sa.Float)
    return sa.Column(name, sa.Text)


STEP_FIELDS = [(f.name, str(f.type)) for f in fields(StepRow)]

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("recorded_at", sa.DateTime),
    *[_step_column(name, kind) for name, kind in STEP_FIELDS],
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("migrated_at", sa.DateTime),
)


def migrate(engine: Engine, attempts: int = 4) -> int | None:
    """Create what is missing and add the columns an older nightcap did not have (never drop); returns the
    schema version found (None: a new database).

    Several runs may open a new database at once (two targets in parallel): on PostgreSQL the migration holds
    an advisory lock; elsewhere a "table already exists" from a concurrent creator is retried.
    """
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))  # 'nightcap' migrations
                return _migrate(conn)
        except DBAPIError as exc:
            text = str(exc).lower()
            if attempt + 1 >= attempts or not any(s in text for s in ("already exists", "duplicate", "unique")):
                raise
            time.sleep(0.2 * (attempt + 1))
    return None  # pragma: no cover - the loop returns or raises


def _migrate(conn: sa.Connection) -> int | None:
    metadata.create_all(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    for table in (runs, steps, schema_version):
        existing = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in existing:
                kind = column.type.compile(dialect=conn.dialect)
                name = conn.dialect.identifier_preparer.quote(column.name)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
    if found is None:
        conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION, migrated_at=now))
    elif found < SCHEMA_VERSION:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION, migrated_at=now))
    return found
