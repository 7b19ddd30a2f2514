"""What is measured: how to start the model server, what to send it, and the servers nightcap bundles.

- `plan.py`             TargetPlan and `plan_target`: the command, payloads, version and default concurrency of
                        `target.kind` (reference, mlflow, command, url); `check_target` refuses a model URI
                        before anything starts and pins it; `CheckedConfig` hands the config and that model
                        from `nightcap run` to the flow; `api_key` from the environment or Prefect.
- `mlflow_model.py`     any MLflow model URI (folder, file://, runs:/, models:/name/version, @alias) resolved
                        to one model and its record (`target.version`), downloaded once per run.
- `payloads.py`         request bodies: payload_file/payload_csv, the model's input example, or synthetic rows
                        from its signature (pure).
- `smoke.py`            the one request sent right after deploy: a refusal stops the run before any load.
- `config_template.py`  the commented config `nightcap init MODEL_URI` writes.
- `bundled_model.py`    the wine classifier `make run` trains, saves with MLflow and serves.
- `reference_server.py` a server of known capacity (`python -m nightcap.targets.reference_server`, or
                        `nightcap serve-reference`), for tests and benchmarks: its slots, work, stalls and lock.
- `reference_http.py`   its HTTP/1.1: reading and parsing a request (with limits), framing a response.
- `reference_capacity.py` that capacity from its parameters (pure), the truth tests compare with.
- `canary.py`           the platform canary as a target: the reference server doing fixed work, on the model's
                        platform (a stock Python image on Kubernetes, running `server_program`: both server
                        files as one `python -c` program).

Depends on: config and analysis (canary.py: its settings; plan.py: MLflow only to resolve a model URI); the servers depend on
nothing in nightcap but each other (reference_server.py imports reference_http.py; both standard library only).
"""
