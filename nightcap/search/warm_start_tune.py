"""Warm start of the fine-tune stage: last night's chosen pod size and its grid neighbours are measured first,
and the full planner runs only if the choice moved (the ramps' warm start is `nightcap.search.warm_start`).

Pure: the history comes in as plain dicts (or a store with `comparable_runs`); nothing here imports Prefect.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from nightcap.analysis.tuning import Candidate, CandidateResult, choose


def grid_neighbours(chosen: Candidate, cpus: Sequence[float], memories: Sequence[int],
                    concurrencies: Sequence[int]) -> list[Candidate]:
    """`chosen` and one grid step along each axis (CPU, memory, concurrency), smaller first; empty when
    `chosen` is not in the grid."""
    cpus, memories, concurrencies = sorted(set(cpus)), sorted(set(memories)), sorted(set(concurrencies))
    cpu_i = next((i for i, c in enumerate(cpus) if abs(c - chosen.cpu) < 5e-4), None)
    if cpu_i is None or chosen.memory not in memories or chosen.concurrency not in concurrencies:
        return []
    mem_i, conc_i = memories.index(chosen.memory), concurrencies.index(chosen.concurrency)
    chosen = Candidate(cpus[cpu_i], chosen.memory, chosen.concurrency)
    out = [chosen]
    for step in (-1, 1):
        if 0 <= cpu_i + step < len(cpus):
            out.append(Candidate(cpus[cpu_i + step], chosen.memory, chosen.concurrency))
        if 0 <= mem_i + step < len(memories):
            out.append(Candidate(chosen.cpu, memories[mem_i + step], chosen.concurrency))
        if 0 <= conc_i + step < len(concurrencies):
            out.append(Candidate(chosen.cpu, chosen.memory, concurrencies[conc_i + step]))
    return out


def prior_choice(runs: Iterable[Mapping[str, Any]], replicas: int) -> tuple[Candidate | None, str | None, str]:
    """Last night's tuned pod size (newest comparable night that tuned on `replicas` pods and chose one):
    (candidate, run id, "") or (None, None, why not)."""
    seen = 0
    for run in runs:
        seen += 1
        tuning = (run.get("summary") or {}).get("tuning") if isinstance(run.get("summary"), Mapping) else None
        if not isinstance(tuning, Mapping) or tuning.get("replicas") != replicas:
            continue
        best = tuning.get("best")
        if not isinstance(best, Mapping):
            continue
        try:
            return (Candidate(float(best["cpu"]), int(best["memory"]), int(best["concurrency"])),
                    str(run.get("run_id")), "")
        except (KeyError, TypeError, ValueError):
            continue
    if not seen:
        return None, None, "no completed comparable night in the history"
    return None, None, f"no comparable night chose a pod size on {replicas} pod(s) ({seen} looked at)"


def tune_prior_from_history(store: Any, config: Any, run_id: str
                            ) -> tuple[Candidate | None, list[Candidate], str | None, str]:
    """Last night's tuned pod size and the candidates that verify it (it and its grid neighbours), the run it
    came from, and why not when there is none (turned off, no store, no such night, not in tonight's grid)."""
    if not config.search.warm_start:
        return None, [], None, "search.warm_start is false"
    if store is None:
        return None, [], None, "no history store"
    try:
        runs = store.comparable_runs(config.config_hash(), config.regression.nights, exclude_run_id=run_id)
    except Exception as exc:  # the history informs the search; it must not cost it
        return None, [], None, f"history unavailable ({exc})"
    t = config.tune
    chosen, from_run, why = prior_choice(runs, t.replicas)
    if chosen is None:
        return None, [], None, why
    near = grid_neighbours(chosen, t.cpu, t.memory, t.concurrency)
    if not near:
        return None, [], from_run, f"run {from_run}'s choice {chosen.label()} is not in tonight's tune grid"
    run = next((r for r in runs if str(r.get("run_id")) == from_run), {})
    planned = ((run.get("summary") or {}).get("tuning") or {}).get("candidates_measured")
    if isinstance(planned, int) and 0 < planned <= len(near):  # a small grid: verifying would save nothing
        return None, [], from_run, (f"verifying run {from_run}'s choice takes {len(near)} candidates and its "
                                    f"planner measured {planned}: the planner runs")
    return chosen, near, from_run, ""


def tune_choice_holds(chosen: Candidate, results: Sequence[CandidateResult], tie: float = 0.03) -> tuple[bool, str]:
    """Does `choose` still pick last night's `chosen` among tonight's measurements of it and its neighbours?"""
    pick = choose(results, tie=tie)
    if pick.candidate == chosen:
        return True, f"last night's choice {chosen.label()} still wins among it and its {len(results) - 1} neighbour(s)"
    if pick.candidate is None:
        return False, f"none of {chosen.label()} and its neighbours qualifies tonight ({pick.reason})"
    return False, f"the choice moved: {pick.candidate.label()} beats {chosen.label()} tonight ({pick.reason})"
