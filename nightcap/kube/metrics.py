"""What metrics.k8s.io says about a pod, with the interval it covers (pure parsing, no API calls).

metrics-server reports each pod's CPU as a rate over `window` (its resolution: 15 s by default, 30 s on GKE)
ending at `timestamp`. The interval matters: a load step shorter than it would read CPU that describes the
step before (`nightcap.load.runner.replica_cpu` keeps only intervals inside the measured window).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nightcap.quantities import QuantityError, parse_memory


@dataclass(frozen=True)
class PodUsage:
    cpu_cores: float
    memory_bytes: int
    interval: tuple[float, float] | None  # (start, end) epoch seconds the CPU rate covers; None when not said


def usage_cpu(text: str) -> float:
    """Cores from metrics-server quantities (`123456789n`, `250u`, `15m`, `1`)."""
    text = str(text).strip()
    for suffix, factor in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[:-1]) * factor
    return float(text or 0)


def usage_memory(text: str) -> int:
    text = str(text).strip()
    if text in ("", "0"):
        return 0
    try:
        return parse_memory(text)
    except QuantityError:
        return 0


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str | None) -> float | None:
    """Seconds from a Go duration (`15s`, `1m0s`, `20.5s`, `500ms`), as metrics-server writes `window`."""
    if not text:
        return None
    parts = _DURATION.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def timestamp(text: str | None) -> float | None:
    """Epoch seconds from an RFC 3339 time as the API server writes it; None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_usage(item: dict[str, Any]) -> PodUsage:
    """One PodMetrics item: CPU and memory summed over its containers, and the interval the CPU covers."""
    cpu = mem = 0.0
    for c in item.get("containers", []):
        usage = c.get("usage") or {}
        cpu += usage_cpu(usage.get("cpu", "0"))
        mem += usage_memory(usage.get("memory", "0"))
    end, length = timestamp(item.get("timestamp")), go_duration(item.get("window"))
    interval = (end - length, end) if end is not None and length is not None else None
    return PodUsage(cpu, int(mem), interval)
