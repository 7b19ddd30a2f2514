"""report.md and the one-line answer: the summary rendered for people (plots are drawn in `plots.py`).

The Prefect markdown artifact is the same text with the plots embedded (`tasks/artifacts.py`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def answer_line(summary: dict[str, Any]) -> str:
    """The answer in one line: it leads report.md and the Prefect markdown artifact."""
    sat = summary.get("saturation") or {}
    slo = summary.get("slo_capacity") or {}
    op = summary.get("operating_point") or {}
    target = summary.get("target", {}).get("name", "the target")
    if sat.get("rps") is None:
        return f"**{target}**: no saturation point was found ({sat.get('stop_reason') or 'no stage measured it'})."
    plat = summary.get("platform", {})
    size = f"{plat.get('replicas', 1)} replica(s) of {_fmt(plat.get('cpu'), 2)} CPU"
    users = sat.get("users")
    line = (f"**{target}** saturates at **{_fmt(sat['rps'])} rps** with {users} concurrent user{'s' if users != 1 else ''} "
            f"on {size}; operate at {_fmt(op.get('rps'))} rps ({int(round(100 * op.get('headroom', 0.7)))}%)")
    if slo.get("users") is not None:
        line += f"; {slo['users']} users fit under p95 < {_fmt(slo.get('p95_ms'), 0)} ms"
    if not sat.get("found", True):
        line += f" (lower bound: {sat.get('stop_reason')})"
    return line + "."


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_\n"
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(c), 2) for c in columns) + " |")
    return "\n".join(out) + "\n"


def embed_png(path: Path) -> str:
    """A data URI, so the plot renders in the Prefect UI without a public URL."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_markdown(summary: dict[str, Any], out: Path, plots: list[Path], embed: bool = False) -> str:
    """report.md: the answer first, then each stage's table and plot."""
    lines = [answer_line(summary), ""]
    for key in ("autoscale_line", "sizing_line", "tuning_line", "regression_line", "multi_client_line"):
        if summary.get(key):
            lines.append(f"- {summary[key]}")
    plat = summary.get("platform", {})
    if not plat.get("limits_enforced", True):
        lines.append(f"- CPU and memory limits were **not enforced**: {plat.get('limits_note')}")
    for warning in summary.get("warnings", []):
        lines.append(f"- warning: {warning}")
    lines.append("")
    stages = summary.get("stages", {})
    lines.append("## Stages\n")
    lines.append(table([{"stage": k, **{kk: vv for kk, vv in v.items() if kk in ("status", "duration_s", "steps", "error")}}
                        for k, v in stages.items()], ["stage", "status", "duration_s", "steps", "error"]))
    for section in summary.get("sections", []):
        lines.append(f"## {section['title']}\n")
        if section.get("text"):
            lines.append(section["text"] + "\n")
        if section.get("rows"):
            lines.append(table(section["rows"], section.get("columns")))
    for plot in plots:
        src = embed_png(plot) if embed else plot.name
        lines.append(f"![{plot.stem}]({src})\n")
    text = "\n".join(lines)
    if not embed:
        (out / "report.md").write_text(text)
    return text
