"""The Prefect flows: the recipe, one subflow per stage, orchestration only.

- `capacity_check.py`  the parent flow: deploy, the configured stages in order, teardown, summary and report.
- `tune.py`, `ramp.py` (single_client, multi_client), `scaling.py`, `sizing.py`, `autoscale.py`,
  `regression.py`  one stage each; each returns its typed result (`nightcap.results.stages`) and keeps it on
  the run's context.

Stage subflows take the run's context wrapped in a `StageRun` (nightcap/run/context.py): Prefect records it
as the run id and target, never the context's live clients or API key. Measuring, analysis, plots and the
summary live in `nightcap/`; Prefect tasks in `tasks/`.
"""
