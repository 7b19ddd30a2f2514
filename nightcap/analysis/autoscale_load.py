"""The load the autoscale stage offers: its phases (each a rate, open loop), what each got back, the node pool's part."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nightcap.analysis.autoscale_metrics import AutoscaleSample, phase_loads
from nightcap.analysis.autoscale_plan import Expectation
from nightcap.config import AutoscaleConfig, AutoscalePhase


def default_phases(a: AutoscaleConfig, headroom: float, overload: float | None = None,
                   expected: Expectation | None = None) -> list[AutoscalePhase]:
    """Baseline at the operating point, a step to `overload` (default `autoscale.overload`) × one pod's saturation,
    back down.

    Each phase lasts long enough for the controller to act: with the backlog arithmetic (`expected`), the overload
    holds until its last pod is ready under load and the recovery until the backlog drained (see
    `autoscale_plan.expect`); without it, the overload holds for the readiness delay plus a few sync periods (at
    least 8), the recovery for the scale-down stabilization plus 4.
    """
    if expected is not None:
        hold_up, hold_down = expected.overload_s, expected.recovery_s
    else:
        hold_up = max(8 * a.sync_period_s, a.readiness_delay_s + 4 * a.sync_period_s)
        hold_down = a.stabilization_s + 4 * a.sync_period_s
    return [AutoscalePhase(name="baseline", load=headroom, duration_s=3 * a.sync_period_s),
            AutoscalePhase(name="overload", load=a.overload if overload is None else overload, duration_s=hold_up),
            AutoscalePhase(name="recovery", load=headroom, duration_s=hold_down)]


def phase_rows(phases: Sequence[AutoscalePhase], samples: Sequence[AutoscaleSample],
               starts: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Each configured phase with when it started (`started_s`, on the samples' clock) and what its arrivals became
    (a phase cut short by the budget has no figures)."""
    loads = {load.name: load.to_dict() for load in phase_loads(samples)}
    return [{**p.model_dump(), "started_s": (starts or {}).get(p.name), **loads.get(p.name, {})} for p in phases]


def node_pool_note(platform_kind: str, nodes: dict[str, int] | None, gke_configured: bool) -> str:
    """What the autoscale stage did with the node pool, for the summary (`autoscale.nodes`)."""
    if platform_kind == "local":
        return "node-pool autoscaling: not available on the local platform"
    if nodes and gke_configured:
        return f"node-pool autoscaling on ({nodes.get('min', 1)}-{nodes.get('max', 3)} nodes)"
    if nodes:
        return "node-pool autoscaling requested but platform.gke is not set: nodes were not changed"
    return "node-pool autoscaling not requested (autoscale.nodes)"
