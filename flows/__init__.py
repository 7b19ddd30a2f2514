"""The Prefect flows: the recipe, one subflow per stage, orchestration only.

- `capacity_check.py`  the parent flow: deploy, the configured stages in order, teardown, summary and report.
- `tune.py`, `ramp.py` (single_client, multi_client), `scaling.py`, `sizing.py`, `autoscale.py`,
  `regression.py`  one stage each; each returns its typed result (`nightcap.results.stages`) and keeps it on
  the run's context.

Stage subflows take a `run_id` and look the run up (`RunContext.get`): Prefect serializes flow parameters
for its API and UI, and the context holds live processes and clients. Measuring, analysis, plots and the
summary live in `nightcap/`; Prefect tasks in `tasks/`.
"""
