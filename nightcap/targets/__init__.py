"""What is measured: how to start the model server, what to send it, and the servers nightcap bundles.

- `plan.py`             TargetPlan and `plan_target`: the command, payloads, version and default concurrency of
                        `target.kind` (reference, mlflow, command, url); `api_key` from the environment or Prefect.
- `bundled_model.py`    the wine classifier `make run` trains, saves with MLflow and serves.
- `reference_server.py` a server of known capacity (`python -m nightcap.targets.reference_server`, or
                        `nightcap serve-reference`), for tests and benchmarks.
- `reference_capacity.py` that capacity from its parameters (pure), the truth tests compare with.

Depends on: config only (plan.py); the servers depend on nothing in nightcap.
"""
