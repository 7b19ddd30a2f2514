"""What a run produces: typed stage results, summary.json, report.md, plots, the SQL history.

- `stages.py`         typed results of each stage (TuneResult, RampResult, ...), kept on RunContext.results.
- `summary.py`        summary.json built from those results: the only place its keys are written, with
                      `capacity.py` for its `capacity` block (one figure per pod shape, and the warnings it raises).
- `verdicts.py`       stage verdicts (completed / inconclusive / failed) and how the run ends (state, exit code);
                      `run_end.py` applies them at the end of a run: its history status and the error it raises.
- `report.py`         report.md, the one-line answer, and each stage's line; `report_lines.py` the lines that
                      frame it (how sure, verdicts, fits, checks, warnings); `report_sections.py` the sections.
- `glance.py`         the night at a glance in the Prefect UI: the flow run's name (target and night) and the
                      answer artifact (one pod's figure, the operating rate, how sure, the verdict against earlier
                      nights); pure, published by tasks/artifacts.py.
- `plots.py`          every plot (matplotlib, Agg backend set once here), the trend with its level changes too.
- `store.py`          the results history (SQLAlchemy; SQLite by default); `history_schema.py` its tables,
                      `history_rows.py` what a run's or step's row holds, `redact.py` what keeps secrets out of it.
- `level_changes.py`  where the headline figures changed level (change points), for history and the trend table.
- `history_cli.py`    `nightcap history`.
- `metrics_samples.py` the nights as Prometheus samples (metric names, labels, values; pure); `openmetrics.py` their
                      OpenMetrics text and the Pushgateway push; `metrics_cli.py` `nightcap metrics`.
- `no_answer.py`      why a run whose stages measured no saturation point has none (that run is failed).
- `events.py`         the Prefect events a finished run emits (names, target resource, payloads), as plain dicts.
- `mlflow_fields.py`  what a night writes to MLflow (version tags, the run's metrics, params, tags) from summary.json:
                      pure; `publish_mlflow.py` writes it with MLflow's client, bounded in time, failures as warnings.

Depends on: config, steps (StepRow, steps.csv: `nightcap/steps.py`), analysis, search, confirm, warm_start, targets
(the resolved model URI a night is published for);
summary.py names what it reads of a run (`RunRecord`: run/context.py provides it). Never on run/, flows/, tasks/.
"""
