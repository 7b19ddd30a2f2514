"""The report folder: summary.json, steps.csv, report.md and PNG plots people look at instead of tables.

Pure file output (matplotlib with the Agg backend); the Prefect artifacts are built from the same pieces in
`tasks/artifacts.py`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nightcap.results.steps import StepRow  # noqa: E402


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def headline(summary: dict[str, Any]) -> str:
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


def plot_ramp(steps: Iterable[StepRow], path: Path, title: str, slo_p95_ms: float | None = None,
              saturation: dict[str, Any] | None = None, max_error_rate: float | None = None) -> Path | None:
    """Goodput (with its 95% interval) and p95 against users, the saturation point marked.

    The throughput line joins only levels within the SLO and the error limit; the others are drawn as
    marked points (a level of fast 503s must not look like a faster server).
    """
    from nightcap.analysis.confidence import combine_windows
    from nightcap.search import window_estimate

    rows = sorted((s for s in steps if s.valid), key=lambda s: s.users)
    if not rows:
        return None
    by_users: dict[int, list[StepRow]] = {}
    for row in rows:
        by_users.setdefault(row.users, []).append(row)
    users = list(by_users)
    last = {u: by_users[u][-1] for u in users}  # the verdict of a level is its last window's

    def good(u: int) -> bool:
        row = last[u]
        return (not row.generator_bound and row.p95_ms is not None
                and (slo_p95_ms is None or row.p95_ms <= slo_p95_ms)
                and (max_error_rate is None or row.error_rate <= max_error_rate))

    level = {u: combine_windows([window_estimate(r) for r in by_users[u]]) for u in users}
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ok = [u for u in users if good(u)]
    if ok:
        ax1.errorbar(ok, [level[u].mean for u in ok], yerr=[level[u].half_width or 0.0 for u in ok], fmt="o-",
                     color="tab:blue", capsize=3, label="goodput (rps, 95% interval)")
    over = [u for u in users if not good(u) and not last[u].generator_bound]
    if over:
        ax1.scatter(over, [level[u].mean for u in over], marker="v", s=50, color="tab:orange",
                    label="over the SLO or error limit (not a figure)")
    ax1.set_xscale("log", base=2)
    ax1.set_ylim(bottom=0)
    ax1.set_xlabel("concurrent users")
    ax1.set_ylabel("rps", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(users, [last[u].p95_ms or float("nan") for u in users], "s--", color="tab:red", label="p95 (ms)")
    ax2.set_ylabel("p95 ms", color="tab:red")
    if slo_p95_ms:
        ax2.axhline(slo_p95_ms, color="tab:red", linestyle=":", linewidth=1, label=f"SLO p95 {slo_p95_ms:g} ms")
    bound = [u for u in users if last[u].generator_bound]
    if bound:
        ax1.scatter(bound, [level[u].mean for u in bound], marker="x", s=80, color="black", label="generator-bound")
    if saturation and saturation.get("users") and saturation.get("rps") is not None:
        ax1.axvline(saturation["users"], color="tab:green", linestyle="--", linewidth=1)
        ax1.annotate(f"saturation {saturation['rps']:.0f} rps", (saturation["users"], saturation["rps"]),
                     textcoords="offset points", xytext=(5, -15), color="tab:green")
    lines = ax1.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_p95_by_cores(steps: Iterable[StepRow], path: Path, slo_p95_ms: float) -> Path | None:
    """p95 against users, one line per replica count, the SLO drawn: the capacity-under-SLO picture."""
    rows = [s for s in steps if s.valid and not s.generator_bound and s.p95_ms is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for replicas in sorted({s.replicas for s in rows}):
        pts: dict[int, float] = {}
        for s in rows:
            if s.replicas == replicas:
                pts[s.users] = s.p95_ms  # type: ignore[assignment]
        xs = sorted(pts)
        cores = rows[0].cpu or 1
        ax.plot(xs, [pts[x] for x in xs], "o-", label=f"{replicas} replica(s), {replicas * cores:g} cores")
    ax.axhline(slo_p95_ms, color="red", linestyle=":", label=f"SLO p95 {slo_p95_ms:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("p95 ms")
    ax.legend(fontsize=8)
    ax.set_title("Latency under load by core count")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


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
    lines = [headline(summary), ""]
    if summary.get("failure"):  # why there is no answer comes before anything else
        lines = [f"**Run failed**: {summary['failure']}", ""] + lines
    payload = (summary.get("target") or {}).get("payload") or {}
    if payload.get("source"):
        lines.append(f"- requests: {payload['source']}" + (" (**synthetic values**)" if payload.get("synthetic") else ""))
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
