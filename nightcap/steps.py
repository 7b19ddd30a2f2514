"""One measured load step: the row of `steps.csv` (a contract other tools read)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable


@dataclass
class StepRow:
    """U users (or, open loop, a rate) held for a warm-up and then a measured window, with what the replicas
    did meanwhile."""

    stage: str
    step: int
    replicas: int
    cpu: float | None
    memory: int | None
    concurrency: int
    users: int
    rps: float = 0.0  # goodput: successful requests per second (failures are in error_rate)
    rps_halfwidth: float | None = None  # 95% half-width of rps from the window's sub-windows (batch means)
    batches: int = 0  # sub-windows behind rps_halfwidth
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float = 0.0
    requests: int = 0
    failures: int = 0
    workers: int = 1
    generator_cpu_pct: float = 0.0  # the busiest generator process, % of one core
    generator_bound: bool = False
    replica_cpu_pct: list[float] = field(default_factory=list)  # mean use per replica, % of its limit (or of a core)
    replica_memory_mb: list[float] = field(default_factory=list)  # peak per replica
    restarts: int = 0
    oom_kills: int = 0
    pending: int = 0
    valid: bool = True
    note: str = ""
    started_at: float = 0.0
    duration_s: float = 0.0
    events: list[str] = field(default_factory=list)
    # open loop (load == "open"): arrivals at a planned rate instead of `users`; latencies from the planned
    # send time. `rps` is the goodput, `offered_rps` what the schedule sent.
    load: str = "closed"
    offered_rps: float | None = None
    late: int | None = None  # arrivals sent more than a few ms behind schedule
    dropped: int | None = None  # arrivals not sent: the worker's in-flight bound was full
    mean_ms: float | None = None
    replica_cpu_source: str = ""  # e.g. "metrics-server, 15s intervals; 2 inside the window"
    generator_cpu_source: str = ""  # e.g. "worker CPU counters over the window"
    # why the window was measured: search (choosing the knee), confirm (fresh windows at the chosen knee: the
    # figure), verify (a later stage meeting the same pod), recheck / pair (settling a disagreement, paired
    # ratios), operating (the open-loop check); only confirm/verify/recheck/pair windows make capacity.per_pod
    purpose: str = "search"

    def to_csv_row(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("replica_cpu_pct", "replica_memory_mb", "events"):
            row[key] = json.dumps(row[key])
        return row


STEP_COLUMNS = [f.name for f in fields(StepRow)]


def write_steps_csv(path: Path, rows: Iterable[StepRow]) -> None:
    """Rewrite the whole file atomically, so a crash never leaves a half-written steps.csv."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=STEP_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_csv_row())
    tmp.replace(path)


def read_steps_csv(path: Path) -> list[StepRow]:
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            rows.append(_parse(raw))
    return rows


def _parse(raw: dict[str, str]) -> StepRow:
    types = {f.name: f.type for f in fields(StepRow)}
    out: dict[str, Any] = {}
    for key, text in raw.items():
        kind = str(types.get(key, "str"))
        if key in ("replica_cpu_pct", "replica_memory_mb", "events"):
            out[key] = json.loads(text or "[]")
        elif kind == "bool":
            out[key] = text == "True"
        elif text == "" and "None" in kind:
            out[key] = None
        elif kind.startswith("int"):
            out[key] = int(float(text))
        elif kind.startswith("float"):
            out[key] = float(text)
        else:
            out[key] = text
    return StepRow(**out)
