"""`make bench`: every benchmark in turn (never two at once: this machine has 2 cores), one table each.

Tables are printed with rich and written to bench/results/<name>.csv, with bench/results/machine.txt saying
where they were measured. `python -m bench.run_all search_accuracy fidelity` runs only those.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

from rich.console import Console
from rich.table import Table as RichTable

from bench.common import RESULTS, Table, machine_line

ORDER = ["coverage", "search_accuracy", "warm_start", "generator_efficiency", "fidelity", "open_loop", "end_to_end",
         "consistency", "alarm"]
console = Console(width=200)


def show(table: Table) -> None:
    rich = RichTable(title=table.title, title_justify="left", show_lines=False)
    for column in table.columns:
        rich.add_column(column, overflow="fold")
    for row in table.rows:
        rich.add_row(*["" if v is None else str(v) for v in row])
    console.print(rich)
    for note in table.notes:
        console.print(f"  - {note}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or ORDER
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        console.print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = machine_line()
    console.print(f"machine: {machine}", highlight=False)
    failed = []
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        console.rule(name)
        try:
            table = importlib.import_module(f"bench.{name}").run()
        except Exception:
            failed.append(name)
            console.print(traceback.format_exc(), highlight=False)
            continue
        table.notes.append(f"benchmark wall time {time.monotonic() - t0:.0f}s")
        show(table)
        path = table.write_csv()
        record_machine(name, machine)
        console.print(f"  written: {path.relative_to(RESULTS.parent.parent)}", highlight=False)
    console.rule()
    console.print(f"all benchmarks: {time.monotonic() - started:.0f}s" + (f"; failed: {', '.join(failed)}" if failed else ""),
                  highlight=False)
    return 1 if failed else 0


def record_machine(name: str, machine: str) -> None:
    """machine.txt: one line per benchmark, so running one benchmark keeps where the others were measured."""
    path = RESULTS / "machine.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if ": " in line and line.split(": ", 1)[0] in ORDER and line.split(": ", 1)[0] != name]
    entries = {line.split(": ", 1)[0]: line for line in kept + [f"{name}: {machine}"]}
    path.write_text("".join(entries[n] + "\n" for n in ORDER if n in entries))


if __name__ == "__main__":
    sys.exit(main())
