"""summary.json's `capacity` block: the run's one figure per pod shape, and the warnings it raises."""

from __future__ import annotations

from typing import Any

from nightcap.analysis.pod_capacity import PodFigure, levels_above
from nightcap.results.stages import StageResults


def capacity_block(res: StageResults) -> tuple[dict[str, Any], list[str]]:
    """capacity.per_pod (the run's pod: confirmed once, verified by later stages) and a warning when unstable;
    `capacity.pods` every pod figure of the run (tune's on its replicas, the run's)."""
    fig = res.figure()
    pods = [f.to_dict() for f in res.pods.values()]
    if fig is None:
        return {"per_pod": None, "pods": pods}, []
    per_pod = fig.to_dict()
    warnings = []
    if fig.status == "unstable":
        u = per_pod["unstable"]
        warnings.append(f"one pod measured differently: {fig.stage} confirmed {u['figure_rps']:.1f} rps, "
                        f"{u['stage']} {u['rps']:.1f} rps on {fig.key.replicas} pod(s), beyond their intervals "
                        f"after interleaved windows; the run plans on the lower (capacity.per_pod.unstable)")
    warnings += levels_above_warnings(res, fig)
    return {"per_pod": per_pod, "pods": pods}, warnings


def levels_above_warnings(res: StageResults, fig: PodFigure) -> list[str]:
    """A ramp that walked past the knee of the run's pod measured it clearly faster than its figure: said beside
    the figure, against the figure as the run ends (later stages' windows join it after the ramp)."""
    out = []
    e = fig.planning
    interval = "n/a" if e.low is None else f"{e.low:.1f}-{e.high:.1f}"
    for ramp in (res.single_client, res.multi_client):
        if ramp is None or ramp.replicas != fig.key.replicas or ramp.confirmation is not None:
            continue  # the ramp that confirmed the figure chose it from those very levels
        above = levels_above(e, ramp.search.levels)
        if above:
            lv = max(above, key=lambda level: level.rps)
            out.append(f"{ramp.stage} measured {lv.rps:.1f} rps at {lv.users} users on the same pod, above one pod's "
                       f"figure {e.mean:.1f} rps (95% interval {interval}) that {fig.stage} confirmed at {fig.users} "
                       "users: the knee may sit higher and the figure be low (plans use the figure)")
    return out
