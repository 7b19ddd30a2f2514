"""Settle the chosen pod's CPU size on paired windows: the one choice of the fine-tune stage that noise flipped.

Tune compares candidates measured one after the other, tens of seconds apart. On a machine whose speed drifts
(bench/consistency: one pod's windows move 15-30% within a minute at a steady CPU use), two CPU sizes of one
memory and concurrency traded places between otherwise identical runs: the smaller pod's rps per core came out
0.74-1.15 of the larger's, by when each was measured. Measured in alternating windows (A, B, then B, A, ...), the
drift moves both sides of a pair alike and cancels in their ratio, as for scaling efficiency.

The rule: the smaller pod is chosen unless the pairs show it worse per core beyond `tie` (the upper end of the
ratio's 95% interval below 1 − tie): a pod that cannot be told from the larger one on rps per core packs more pods
per node, as `tuning.choose` decides among ties. Pure: the flow measures the windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from nightcap.analysis.confidence import Estimate, paired_ratio
from nightcap.analysis.tuning import TIE, Candidate, CandidateResult, Choice, eligible


def cpu_rival(pick: CandidateResult, results: Iterable[CandidateResult]) -> CandidateResult | None:
    """The other CPU size of the pick's memory and concurrency that could have been chosen (the best per core
    among them); None when there is none."""
    same = (pick.candidate.memory, pick.candidate.concurrency)
    others = [r for r in results if eligible(r) and r.candidate.cpu != pick.candidate.cpu
              and (r.candidate.memory, r.candidate.concurrency) == same and r.candidate.cpu]
    return max(others, key=lambda r: r.rps_per_core, default=None)


@dataclass(frozen=True)
class CpuPairs:
    """Two CPU sizes measured in alternating windows at their knees, and the one chosen."""

    smaller: Candidate
    larger: Candidate
    ratio: Estimate  # the smaller pod's rps per core / the larger's, over the pairs
    pairs: int
    chosen: Candidate
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """summary.json `tuning.cpu_pairs`."""
        r = self.ratio
        return {"smaller": self.smaller.label(), "larger": self.larger.label(), "pairs": self.pairs,
                "per_core_ratio": round(r.mean, 4),
                "per_core_ratio_ci": None if r.low is None or r.high is None else [round(r.low, 4), round(r.high, 4)],
                "chosen": self.chosen.label(), "reason": self.reason}


def settle_cpu(a: Candidate, b: Candidate, a_windows: Sequence[Estimate], b_windows: Sequence[Estimate],
               tie: float = TIE) -> CpuPairs:
    """Choose between two CPU sizes of one memory and concurrency from windows measured in pairs (`a_windows[i]`
    beside `b_windows[i]`, goodput of the whole tune deployment, so per core divides by each side's CPU)."""
    if a.cpu == b.cpu or not a.cpu or not b.cpu:
        raise ValueError(f"settle_cpu compares two CPU sizes, got {a.label()} and {b.label()}")
    (small, small_w), (large, large_w) = sorted([(a, a_windows), (b, b_windows)], key=lambda x: x[0].cpu)
    ratio = paired_ratio(large_w, small_w, scale=small.cpu / large.cpu)
    worse = ratio.high is not None and ratio.high < 1 - tie
    chosen = large if worse else small
    span = "n/a" if ratio.low is None else f"{ratio.low:.2f}-{ratio.high:.2f}"
    if worse:
        verdict = f"worse per core beyond the {tie:.0%} tie: the larger pod is chosen"
    elif ratio.high is not None and ratio.high < 1:  # make run 18:52: 0.93-0.98 read "not shown worse"
        verdict = (f"worse per core by {1 - ratio.high:.0%}-{1 - ratio.low:.0%}, not shown worse beyond the "
                   f"{tie:.0%} tie: the smaller pod is chosen (more pods per node)")
    else:
        verdict = "not shown worse per core: the smaller pod is chosen (more pods per node)"
    reason = (f"cpu={small.cpu:g} against cpu={large.cpu:g} in {ratio.n} pair(s) of alternating windows: "
              f"{ratio.mean:.2f} of the larger pod's rps per core (95% interval {span}), {verdict}")
    return CpuPairs(small, large, ratio, ratio.n, chosen, reason)


def choice_reason(searched: Choice, chosen: CandidateResult, pairs: CpuPairs) -> str:
    """tuning.reason once the pairs have spoken: the searches' reason then the pairs', or, when the pairs chose
    the other size, the pairs' verdict first and what the searches alone said."""
    if searched.result is None or pairs.chosen == searched.result.candidate:
        return f"{searched.reason}. Then {pairs.reason}"
    lead = searched.result
    return (f"{chosen.candidate.label()}: {pairs.reason}; on the candidates' searches alone {lead.candidate.label()} "
            f"led ({lead.rps_per_core:.0f} rps per core against {chosen.rps_per_core:.0f}, measured at other times)")
