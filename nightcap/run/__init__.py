"""The run's lifecycle: what one capacity check holds, what it started, and what it must leave behind.

- `context.py`   RunContext: config, platform, pod spec, the run's one load generator, measured steps, summary;
                 stage subflows look it up by run id (why: see its docstring).
- `platform.py`  make_platform: the run's platform (local processes, Kubernetes or an external URL) and the pod
                 it starts with; it imports every implementation, so it sits above platforms/ and kube/.
- `cleanup.py`   `reap_dead_runs`: removes what runs whose owner died left behind (their records in
                 `processes/registry.py`, with the platforms' removers).
- `lock.py`      RunLock: one run per target at a time on this machine.
- `safety.py`    safety limits checked before anything starts.
- `prefect_server.py`  a local Prefect server for the run when PREFECT_API_URL is not set.

Depends on: config, steps, processes (registry, ports), platforms, kube, load, results (stages, retention, store),
targets (plan). Never on flows/ or tasks/.
"""
