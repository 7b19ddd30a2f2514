"""Where replicas run: `local` (OS processes + cgroups) or `kubernetes` (+ GKE node pools)."""
