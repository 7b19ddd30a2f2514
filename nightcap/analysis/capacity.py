"""One pod, one capacity: the stages' measurements of the same pod configuration pooled into one figure.

Tune, single_client, multi_client and scaling (at the same replica count) each measure the tuned pod at
saturation. On one machine they run minutes apart, and the machine's speed drifts, so they can disagree
beyond their intervals; pooling them (inverse-variance, widened by the between-stage variance when they
disagree: `confidence.pool`) gives the figure a capacity plan can use, and the disagreements are named.

Pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from nightcap.analysis.confidence import Estimate, pool


@dataclass(frozen=True)
class Measurement:
    """One stage's saturation figure for a pod configuration on `replicas` pods (goodput of all of them)."""

    stage: str
    rps: float
    half_width: float | None
    batches: int
    users: int | None
    replicas: int

    @property
    def estimate(self) -> Estimate:
        if self.half_width is None:
            return Estimate(self.rps, None, max(self.batches, 1))
        n = max(self.batches, 2)
        return Estimate(self.rps, self.half_width, n, float(n - 1))

    def label(self) -> str:
        pct = f" ± {100 * self.half_width / self.rps:.0f}%" if self.half_width is not None and self.rps else ""
        return f"{self.stage} {self.rps:.1f} rps{pct}"

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"stage": self.stage, "rps": round(self.rps, 2), "users": self.users, "replicas": self.replicas,
                "ci": None if e.low is None else [round(e.low, 2), round(e.high, 2)]}  # type: ignore[arg-type]


@dataclass
class PodCapacity:
    """The pooled per-pod goodput at saturation, its interval, and what it was pooled from."""

    rps: float  # per pod
    low: float | None
    high: float | None
    replicas: int
    measurements: list[Measurement]
    disagreements: list[tuple[Measurement, Measurement]] = field(default_factory=list)
    heterogeneity_p: float | None = None

    def warnings(self) -> list[str]:
        """One line per pair of stages whose intervals do not overlap, naming both figures."""
        return [f"the pod was measured differently by {a.stage} and {b.stage}: {a.label()} vs {b.label()} on "
                f"{a.replicas} replica(s), beyond their 95% intervals (the machine's speed changed between them, "
                f"or the stages load it differently); capacity.per_pod pools them with the wider interval"
                for a, b in self.disagreements]

    def to_dict(self, pod: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            **({"pod": pod} if pod else {}),
            "replicas": self.replicas,
            "rps": round(self.rps, 2),
            "ci": None if self.low is None else [round(self.low, 2), round(self.high, 2)],  # type: ignore[arg-type]
            "measurements": [m.to_dict() for m in self.measurements],
            "stages": [m.stage for m in self.measurements],
            "disagree": [[a.stage, b.stage] for a, b in self.disagreements],
            "heterogeneity_p": None if self.heterogeneity_p is None else round(self.heterogeneity_p, 4),
        }


def pool_pod(measurements: Sequence[Measurement]) -> PodCapacity | None:
    """Pool measurements taken on the same number of replicas; rps and interval are then given per pod."""
    usable = [m for m in measurements if m.rps and m.rps > 0]
    if not usable:
        return None
    replicas = usable[0].replicas
    if any(m.replicas != replicas for m in usable):
        raise ValueError("pool measurements of one replica count at a time: "
                         + ", ".join(f"{m.stage} on {m.replicas}" for m in usable))
    pooled = pool([m.estimate for m in usable])
    e = pooled.estimate
    return PodCapacity(
        rps=e.mean / replicas,
        low=None if e.low is None else e.low / replicas,
        high=None if e.high is None else e.high / replicas,
        replicas=replicas,
        measurements=list(usable),
        disagreements=[(usable[a], usable[b]) for a, b in pooled.disagreements],
        heterogeneity_p=pooled.heterogeneity_p,
    )
