"""The platform canary: a fixed CPU-bound workload measured each night, so a slower machine is not called a
slower model.

These machines drift: the same server gave 157 rps and, 47 minutes later, 121 rps with nothing changed, and
shared cloud nodes drift the same way. So each night, on the same platform and pod size as the model, a
reference server that does a fixed amount of work per request (SHA-256 over `work_kb` KiB: work, not CPU
time, so its rate moves with the machine's speed) is measured for a few windows before the model. Its
figure is rps per core. The regression check compares it with earlier nights like a headline figure:

- canary steady (within its threshold or noise band): a change in the model's figures is the model's;
- canary moved: the platform moved, and the model's throughput figures are judged normalised by the canary
  (tonight's figure x the baseline canary / tonight's canary: what tonight would have measured on the
  baseline nights' platform). Only a normalised figure that regressed is a model regression.

Only nights whose canary ran with the same settings (work, pod CPU, slots, users) are compared.
Pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nightcap.analysis.confidence import Estimate, combine_windows, window_estimate

FIGURE = "canary_rps_per_core"
# the model figures a platform's speed scales (throughput); latency and user counts are judged raw
NORMALISED = ("saturation_rps", "rps_per_core")


@dataclass(frozen=True)
class CanarySettings:
    """What the canary ran: its figure compares only with nights that ran the same."""

    work_kb: int
    cpu: float
    slots: int
    users: int

    def to_dict(self) -> dict[str, Any]:
        return {"work_kb": self.work_kb, "cpu": self.cpu, "slots": self.slots, "users": self.users}

    def same(self, other: Mapping[str, Any] | None) -> bool:
        if not isinstance(other, Mapping):
            return False
        try:
            return (int(other["work_kb"]) == self.work_kb and abs(float(other["cpu"]) - self.cpu) < 5e-4
                    and int(other["slots"]) == self.slots and int(other["users"]) == self.users)
        except (KeyError, TypeError, ValueError):
            return False


@dataclass(frozen=True)
class CanaryFigure:
    """Tonight's canary: goodput per core of its pod, with the 95% half-width of that figure."""

    rps_per_core: float
    halfwidth: float | None
    windows: int
    error_rate: float

    @property
    def ci(self) -> list[float] | None:
        if self.halfwidth is None:
            return None
        return [round(max(self.rps_per_core - self.halfwidth, 0.0), 2), round(self.rps_per_core + self.halfwidth, 2)]


def canary_figure(windows: Sequence[Any], cores: float) -> CanaryFigure | None:
    """Combine the canary's valid windows (goodput with batch-means half-widths) into rps per core.

    None when no window was valid or none served anything: a canary that did not run says nothing.
    """
    valid = [w for w in windows if getattr(w, "valid", True) and w.rps > 0]
    if not valid or cores <= 0:
        return None
    estimate: Estimate = combine_windows([window_estimate(w) for w in valid])
    errors = sum(w.error_rate for w in valid) / len(valid)
    half = None if estimate.half_width is None else estimate.half_width / cores
    return CanaryFigure(estimate.mean / cores, half, len(valid), errors)


def canary_value(run: Mapping[str, Any], settings: CanarySettings) -> float | None:
    """A stored night's canary rps per core, when it ran with `settings` (else None: not comparable)."""
    summary = run.get("summary") or {}
    block = summary.get("canary") if isinstance(summary, Mapping) else None
    if not isinstance(block, Mapping) or not settings.same(block.get("settings")):
        return None
    value = run.get(FIGURE)
    if value is None:
        value = block.get("rps_per_core")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def normalise(value: float | None, canary: float | None, reference: float | None) -> float | None:
    """A throughput figure as it would have measured on the reference platform (canary = `reference`)."""
    if value is None or not canary or not reference:
        return None
    return value * reference / canary
