"""Consistency: does the same pod give the same figure when measured again, and in every stage of one run?

Two parts, each its own run of `nightcap run` (as `make run` starts it: its own Prefect server, report folder
and throwaway history store):

- `repeated`: `single_client` alone on the bundled MLflow model (configs/local.yaml's pod: 1 CPU, 1Gi,
  concurrency 1), 5 times with CPU pinning (`platform.pin_cpus: true`, the default) and 5 times without,
  interleaved (pinned, unpinned, unpinned, pinned, ...) so a drift of the machine's speed hits both alike;
- `stages`: one full `make run` (every stage); the per-pod saturation figures of the stages that measured
  the tuned pod on one replica (tune's chosen candidate, single_client, multi_client, scaling at 1 replica),
  as `summary.json` reports them in `capacity.per_pod.measurements` (or, before that key, in each block).

Each part prints the spread (max - min) / median; the target is <= 5% across repeated runs and across stages
with pinning. `python -m bench.consistency repeated` (or `stages`) runs one part and keeps the other part's
rows of bench/results/consistency.csv, so the two can be measured in separate sittings; `repeated --runs 3-4`
runs only those repeats (each pinned and not) and keeps the CSV's rows of the others, so the ten runs (about
a minute each) can be spread over several holds of the load lock.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import RESULTS, Table, fmt
from nightcap.run.registry import kill_process_tree

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local.yaml"
REPEATS = 5
TIMEOUT_S = 600.0
TARGET_SPREAD = 0.05
COLUMNS = ["part", "pinning", "run", "stage", "saturation_rps", "ci_pct", "users", "wall_s", "pinning_mode", "note"]


def nightcap_run(sets: list[str], timeout_s: float = TIMEOUT_S) -> tuple[dict[str, Any] | None, float, str]:
    """One `nightcap run configs/local.yaml --set ...` in its own folder; its summary (None if none), wall, note."""
    work = Path(tempfile.mkdtemp(prefix="nightcap-bench-consistency-"))
    out = work / "report"
    exe = Path(sys.executable).with_name("nightcap")
    argv = [str(exe), "run", str(CONFIG), "--out", str(out), "--set", f"store.url=sqlite:///{work / 'history.db'}"]
    for item in sets:
        argv += ["--set", item]
    env = {**os.environ, "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(ROOT / ".prefect"))}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.pop("PREFECT_API_URL", None)  # each run starts (and pins) its own server, as `make run` does
    started = time.monotonic()
    with (work / "run.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    note = ""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        note = f"stopped after {timeout_s:.0f}s"
    finally:
        if proc.poll() is None:
            kill_process_tree(proc.pid, grace_s=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    wall = time.monotonic() - started
    path = out / "summary.json"
    if not path.exists():
        tail = (work / "run.log").read_text(errors="replace").splitlines()[-5:]
        return None, wall, note or f"exit {proc.returncode}, no summary: " + " | ".join(tail)
    return json.loads(path.read_text()), wall, note or f"exit {proc.returncode}"


def _ci_pct(block: dict[str, Any]) -> float | None:
    ci, rps = block.get("rps_ci"), block.get("rps")
    if not ci or not rps or ci[0] is None or ci[1] is None:
        return None
    return 100.0 * (ci[1] - ci[0]) / 2 / rps


def spread(values: list[float]) -> float | None:
    """(max - min) / median: how far apart measurements of one thing fall."""
    values = [v for v in values if v]
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def repeated(table: Table, runs: range = range(REPEATS)) -> None:
    order = []
    for i in runs:  # ABBA: pinned first in even pairs, unpinned first in odd ones
        order += [(i, True), (i, False)] if i % 2 == 0 else [(i, False), (i, True)]
    for i, pinned in order:
        summary, wall, note = nightcap_run(['stages=["single_client"]', f"platform.pin_cpus={str(pinned).lower()}"])
        block = ((summary or {}).get("single_client") or {}).get("saturation") or {}
        mode = (((summary or {}).get("platform") or {}).get("cpu_pinning") or {}).get("mode")
        table.add("repeated", "on" if pinned else "off", i + 1, "single_client", fmt(block.get("rps")),
                  fmt(_ci_pct(block)), block.get("users"), fmt(wall), mode, note)


def per_pod_figures(summary: dict[str, Any]) -> list[tuple[str, float | None, float | None, Any]]:
    """(stage, rps, ci %, users) of each stage's measurement of the tuned pod on one replica."""
    per_pod = ((summary.get("capacity") or {}).get("per_pod") or {})
    if per_pod.get("measurements"):
        out = []
        for m in per_pod["measurements"]:
            ci = m.get("ci")
            pct = 100.0 * (ci[1] - ci[0]) / 2 / m["rps"] if ci and m.get("rps") and ci[0] is not None else None
            out.append((m["stage"], m.get("rps"), pct, m.get("users")))
        return out
    out = []
    tuning = summary.get("tuning") or {}
    if tuning.get("best"):
        out.append(("tune", tuning["best"].get("saturation_rps"), None, None))
    for stage in ("single_client", "multi_client"):
        sat = (summary.get(stage) or {}).get("saturation") or {}
        if sat.get("rps"):
            out.append((stage, sat["rps"], _ci_pct(sat), sat.get("users")))
    rows = [r for r in (summary.get("scaling") or {}).get("rows", []) if r.get("replicas") == 1]
    if rows:
        out.append(("scaling", rows[0].get("saturation_rps"), None, rows[0].get("saturation_users")))
    return out


def stages(table: Table) -> None:
    summary, wall, note = nightcap_run([])
    if summary is None:
        table.add("stages", "on", 1, "make run", None, None, None, fmt(wall), None, note)
        return
    mode = ((summary.get("platform") or {}).get("cpu_pinning") or {}).get("mode")
    for stage, rps, pct, users in per_pod_figures(summary):
        table.add("stages", "on", 1, stage, fmt(rps), fmt(pct), users, fmt(wall), mode, note)
    warnings = [w for w in summary.get("warnings", []) if "disagree" in w]
    table.notes.extend(f"make run warned: {w}" for w in warnings)


def _verdicts(table: Table) -> None:
    def figures(part: str, pinning: str) -> list[float]:
        return [float(r[4]) for r in table.rows if r[0] == part and r[1] == pinning and r[4] not in (None, "")]

    for part, pinning, what in (("repeated", "on", "single_client runs, pinned"),
                                ("repeated", "off", "single_client runs, not pinned"),
                                ("stages", "on", "the stages of one make run, pinned")):
        values = figures(part, pinning)
        s = spread(values)
        if s is None:
            continue
        met = "met" if s <= TARGET_SPREAD else "NOT met"
        table.notes.append(f"{len(values)} {what}: {', '.join(f'{v:.1f}' for v in values)} rps; spread (max-min)/median "
                           f"{100 * s:.1f}% (target <= {100 * TARGET_SPREAD:.0f}%: {met})")


def _kept_rows(keep: Callable[[list[str]], bool]) -> list[list[Any]]:
    path = RESULTS / "consistency.csv"
    if not path.exists():
        return []
    with path.open() as handle:
        rows = [r for r in csv.reader(handle)]
    if not rows or rows[0] != COLUMNS:
        return []
    return [[None if v == "" else v for v in r] for r in rows[1:] if r and keep(r)]


def run(parts: tuple[str, ...] = ("repeated", "stages"), runs: range = range(REPEATS)) -> Table:
    """`runs`: the repeats (0-based) measured now; the CSV's rows of the other repeats and parts are kept."""
    table = Table("consistency", "Consistency: the same pod measured again, and by every stage of one run",
                  COLUMNS)
    measured = {str(i + 1) for i in runs}
    table.rows += _kept_rows(lambda r: r[0] == "repeated" and ("repeated" not in parts or r[2] not in measured))
    if "repeated" in parts:
        repeated(table, runs)
    table.rows.sort(key=lambda r: (int(r[2]), r[1] != "on"))
    if "stages" in parts:
        stages(table)
    else:
        table.rows += _kept_rows(lambda r: r[0] == "stages")
    _verdicts(table)
    table.notes.append("each run is `nightcap run configs/local.yaml` with its own Prefect server; figures are "
                       "summary.json's saturation rps (goodput at the saturation users) and its 95% half-width")
    return table


if __name__ == "__main__":
    from bench.common import machine_line
    from bench.run_all import record_machine, show

    chosen = tuple(a for a in sys.argv[1:] if a in ("repeated", "stages")) or ("repeated", "stages")
    picked = range(REPEATS)
    if "--runs" in sys.argv:  # e.g. --runs 3-4 (1-based, inclusive)
        first, _, last = sys.argv[sys.argv.index("--runs") + 1].partition("-")
        picked = range(int(first) - 1, int(last or first))
    result = run(chosen, picked)
    show(result)
    result.write_csv()
    record_machine("consistency", machine_line())
