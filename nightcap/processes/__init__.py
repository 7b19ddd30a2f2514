"""The processes a run starts on this machine: their record and their listen ports (below platforms and load).

- `registry.py`  RunRegistry: every process, cgroup, Kubernetes label and node-pool change a run makes, on disk
                 with a heartbeat; `cleanup_dead` stops and restores what runs whose owner died left (the
                 platforms' own removers are passed in: `run/cleanup.py`); `kill_process_tree`, `stop_process`.
- `ports.py`     listen ports below the kernel's ephemeral range, never handed out twice.

Depends on nothing in nightcap: the local and Kubernetes platforms, the load generators and the run's lifecycle
(`run/`) all record here.
"""
