"""What a run produces: typed stage results, summary.json, report.md, plots, steps.csv, the SQL history.

- `stages.py`         typed results of each stage (TuneResult, RampResult, ...), kept on RunContext.results.
- `summary.py`        summary.json built from those results: the only place its keys are written.
- `report.py`         report.md, the one-line answer, and each stage's line and section.
- `plots.py`          every plot (matplotlib, Agg backend set once here).
- `steps.py`          StepRow (one measured window) and steps.csv.
- `store.py`          the results history (SQLAlchemy; SQLite by default); `history_schema.py` its tables,
                      `redact.py` what keeps secrets out of it.
- `history_cli.py`    `nightcap history`.

Depends on: config, search, analysis; summary.py reads a RunContext (run/). Never on flows/ or tasks/.
"""
