"""The load generator: Locust master + workers, driven over the master's HTTP API (Locust is never imported here).

- `base.py`              Generator protocol, `wait_for_workers`, `target_url`; the locustfile's files and
                         environment contract (`locust_env`, LOCUST_SOURCES, LOCUST_ENTRY, API_KEY_VAR) is
                         `nightcap/locust_env.py`, below platforms, since the manifest preview renders it too.
- `factory.py`           `start_generator`: local processes or in-cluster pods, as `load.generator` says.
- `driver.py`            MasterClient (swarm, swarm_rate, reset, window, stop), Window and `summarize`.
- `open_loop.py`         OpenWindow: one open-loop window (offered vs achieved rate, late and dropped
                         arrivals) from the master's ledger, by arrival: the window's own arrivals, whenever
                         they came back (pure).
- `local.py`             LocalLocust: master and workers as processes on this machine.
- `kubernetes.py`        KubernetesLocust: master and workers as pods next to the model.
- `runner.py`            StepRunner: one measured window (warm-up, window, replicas watched) -> StepRow.
- `locust_side/`         what runs inside Locust (a separate process or pod), never imported here: the entry
                         `locustfile.py` (ModelUser, every hook) and the files it imports by bare name,
                         `nightcap_request.py` (each request, the DNS cache), `nightcap_window.py` (closed-loop
                         windows, GET /nightcap/window), `nightcap_open_loop.py` (OpenLoopUser, the worker's
                         tallies by epoch), `nightcap_open_ledger.py` (the master's ledger, GET /nightcap/open).

Depends on: config, steps, analysis, processes (ports, registry), platforms (base; kubernetes for the in-cluster
generator).
"""
