"""The history database's tables: one row per run (headline figures as columns), one per measured step.

Step columns follow `StepRow`'s fields, so a field added there becomes a column (added by the store's
forward migration, never dropped).
"""

from __future__ import annotations

from dataclasses import fields

import sqlalchemy as sa

from nightcap.analysis.figures import HEADLINE_NAMES
from nightcap.results.steps import StepRow

SCHEMA_VERSION = 1
HEADLINE_FIGURES = HEADLINE_NAMES  # one column per figure (nightcap.analysis.figures)

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
    *[sa.Column(name, sa.Float) for name in HEADLINE_FIGURES],
    sa.Column("summary", sa.JSON),
    sa.Column("note", sa.Text),
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
