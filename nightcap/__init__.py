"""nightcap: nightly capacity checks of ML models served over HTTP, as Prefect flows.

File map (each package's `__init__` says what lives in it):
- `cli.py`        the `nightcap` command (run, validate, serve-reference, history, cleanup).
- `config.py`     one validated Config flows through everything: YAML, `--set`, errors naming the field.
- `config_sections.py` its sections (target, platform, load, search, slo, ...), one pydantic model each.
- `quantities.py` CPU and memory quantities ("500m", "768Mi") parsed and formatted.
- `steps.py`      StepRow (one measured window) and steps.csv: below analysis, which reads step rows.
- `search.py`     the saturation search (pure: takes a "measure one window" callable).
- `warm_start.py` the search verified from the last comparable night, full search if it moved (pure).
- `warm_start_tune.py` the same for tune: last night's pod size and its grid neighbours first (pure).
- `analysis/`     pure capacity analysis: saturation, tuning, USL, sizing, HPA model, autoscale timings, regression.
- `targets/`      what is measured: target plans, the bundled model, the reference server.
- `platforms/`    where replicas run: Platform protocol, local processes + cgroups, Kubernetes, GKE; the factory.
- `load/`         the load generator (Locust as processes or pods) and the step runner.
- `run/`          the run's lifecycle: context, registry, cleanup, lock, safety limits, ports, Prefect server.
- `results/`      typed stage results, summary, report, plots, history store.

Data flows one way: config -> targets + platforms + load -> step rows -> search/analysis -> results.
Imports point down, in this order (tests/test_layering.py holds it, with the few arrows still running up):
quantities -> config -> steps -> analysis -> search, warm_start* -> confirm -> targets -> results -> platforms
-> load -> run -> tasks -> flows -> cli. Prefect lives only in the top-level `flows/` (orchestration) and
`tasks/` (the Prefect tasks); pure modules (search, analysis, quantities) import neither Prefect, Locust nor
Kubernetes (the same test).
"""
