"""What a run produces: step rows, summary.json, report.md, plots, the SQL history and its CLI.

- `steps.py`        StepRow (one measured window) and steps.csv.
- `no_answer.py`    why a run whose stages measured no saturation point has none (that run is failed).
- `summary.py`      the headline figures chosen from the stages that ran (summary.json contract keys).
- `report.py`       report.md, the one-line answer and the ramp / p95-by-cores plots.
- `trend.py`        the trend plot over nights, level changes marked.
- `level_changes.py` where the headline figures changed level (change points), for history and the trend table.
- `store.py`        the results history (SQLAlchemy; SQLite by default).
- `history_cli.py`  `nightcap history`.
- `events.py`       the Prefect events a finished run emits (names, target resource, payloads), as plain dicts.

Depends on: config, analysis (regression's `finite`), run (context, for summary.py). Never on flows/ or tasks/.
"""
