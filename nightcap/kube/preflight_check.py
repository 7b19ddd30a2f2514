"""One preflight finding (`Check`): what `preflight.py`, `preflight_cluster.py` and `preflight_gke.py` return,
kept apart so the checks import it rather than the module that runs them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One finding: `ok` False means the run cannot succeed (or would waste the night) until `text` is done."""

    name: str
    ok: bool
    text: str
    warning: bool = False  # ok, but worth a look

    def line(self) -> str:
        mark = "FAIL" if not self.ok else ("warn" if self.warning else "ok")
        return f"{mark:<4}  {self.name}: {self.text}"
