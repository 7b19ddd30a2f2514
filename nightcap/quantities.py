"""Kubernetes-style resource quantities (`500m`, `1.5Gi`), parsed the way kubectl reads them."""

from __future__ import annotations

import math
import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE](?P<exp>[+-]?[0-9]{1,2}))?(?P<suffix>[A-Za-z]*)\s*$")

# Anything above this is a typo, not a pod size: refuse it early instead of overflowing later.
MAX_MEMORY_BYTES = 2**50
MAX_CPU_CORES = 4096.0


class QuantityError(ValueError):
    """A quantity string that Kubernetes would not accept either."""


def parse_memory(value: str | int | float) -> int:
    """Bytes from `256Mi`, `1Gi`, `500M`, `1e9` or a plain number of bytes."""
    if isinstance(value, bool):
        raise QuantityError("memory must be a quantity like 256Mi or 1Gi, not a boolean")
    if isinstance(value, (int, float)):
        number, factor = float(value), 1
    else:
        match = _QUANTITY.match(str(value))
        if not match:
            raise QuantityError(f"{value!r} is not a memory quantity; use e.g. 256Mi, 1Gi, 500M")
        suffix = match["suffix"]
        if suffix in _BINARY:
            factor = _BINARY[suffix]
        elif suffix in _DECIMAL:
            factor = _DECIMAL[suffix]
        else:
            allowed = ", ".join(list(_BINARY) + [s for s in _DECIMAL if s])
            raise QuantityError(f"{value!r} has unknown unit {suffix!r}; allowed units: {allowed}")
        number = float(match["num"]) * (10 ** int(match["exp"] or 0))
    result = number * factor
    if not result > 0:
        raise QuantityError(f"memory {value!r} must be greater than zero")
    if result > MAX_MEMORY_BYTES:
        raise QuantityError(f"memory {value!r} is larger than 1Pi; that is not a pod size")
    return math.ceil(result)  # fractions of a byte round up, as Kubernetes does (0.5 is 1 byte, not 0)


def parse_cpu(value: str | int | float) -> float:
    """Cores from `500m`, `0.5`, `2`."""
    if isinstance(value, bool):
        raise QuantityError("cpu must be a number of cores like 0.5 or a quantity like 500m")
    if isinstance(value, (int, float)):
        cores = float(value)
    else:
        text = str(value).strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise QuantityError(f"{value!r} is not a CPU quantity; use e.g. 500m, 0.5 or 2") from None
    if not cores > 0:
        raise QuantityError(f"cpu {value!r} must be greater than zero")
    if cores > MAX_CPU_CORES:
        raise QuantityError(f"cpu {value!r} is more than {MAX_CPU_CORES:g} cores; that is not a pod size")
    return cores


def format_memory(num_bytes: int | None) -> str:
    """The shortest exact binary quantity (`256Mi`, `1536Mi`), as Kubernetes manifests write it; None is
    `unlimited` (no memory limit). Manifests, tuning labels and reports all print memory with this."""
    if num_bytes is None:
        return "unlimited"
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        factor = _BINARY[suffix]
        if num_bytes % factor == 0:
            return f"{num_bytes // factor}{suffix}"
    return str(num_bytes)


def format_cpu(cores: float) -> str:
    """Millicores (`500m`) unless whole cores."""
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"
