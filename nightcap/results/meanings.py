"""What each stored figure meant the night it was measured, so a change of method never reads as a regression.

`p95_at_operating_ms` was interpolated along the closed-loop ramp until the operating point was verified
open-loop; the two are different quantities (a closed loop under-reports latency when the server stalls).
A night whose figure was measured another way than tonight's is not its baseline: that figure starts a new
baseline (the regression check sees it as missing from those nights) and the history marks the change.

The pod a per-pod figure was measured on is part of its meaning too. Tune chooses the pod every night, and two
sizes can sit near each other per core: a night that chose 1 CPU where the nights before chose 0.5 measures
another pod, and its saturation rate is twice theirs by design, not a change of the model; the reverse would
read as a 50% regression. So the figures of one pod (`POD_FIGURES`) carry its CPU limit and server concurrency,
and nights of another pod are not their baseline. Memory is left out: tune's memory choice moves between runs of
one pod (bench/consistency: 768Mi and 1Gi twice each), and a memory limit that slows the pod is a change the
alarm should see. A night whose pod is unknown (its summary does not say) is compared on the method alone.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

# how each figure with more than one possible meaning is measured, read from the night's summary.json
CLOSED, OPEN = "closed-loop", "open-loop"
OPEN_POISSON = "open-loop, Poisson arrivals"  # evenly spaced arrivals ("open-loop") queue less than real callers
SEARCH, FRESH = "the search's knee level", "fresh windows at the knee"  # the saturation figure's windows
# before the open-loop verification, p95 was always interpolated; before the confirmation, saturation was the level
# the search chose it on
LEGACY = {"p95_at_operating_ms": CLOSED, "saturation_rps": SEARCH, "rps_per_core": SEARCH}
# the stored figures measured on one pod (every headline figure: `nightcap.analysis.figures`)
POD_FIGURES = ("saturation_rps", "saturation_users", "operating_rps", "rps_per_core", "p95_at_operating_ms",
               "slo_users", "slo_rps")
POD = "on pods of "


def pod_meaning(summary: Mapping[str, Any] | None) -> str | None:
    """"on pods of 0.5 CPU, concurrency 1": the pod the night's figures were measured on (its `platform` block as
    the run ended, i.e. tune's choice); None when the summary does not say."""
    platform = (summary or {}).get("platform") or {}
    cpu, concurrency = platform.get("cpu"), platform.get("concurrency")
    if cpu is None and concurrency is None:
        return None
    size = "no CPU limit" if cpu is None else f"{float(cpu):g} CPU"
    return f"{POD}{size}, concurrency {concurrency if concurrency is not None else 'as the server sets it'}"


def with_pod(meanings: Mapping[str, str], summary: Mapping[str, Any] | None) -> dict[str, str]:
    """The meanings with the night's pod added to each per-pod figure that does not name one yet."""
    pod = pod_meaning(summary)
    out = dict(meanings)
    if pod is None:
        return out
    for name in POD_FIGURES:
        method = out.get(name)
        if method is None or POD not in method:
            out[name] = f"{method}, {pod}" if method else pod
    return out


def _split(meaning: str) -> tuple[str, str | None]:
    """(the method, the pod or None) of a stored meaning."""
    at = meaning.find(POD)
    if at < 0:
        return meaning, None
    return meaning[:at].rstrip(", "), meaning[at:]


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
    return with_pod({"p95_at_operating_ms": p95, "saturation_rps": saturation, "rps_per_core": saturation}, summary)


def stored_meanings(run: Mapping[str, Any]) -> dict[str, str]:
    """A stored run's meanings: its own column, else derived from its summary (rows written before schema 2)."""
    stored = run.get("figure_meanings")
    summary = run.get("summary") if isinstance(run.get("summary"), Mapping) else None
    if isinstance(stored, Mapping) and stored:  # rows written before the pod was part of a meaning get it here
        return with_pod({str(k): str(v) for k, v in stored.items()}, summary)
    return figure_meanings(summary)


def _difference(old: str, new: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(old and new method, old and new pod) of two meanings of one figure, each None where it did not change or
    one side does not name it."""
    (was_method, was_pod), (method, pod) = _split(old), _split(new)
    methods = (was_method, method) if was_method and method and was_method != method else None
    pods = (was_pod[len(POD):], pod[len(POD):]) if was_pod and pod and was_pod != pod else None
    return methods, pods


def changed_figures(tonight: Mapping[str, str], earlier: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{figure: (earlier meaning, tonight's)} for each figure measured differently: another method, or another pod,
    where both nights name theirs."""
    return {name: (earlier[name], meaning) for name, meaning in tonight.items()
            if name in earlier and any(_difference(earlier[name], meaning))}


def renewals(changes: Mapping[str, tuple[str, str]]) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str]]]:
    """The changes as ({figure: (old method, new method)}, {(old pod, new pod)}): a pod change is one change of
    every per-pod figure, said once."""
    methods: dict[str, tuple[str, str]] = {}
    pods: set[tuple[str, str]] = set()
    for name, (old, new) in changes.items():
        method, pod = _difference(old, new)
        if method:
            methods[name] = method
        if pod:
            pods.add(pod)
    return methods, pods


def renewal_sentences(changes: Sequence[Mapping[str, tuple[str, str]]]) -> list[str]:
    """One sentence per figure measured another way than on earlier nights, one per pod they were measured on
    (`changes`: each earlier night's `meaning_changed`)."""
    methods, pods = set(), set()
    for night in changes:
        found, pod = renewals(night)
        methods |= {(name, old, new) for name, (old, new) in found.items()}
        pods |= pod
    return sorted({f"{name} is now measured {new} (was {old}): a new baseline starts" for name, old, new in methods}
                  | {f"tonight's figures are of pods of {new} (earlier nights: {old}): a new baseline starts for them"
                     for old, new in pods})
