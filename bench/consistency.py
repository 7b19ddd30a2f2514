"""Consistency: does the same pod give the same figure when measured again, and one figure in every stage of a run?

Five runs of `nightcap run configs/local.yaml --set stages=[tune,single_client,multi_client,scaling]` (the bundled
MLflow model, as `make run` starts it: its own Prefect server, report folder and throwaway history store), one
after another. Per run: `capacity.per_pod` (the pod's one figure: rps per pod, its 95% interval, how many fresh
windows, which stage confirmed it, confirmed or unstable) and whether every per-pod figure in summary.json is that
one (the headline's saturation, both ramps' blocks, scaling's one-pod row, the tuning table's chosen row).

Targets (issue 22): every run's interval contains the median of the five; median half-width <= 10%; within each
run every per-pod figure is capacity.per_pod's. `python -m bench.consistency [--runs 3-5]` measures only those runs
(1-based) and keeps the CSV's rows of the others, so the runs (about three minutes each) can be split.
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
from nightcap.results.metrics_samples import pod_label  # the pod as tuning and the metrics name it
from nightcap.processes.registry import kill_process_tree

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local.yaml"
REPEATS = 5
TIMEOUT_S = 900.0
STAGES = '["tune","single_client","multi_client","scaling"]'
COLUMNS = ["run", "per_pod_rps", "ci_low", "ci_high", "halfwidth_pct", "status", "windows", "confirmed_by",
           "checks", "one_figure", "wall_s", "note", "pod"]


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


def one_figure(summary: dict[str, Any]) -> tuple[bool, str]:
    """Every per-pod figure of the run is capacity.per_pod's: (true/false, the ones that differ)."""
    per_pod = (summary.get("capacity") or {}).get("per_pod") or {}
    rps, replicas = per_pod.get("rps"), per_pod.get("replicas") or 1
    if rps is None:
        return False, "no capacity.per_pod"
    seen = {"saturation": (summary.get("saturation") or {}).get("rps")}
    for stage in ("single_client", "multi_client"):
        seen[stage] = ((summary.get(stage) or {}).get("saturation") or {}).get("rps")
    tuning = summary.get("tuning") or {}
    if tuning.get("replicas") == replicas:  # the chosen pod's row of the tuning table, on the same pod count
        seen["tuning"] = (tuning.get("best") or {}).get("saturation_rps")
    rows = [r for r in (summary.get("scaling") or {}).get("rows", []) if r.get("replicas") == 1]
    if rows:
        seen["scaling 1 pod"] = rows[0].get("saturation_rps")
    differ = [f"{k} {v}" for k, v in seen.items() if v is not None and abs(v / replicas - rps) > 0.01]
    return not differ, "; ".join(differ)


def measure(table: Table, runs: range) -> None:
    for i in runs:
        summary, wall, note = nightcap_run([f"stages={STAGES}"])
        per_pod = ((summary or {}).get("capacity") or {}).get("per_pod") or {}
        ci = per_pod.get("ci") or [None, None]
        half = (100 * (ci[1] - ci[0]) / 2 / per_pod["rps"]) if ci[0] is not None and per_pod.get("rps") else None
        ok, differ = one_figure(summary or {})
        checks = "; ".join(f"{c['stage']} {c['outcome']}" for c in per_pod.get("checks") or [])
        table.add(i + 1, fmt(per_pod.get("rps")), fmt(ci[0]), fmt(ci[1]), fmt(half), per_pod.get("status"),
                  per_pod.get("windows"), per_pod.get("stage"), checks, "yes" if ok else f"no: {differ}", fmt(wall),
                  note, pod_label(per_pod.get("pod")))



def _verdicts(table: Table) -> None:
    rows = [r for r in table.rows if r[1] not in (None, "")]
    if not rows:
        return
    table.notes.append("all runs: " + _verdict(rows))
    shapes: dict[str, list[list[Any]]] = {}
    for r in rows:
        shapes.setdefault(str(r[12]) if len(r) > 12 and r[12] else "pod not recorded", []).append(r)
    if len(shapes) > 1:  # tune chose different pods: the same pod measured again is only the runs of one shape
        for shape, same in shapes.items():
            if len(same) > 1:
                table.notes.append(f"runs of {shape} only: " + _verdict(same))
        table.notes.append("tune chose " + "; ".join(f"{shape} in run(s) {', '.join(str(r[0]) for r in same)}"
                                                     for shape, same in shapes.items()))


def _verdict(rows: list[list[Any]]) -> str:
    values = [float(r[1]) for r in rows]
    median = statistics.median(values)
    contain = sum(1 for r in rows if r[2] not in (None, "") and float(r[2]) <= median <= float(r[3]))
    halves = [float(r[4]) for r in rows if r[4] not in (None, "")]
    one = sum(1 for r in rows if r[9] == "yes")
    spread = (max(values) - min(values)) / median
    return (f"{len(rows)} runs: capacity.per_pod {', '.join(f'{v:.1f}' for v in values)} rps per pod, median "
            f"{median:.1f}, spread (max-min)/median {100 * spread:.1f}%; the median inside a run's 95% interval in "
            f"{contain}/{len(rows)} (target: all); median half-width {statistics.median(halves):.1f}% (target <= "
            f"10%); one figure in every block in {one}/{len(rows)} runs")


def _kept_rows(keep: Callable[[list[str]], bool]) -> list[list[Any]]:
    path = RESULTS / "consistency.csv"
    if not path.exists():
        return []
    with path.open() as handle:
        rows = [r for r in csv.reader(handle)]
    if not rows or rows[0] != COLUMNS:
        return []
    return [[None if v == "" else v for v in r] for r in rows[1:] if r and keep(r)]


def run(runs: range = range(REPEATS)) -> Table:
    """`runs`: the repeats (0-based) measured now; the CSV's rows of the others are kept."""
    table = Table("consistency", "One pod, one number: capacity.per_pod over repeated runs of the bundled model",
                  COLUMNS)
    measured = {str(i + 1) for i in runs}
    table.rows += _kept_rows(lambda r: r[0] not in measured)
    measure(table, runs)
    table.rows.sort(key=lambda r: int(r[0]))
    _verdicts(table)
    table.notes.append(f"each run is `nightcap run configs/local.yaml --set stages={STAGES}` with its own Prefect "
                       "server, one at a time")
    return table


if __name__ == "__main__":
    from bench.common import machine_line
    from bench.run_all import record_machine, show

    picked = range(REPEATS)
    if "--runs" in sys.argv:  # e.g. --runs 3-4 (1-based, inclusive)
        first, _, last = sys.argv[sys.argv.index("--runs") + 1].partition("-")
        picked = range(int(first) - 1, int(last or first))
    result = run(picked)
    show(result)
    result.write_csv()
    record_machine("consistency", machine_line())
