"""Replicas on Kubernetes (+ GKE node pools): the `Platform` as a Deployment + Service, and everything it needs.

- `platform.py`        KubernetesPlatform: the model as a Deployment + Service, HPA, observation, teardown
                       (+ `node_pools.py`, the GKE pool it changes for the autoscale stage and puts back).
- `client.py`          Kube: API calls with bounded retries and errors that say what to change, objects by
                       label, rollout waits, cleanup of dead runs' objects; `diagnosis.py` says why a rollout
                       did not finish.
- `metrics.py`         metrics.k8s.io usage and the interval each CPU figure covers (pure parsing).
- `lease.py`           the run's record in the cluster: a lease its runner renews, and the pools' original
                       settings; `sweep.py` deletes what dead runs left in a namespace, by that record.
- `port_forward.py`    a local port tunnelled to a pod (pods/portforward), for a flow outside the cluster.
- `manifests.py`       every object nightcap creates, as plain dicts (pure); what every pod carries in
                       `pods.py`, the Locust ones in `manifests_locust.py`, the runner's Job and RBAC in
                       `runner_manifests.py`.
- `render.py`          `nightcap render`: those manifests as YAML files (deployments/k8s/ is its output).
- `rbac.py`            every permission a run uses (pure); deployments/k8s/rbac.yaml grants exactly these.
- `netpol.py`          whether a namespace's NetworkPolicies let a connection through (pure).
- `preflight.py`       `nightcap preflight`: everything a Kubernetes run needs, checked without changing anything
                       (`preflight_cluster.py` nodes and policies, `preflight_gke.py` the node pool, each finding a
                       `preflight_check.Check`).
- `gke.py`             GKE node-pool autoscaling and size, changed for a stage and restored as found
                       (+ `gke_compute.py`, uneven zones resized through the Compute Engine API).

Depends on: config, quantities, targets (canary), processes (registry), locust_env (render's preview), platforms
(base only: the `Platform` seam). Above it: `load/kubernetes.py` (the in-cluster Locust, through client, lease,
manifests_locust and port_forward), `run/platform.py` (which chooses it), `run/cleanup.py` (sweep, gke).
"""
