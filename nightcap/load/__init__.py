"""The load generator: Locust master + workers, driven over the master's HTTP API (Locust is never imported here).

- `base.py`              Generator protocol, the locustfile's environment contract (`locust_env`, LOCUSTFILE,
                         API_KEY_VAR), `target_url`.
- `factory.py`           `start_generator`: local processes or in-cluster pods, as `load.generator` says.
- `driver.py`            MasterClient (swarm, swarm_rate, reset, window, stop), Window and `summarize`.
- `open_loop.py`         OpenWindow: one open-loop window (offered vs achieved rate, late and dropped
                         arrivals) from the master's ledger, by arrival: the window's own arrivals, whenever
                         they came back (pure).
- `local.py`             LocalLocust: master and workers as processes on this machine.
- `kubernetes.py`        KubernetesLocust: master and workers as pods next to the model.
- `runner.py`            StepRunner: one measured window (warm-up, window, replicas watched) -> StepRow.
- `locustfile.py`        what runs inside Locust (a separate process or pod).

Depends on: config, steps, analysis, platforms (base; kubernetes for the in-cluster generator); upward, listed in
tests/test_layering.py: run (ports, registry).
"""
