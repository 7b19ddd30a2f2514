"""Where replicas run: the `Platform` seam, and the platforms on this machine (Kubernetes is `nightcap/kube/`).

- `base.py`            the Platform protocol, PodSpec, HpaSpec, Observation, PlatformError, NoRoomForPods: all
                       that `kube/`, load and the stages import from here.
- `local.py`           replicas as processes (+ `local_replicas.py` one replica and its readings,
                       `local_processes.py` how each process is started and stopped, `cgroups.py` limits,
                       `cpu_pinning.py` each replica on its own CPUs, `proxy.py` the Service stand-in,
                       `local_autoscaler.py` the HPA algorithm, `socket_queues.py` where requests wait, from
                       /proc/net/tcp).
- `external.py`        an endpoint measured as it is (`target.kind: url`).

Which one a run gets: `run/platform.py` (it imports every implementation, so it sits above this package and
`kube/`). Depends on: config, quantities, analysis (hpa), targets (plan), processes (ports, registry).
"""
