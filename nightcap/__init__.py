"""nightcap: nightly capacity checks of ML models served over HTTP, as Prefect flows.

File map (each package's `__init__` says what lives in it):
- `cli.py`        the `nightcap` command (run, validate, serve-reference, history, cleanup).
- `config.py`     one validated Config flows through everything: YAML, `--set`, errors naming the field.
- `config_sections.py` its sections (target, platform, load, search, slo, ...), one pydantic model each;
                      `config_history.py` those about the nights as a series (store, publish, retention, canary,
                      regression).
- `quantities.py` CPU and memory quantities ("500m", "768Mi") parsed and formatted.
- `steps.py`      StepRow (one measured window) and steps.csv: below analysis, which reads step rows.
- `search/`       pure: the saturation search, the knee and where the figure is measured, its confirmation on
                  fresh windows, warm starts from the last comparable night (for tune too).
- `analysis/`     pure capacity analysis: saturation, tuning, USL, sizing, HPA model, autoscale timings, regression.
- `targets/`      what is measured: target plans, the bundled model, the reference server.
- `processes/`    what a run started on this machine (registry, with a heartbeat) and its listen ports.
- `locust_env.py` the locustfile's files and environment, alike for Locust processes, pods and the manifest preview.
- `platforms/`    where replicas run: the Platform protocol (base), local processes + cgroups, an external URL.
- `kube/`         replicas on Kubernetes (+ GKE node pools): client, manifests, lease and sweep, render, preflight.
- `load/`         the load generator (Locust as processes or pods) and the step runner.
- `run/`          the run's lifecycle: context, the platform it gets, cleanup, lock, safety limits, Prefect server.
- `results/`      typed stage results, summary, report, plots, history store.

Data flows one way: config -> targets + platforms/kube + load -> step rows -> search/analysis -> results.
Imports point down, in this order (tests/test_layering.py holds it, with the few arrows still running up):
quantities -> config -> steps -> analysis -> search -> targets -> results -> processes
-> locust_env -> platforms -> kube -> load -> run -> tasks -> flows -> cli. Prefect lives only in the top-level `flows/`
(orchestration) and `tasks/` (the Prefect tasks); pure modules (search, analysis, quantities) import neither
Prefect, Locust nor Kubernetes (the same test).
"""
