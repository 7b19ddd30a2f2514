"""The run's lifecycle: what one capacity check holds, what it started, and what it must leave behind.

- `context.py`   RunContext: config, platform, pod spec, the run's one load generator, measured steps, summary;
                 stage subflows look it up by run id (why: see its docstring).
- `registry.py`  every process, cgroup, Kubernetes label and node-pool change a run makes, with a heartbeat.
- `cleanup.py`   `reap_dead_runs`: removes what runs whose owner died left behind (registry + platforms).
- `lock.py`      RunLock: one run per target at a time on this machine.
- `safety.py`    safety limits checked before anything starts.
- `ports.py`     listen ports below the kernel's ephemeral range, never handed out twice.
- `prefect_server.py`  a local Prefect server for the run when PREFECT_API_URL is not set.

Depends on: config, steps, platforms, load, results (stages, retention, store), targets (plan). Never on flows/ or
tasks/. registry.py and ports.py serve the layers below (platforms, load): listed in tests/test_layering.py.
"""
