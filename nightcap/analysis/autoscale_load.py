"""The load the autoscale stage offers: its phases (each a rate, open loop), what each got back, the node pool's part."""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping, Sequence

from nightcap.analysis.autoscale_metrics import AutoscaleSample, phase_loads
from nightcap.analysis.autoscale_plan import Expectation
from nightcap.config import AutoscaleConfig, AutoscalePhase


def open_loop_cpu_cost(rows: Iterable[Any]) -> float | None:
    """The pod's CPU, as a share of its limit, per request per second it served open loop: the highest over the
    windows given (steps.csv rows; those of load "open" on one pod count), so a rate planned on it errs low. None
    without such a window. Open loop each arrival opens its own connection, which costs the pod more than the
    closed-loop windows its figure comes from (make run, 21:43: 1.4-1.9% of a 0.5-CPU limit per rps open loop,
    where its closed-loop figure of 99 rps implies 1.0%)."""
    costs = [statistics.fmean(r.replica_cpu_pct) / 100.0 / r.rps for r in rows
             if r.load == "open" and r.replicas == 1 and r.valid and r.rps > 0 and r.replica_cpu_pct]
    return max(costs, default=None)


def baseline_load(headroom: float, target_cpu_pct: float, rps: float, rps_low: float | None,
                  open_cost: float | None = None, tolerance: float = 0.1,
                  held: float | None = None) -> tuple[float, str]:
    """The baseline's load, as a multiple of one pod's figure, and why when it is not the operating point.

    The baseline shows the service steady below the HPA's target before the step; the HPA scales once the pods'
    CPU passes target × (1 + tolerance). Two things can put the operating point (`headroom` × the figure) past it:
    a pod as slow as the lower end of its figure's interval (its CPU at headroom × rps / rps_low of its limit), and
    open-loop arrivals costing more CPU than the closed-loop windows behind the figure (`open_cost`, from
    `open_loop_cpu_cost`): the rate where that cost puts the CPU at target × (1 − 3 × tolerance) leaves the pod's
    noise room on both sides. The lowest of the three (make run scaled 1 -> 2 during the baseline at 20:33 with
    neither bound, and at 21:43 with only the first). Three tolerances, not one or two: a pod's CPU per request
    wanders on this machine (4.1-6.7 ms in consecutive windows) and the HPA reads 2-s samples; aimed at 72% of the
    limit (12-05 03:06), then at 64% (12-05 15:49, 67.6 rps on a 0.5-CPU pod: its CPU per request was at least 37%
    over the costliest open-loop window measured earlier in the run), the pod crossed the HPA's 88% and scaled
    during the baseline, which leaves the stage nothing to show.

    `held`: the share of the figure the open-loop check held the SLO at when it backed off below `headroom`; a
    baseline above it would start over the SLO, and "p95 back under the SLO" would have nothing to return to."""
    if rps <= 0:
        return headroom, ""
    target = target_cpu_pct / 100.0
    scales = "and the HPA would scale before the step"
    bounds = [(headroom, "")]
    if rps_low and rps_low > 0:
        bounds.append((target * rps_low / rps,
                       f"at the lower end of its interval ({rps_low:.1f} rps) {headroom:.2f} x {rps:.1f} rps would "
                       f"put the pod's CPU over the HPA's target of {target_cpu_pct:g}%, {scales}"))
    if open_cost and open_cost > 0:
        aim = target * (1 - 3 * tolerance)
        bounds.append((aim / open_cost / rps,
                       f"open loop the pod used up to {100 * open_cost:.2f}% of its CPU limit per rps, which puts "
                       f"it at {100 * aim:.0f}% (the HPA's target of {target_cpu_pct:g}% less three times its "
                       f"tolerance) at {aim / open_cost:.1f} rps, {scales}"))
    if held is not None and 0 < held < headroom:
        bounds.append((held, f"the open-loop check held the SLO only up to {held * rps:.1f} rps, and a baseline "
                             "above it would start over the SLO"))
    load, why = min(bounds, key=lambda b: b[0])
    if load >= headroom:
        return headroom, ""
    return load, f"baseline at {load:.2f} x one pod's figure, not the operating point's {headroom:.2f}: {why}"


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
