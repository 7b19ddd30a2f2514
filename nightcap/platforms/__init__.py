"""Where replicas run: `local` (OS processes + cgroups) or `kubernetes` (+ GKE node pools).

- `base.py`            the Platform protocol, PodSpec, HpaSpec, Observation, PlatformError, NoRoomForPods.
- `factory.py`         make_platform (local, kubernetes or external) and the initial pod spec.
- `local.py`           replicas as processes (+ `local_replicas.py` one replica and its readings, `cgroups.py`
                       limits, `proxy.py` the Service stand-in, `local_autoscaler.py` the HPA algorithm,
                       `socket_queues.py` where requests wait, from /proc/net/tcp); `external.py` an endpoint
                       measured as it is.
- `kubernetes.py`      KubernetesPlatform: the model as a Deployment + Service, HPA, observation, teardown.
- `kube_client.py`     Kube: API calls with bounded retries and errors that say what to change, objects by
                       label, rollout waits, cleanup of dead runs' objects; `kube_diagnosis.py` says why a
                       rollout did not finish.
- `kube_metrics.py`    metrics.k8s.io usage and the interval each CPU figure covers (pure parsing).
- `port_forward.py`    a local port tunnelled to a pod (pods/portforward), for a flow outside the cluster.
- `preflight.py`       `nightcap preflight`: everything a Kubernetes run needs, checked without changing anything
                       (`preflight_cluster.py` nodes and policies, `preflight_gke.py` the node pool, each finding a
                       `preflight_check.Check`).
- `manifests.py`       every object nightcap creates, as plain dicts (pure); the Locust ones in `manifests_locust.py`.
- `rbac.py`            every permission a run uses (pure); deployments/k8s/rbac.yaml grants exactly these.
- `gke.py`             GKE node-pool autoscaling and size, changed for a stage and restored as found.

Depends on: config, quantities, analysis, targets (plan); upward, listed in tests/test_layering.py: run (ports,
registry) and, for render.py's preview and preflight's dry run, load (base: the Locust environment).
`load/kubernetes.py` uses kube_client and port_forward for the in-cluster Locust.
"""
