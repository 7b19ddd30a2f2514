"""What each stored figure meant the night it was measured, so a change of method never reads as a regression.

`p95_at_operating_ms` was interpolated along the closed-loop ramp until the operating point was verified
open-loop; the two are different quantities (a closed loop under-reports latency when the server stalls).
A night whose figure was measured another way than tonight's is not its baseline: that figure starts a new
baseline (the regression check sees it as missing from those nights) and the history marks the change.
"""

from __future__ import annotations

from typing import Any, Mapping

# how each figure with more than one possible meaning is measured, read from the night's summary.json
CLOSED, OPEN = "closed-loop", "open-loop"
OPEN_POISSON = "open-loop, Poisson arrivals"  # evenly spaced arrivals ("open-loop") queue less than real callers
SEARCH, FRESH = "the search's knee level", "fresh windows at the knee"  # the saturation figure's windows
# before the open-loop verification, p95 was always interpolated; before the confirmation, saturation was the level
# the search chose it on
LEGACY = {"p95_at_operating_ms": CLOSED, "saturation_rps": SEARCH, "rps_per_core": SEARCH}


def figure_meanings(summary: Mapping[str, Any] | None) -> dict[str, str]:
    """{figure: how it was measured} for the figures whose method can change between nightcap versions."""
    summary = summary or {}
    operating = summary.get("operating_point") or {}
    load = operating.get("load")
    if load is None:
        return dict(LEGACY)
    p95 = CLOSED if load != "open" else (OPEN_POISSON if operating.get("arrivals") == "poisson" else OPEN)
    status = (summary.get("saturation") or {}).get("status")
    saturation = FRESH if status in ("confirmed", "unstable") else SEARCH
    return {"p95_at_operating_ms": p95, "saturation_rps": saturation, "rps_per_core": saturation}


def stored_meanings(run: Mapping[str, Any]) -> dict[str, str]:
    """A stored run's meanings: its own column, else derived from its summary (rows written before schema 2)."""
    stored = run.get("figure_meanings")
    if isinstance(stored, Mapping) and stored:
        return {str(k): str(v) for k, v in stored.items()}
    return figure_meanings(run.get("summary") if isinstance(run.get("summary"), Mapping) else None)


def changed_figures(tonight: Mapping[str, str], earlier: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{figure: (earlier meaning, tonight's)} for each figure measured differently."""
    return {name: (earlier[name], meaning) for name, meaning in tonight.items()
            if name in earlier and earlier[name] != meaning}
