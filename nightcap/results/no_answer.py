"""No answer is not success: why a run whose stages measured no saturation point has none.

A run that ramped a model answering 400 to every request used to end "completed", exit 0, with the cause
only inside steps.csv. This names the cause in one line for the console and the top of report.md.
Pure: plain step rows and the summary dict in, a sentence out.
"""

from __future__ import annotations

import re
from collections import Counter
from http import HTTPStatus
from typing import Any, Iterable

from nightcap.steps import StepRow

# the stages that search for a saturation point; a run of only sizing or regression asks no such question
SATURATION_STAGES = ("tune", "single_client", "multi_client", "scaling")

_ERROR = re.compile(r"(?P<what>.+?) x(?P<count>\d+)$")
_CODE = re.compile(r"code=(\d{3})")


def _status(text: str) -> str:
    """`LocustBadStatusCode(code=400)` as `400 Bad Request`; other errors as they are."""
    found = _CODE.search(text)
    if found:
        code = int(found.group(1))
        try:
            return f"{code} {HTTPStatus(code).phrase}"
        except ValueError:
            return f"HTTP {code}"
    return text.strip()


def top_errors(steps: Iterable[StepRow], limit: int = 2) -> list[tuple[str, int]]:
    """The most frequent errors over the steps, from each row's `errors: X x41; Y x2` note."""
    counts: Counter[str] = Counter()
    for row in steps:
        for part in row.note.split("; "):
            m = _ERROR.match(part.removeprefix("errors: ").strip())
            if m:
                counts[_status(m["what"])] += int(m["count"])
    return counts.most_common(limit)


def no_answer_reason(summary: dict[str, Any], steps: list[StepRow]) -> str | None:
    """The reason no saturation point was found, or None when one was (or no stage looked for one)."""
    stages = summary.get("stages", {})
    ran = [s for s in SATURATION_STAGES if stages.get(s, {}).get("status") in ("completed", "inconclusive", "failed")]
    if not ran or (summary.get("saturation") or {}).get("rps") is not None:
        return None
    # a tune-only or scaling run answers per candidate or per replica count, not in the headline
    if ((summary.get("tuning") or {}).get("best") or {}).get("saturation_rps"):
        return None
    if any(r.get("saturation_rps") for r in (summary.get("scaling") or {}).get("rows") or []):
        return None
    measured = [s for s in steps if s.stage in ran and s.valid]
    if not measured:
        errors = [f"{s}: {stages[s]['error']}" for s in ran if stages.get(s, {}).get("error")]
        return "no load step was measured" + (f" ({'; '.join(errors)})" if errors else "")
    requests = sum(s.requests for s in measured)
    failures = sum(s.failures for s in measured)
    errors = top_errors(measured)
    named = ", ".join(f"{what} x{count}" for what, count in errors)
    if requests == 0:
        return "no request completed in any measured window" + (f" ({named})" if named else "")
    if failures >= requests:
        return "every request failed: " + (named or f"{failures} failures")
    why = [w for w in ((summary.get(s) or {}).get("saturation", {}).get("stop_reason") for s in ran) if w]
    reason = "no load level met the SLO" + (": " + "; ".join(why) if why else "")
    if failures:
        reason += f" ({failures} of {requests} requests failed" + (f": {named})" if named else ")")
    return reason
