"""Every plot nightcap draws, in one place: matplotlib with the Agg backend (no display), PNG files.

Each function takes measured data (step rows, fits, samples, the history frame) and a path, writes the
PNG and returns its file name (or None when there is nothing to draw). Flows call these; nothing here measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")  # the only place: importing pyplot before this would pick a display backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nightcap.analysis.confidence import combine_windows, window_estimate  # noqa: E402
from nightcap.analysis.figures import COMPARED_FIGURES  # noqa: E402
from nightcap.analysis.slo import Slo  # noqa: E402
from nightcap.analysis.usl import UslFit, predict  # noqa: E402
from nightcap.quantities import format_memory  # noqa: E402
from nightcap.steps import StepRow  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

    from nightcap.analysis.autoscale_metrics import AutoscaleSample
    from nightcap.analysis.tuning import CandidateResult
    from nightcap.results.level_changes import LevelChange


def _save(fig: Any, path: Path, dpi: int = 90, tight: bool = True) -> str:
    """Write the PNG, free the figure (pyplot keeps every open one), return the file name."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=dpi)
    plt.close(fig)
    return path.name


def plot_ramp(steps: Iterable[StepRow], path: Path, title: str, slo: Slo | None = None,
              saturation: dict[str, Any] | None = None) -> str | None:
    """Goodput (with its 95% interval) and p95 against users, the saturation point marked.

    The throughput line joins only levels that meet the SLO (`slo`; None: any level with a p95); the others are
    drawn as marked points (a level of fast 503s must not look like a faster server).
    """
    rows = sorted((s for s in steps if s.valid), key=lambda s: s.users)
    if not rows:
        return None
    by_users: dict[int, list[StepRow]] = {}
    for row in rows:
        by_users.setdefault(row.users, []).append(row)
    users = list(by_users)
    last = {u: by_users[u][-1] for u in users}  # the verdict of a level is its last window's
    met = dict(zip(users, slo.met_steps([last[u] for u in users]))) if slo is not None else {}

    def good(u: int) -> bool:
        row = last[u]
        if row.generator_bound or row.p95_ms is None:
            return False
        return met.get(u, True)

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
    if slo is not None:
        ax2.axhline(slo.p95_ms, color="tab:red", linestyle=":", linewidth=1, label=f"SLO p95 ≤ {slo.p95_ms:g} ms")
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
    return _save(fig, path)


def plot_p95_by_cores(steps: Iterable[StepRow], path: Path, slo_p95_ms: float) -> str | None:
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
    ax.axhline(slo_p95_ms, color="red", linestyle=":", label=f"SLO p95 ≤ {slo_p95_ms:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("p95 ms")
    ax.legend(fontsize=8)
    ax.set_title("Latency under load by core count")
    return _save(fig, path)


def heatmap(results: list[CandidateResult], path: Path, memory: int | None) -> str | None:
    """CPU × concurrency → rps per core, at the settled memory: where the efficient pod sizes are."""
    cells = [r for r in results if memory is None or r.candidate.memory == memory]
    if not cells:
        return None
    cpus = sorted({r.candidate.cpu for r in cells})
    concs = sorted({r.candidate.concurrency for r in cells})
    grid = [[float("nan")] * len(concs) for _ in cpus]
    for r in cells:
        grid[cpus.index(r.candidate.cpu)][concs.index(r.candidate.concurrency)] = r.rps_per_core
    fig, ax = plt.subplots(figsize=(1.2 * len(concs) + 3, 0.8 * len(cpus) + 2))
    im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(concs)), [str(c) for c in concs])
    ax.set_yticks(range(len(cpus)), [f"{c:g}" for c in cpus])
    ax.set_xlabel("concurrency per pod")
    ax.set_ylabel("CPU per pod (cores)")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            missing = value != value
            ax.text(j, i, "pruned" if missing else f"{value:.0f}", ha="center", va="center",
                    color="grey" if missing else "white", fontsize=8)
    fig.colorbar(im, ax=ax, label="rps per core")
    ax.set_title(f"rps per core (memory {format_memory(memory)})")
    return _save(fig, path)


def usl_figure(fit: UslFit, rows: list[dict]) -> tuple[Any, Any] | None:
    """The measured saturation per replica count, the linear reference, and the USL curve with its 95% band only
    when the fit was accepted (`fit.ok`); a rejected fit is named as "no fit" and why, with no curve.

    Replica counts where no level met the SLO (saturation 0) are not points: nothing was measured there.
    """
    rows = [r for r in rows if r.get("saturation_rps")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["replicas"] for r in rows]
    ax.plot(xs, [r["saturation_rps"] for r in rows], "o", label="measured saturation")
    one = next((r["saturation_rps"] for r in rows if r["replicas"] == 1), None)
    if one:
        ax.plot(xs, [one * n for n in xs], ":", color="grey", label="linear (N × one pod)")
    if fit.ok:
        top = max(max(xs) * 2, (fit.predicted_peak_n or 0) * 1.2)
        grid = np.linspace(1, top, 60)
        pred = [predict(fit, n) for n in grid]
        ax.plot(grid, [p[0] for p in pred], "-", label=f"USL σ={fit.sigma:.3f} κ={fit.kappa:.4f}")
        ax.fill_between(grid, [p[1] for p in pred], [p[2] for p in pred], alpha=0.2, label="95% band")
        ax.axvline(max(xs), color="black", linewidth=0.5, linestyle="--")
        ax.annotate("measured | extrapolated", (max(xs), ax.get_ylim()[1] * 0.95), fontsize=8, ha="center")
    else:  # room above the points for the reason
        ax.set_ylim(0, 1.25 * max([r["saturation_rps"] for r in rows] + [one * max(xs) if one else 0.0]))
        ax.text(0.02, 0.97, fit.reason or "no fit", transform=ax.transAxes, fontsize=8, va="top", wrap=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("replicas")
    ax.set_ylabel("saturation rps")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Throughput against replicas")
    return fig, ax


def usl_plot(fit: UslFit, rows: list[dict], path: Path) -> str | None:
    drawn = usl_figure(fit, rows)
    return _save(drawn[0], path) if drawn else None


def timeline_plot(samples: list[AutoscaleSample], path: Path, slo_ms: float, step_t: float,
                  step_down_t: float | None = None) -> str | None:
    """Replicas and rates; p95 and lost arrivals (by arrival: each sample's own); where requests waited. The load
    step is at 0; the step back down, when there is one, is a dotted line."""
    if not samples:
        return None
    t = [s.t - step_t for s in samples]
    waiting = any(s.in_flight is not None for s in samples)
    fig, axes = plt.subplots(3 if waiting else 2, 1, figsize=(8, 8.5 if waiting else 6), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    ax1.step(t, [s.current for s in samples], where="post", label="replicas")
    ax1.step(t, [s.desired for s in samples], where="post", linestyle="--", label="desired")
    ax1.step(t, [s.ready for s in samples], where="post", linestyle=":", label="ready")
    ax1.step(t, [s.pending for s in samples], where="post", color="red", label="pending")
    if any(s.nodes for s in samples):
        ax1.step(t, [s.nodes or 0 for s in samples], where="post", color="black", label="nodes")
    ax1b = ax1.twinx()
    ax1b.plot(t, [s.rps for s in samples], color="grey", alpha=0.6, label="rps served")
    if any(s.offered_rps for s in samples):
        ax1b.plot(t, [s.offered_rps or 0.0 for s in samples], color="grey", linestyle="--", alpha=0.6,
                  label="rps offered")
    ax1b.set_ylabel("rps served (grey), offered (dashed)")
    ax1b.set_ylim(bottom=0)
    ax1.set_ylabel("replicas")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.plot(t, [s.p95_ms or float("nan") for s in samples], "o-", color="tab:red", markersize=3, label="p95 ms")
    ax2.axhline(slo_ms, color="tab:red", linestyle=":", label=f"SLO p95 ≤ {slo_ms:g} ms")
    if any(s.error_rate for s in samples):  # failed and dropped arrivals: what callers lost meanwhile
        ax2b = ax2.twinx()
        ax2b.step(t, [100 * s.error_rate for s in samples], where="post", color="black", alpha=0.5)
        ax2b.set_ylabel("failed + dropped % (black)")
        ax2b.set_ylim(bottom=0)
    ax2.set_yscale("log")
    ax2.set_ylabel("p95 ms (of each sample's arrivals)")
    ax2.legend(loc="upper left", fontsize=8)
    if waiting:
        _waiting_panel(axes[2], t, samples)
    for ax in axes:
        ax.axvline(0.0, color="black", linewidth=0.8, alpha=0.5)
        if step_down_t is not None:
            ax.axvline(step_down_t - step_t, color="black", linewidth=0.8, linestyle=":", alpha=0.7)
    axes[-1].set_xlabel("seconds after the load step (dotted: the step back down)" if step_down_t is not None
                        else "seconds after the load step")
    ax1.set_title("Autoscaling timeline")
    return _save(fig, path)


def _waiting_panel(ax: Any, t: list[float], samples: list[AutoscaleSample]) -> None:
    """Requests waiting when each sample was taken: sent by the generator, held by the replicas (of which their
    callers already left), and unaccepted at the proxy (see docs/autoscaling.md)."""
    for values, style, label in (([s.in_flight for s in samples], "-", "generator: in flight"),
                                 ([s.server_held for s in samples], "--", "replicas: connections held"),
                                 ([s.callers_left for s in samples], ":", "of which the caller left"),
                                 ([s.proxy_queue for s in samples], "-.", "proxy: not accepted yet")):
        if any(v is not None for v in values):
            ax.step(t, [float("nan") if v is None else v for v in values], where="post", linestyle=style, label=label)
    ax.set_ylabel("requests waiting")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)



def trend_plot(history_df: "pd.DataFrame", path: str | Path, title: str | None = None,
               changes: "Mapping[str, list[LevelChange]] | None" = None) -> str:
    """One panel per compared headline figure over the nights; completed runs joined, others marked apart, level
    changes (`nightcap.results.level_changes`) as a dashed line at their night with the change written beside it."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, grid = plt.subplots(len(COMPARED_FIGURES), 1, sharex=True, squeeze=False, layout="constrained",
                             figsize=(8, 2.2 * len(COMPARED_FIGURES)))
    axes = grid[:, 0]
    frame = history_df.copy() if history_df is not None else pd.DataFrame()
    if not frame.empty and "started_at" in frame:
        frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
        frame = frame.sort_values("started_at")
    status = frame["status"] if "status" in frame else pd.Series("completed", index=frame.index)
    for ax, figure in zip(axes, COMPARED_FIGURES):
        column = figure.name
        ax.set_title(figure.label, fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        if frame.empty or column not in frame:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        done = (status == "completed") & values.notna()
        other = (status != "completed") & values.notna()
        if done.any():
            ax.plot(frame.loc[done, "started_at"], values[done], marker="o", color="tab:blue", label="completed")
        if other.any():
            ax.plot(frame.loc[other, "started_at"], values[other], "x", color="tab:red", label="failed / cancelled")
        for run_id, found in (changes or {}).items():
            for change in found:
                if change.figure != column or "run_id" not in frame:
                    continue
                at = frame.loc[frame["run_id"] == run_id, "started_at"]
                if at.empty:
                    continue
                colour = "tab:red" if change.worse else "tab:green"
                ax.axvline(at.iloc[0], color=colour, linestyle="--", linewidth=1)
                ax.annotate(f"{'+' if change.change_pct > 0 else '−'}{abs(change.change_pct):.0f}% (p={change.pvalue:.1g})",
                            (at.iloc[0], 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                            textcoords="offset points", fontsize=7, color=colour)
        if not values.notna().any():
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif other.any():
            ax.legend(fontsize=7, loc="best")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.suptitle(title or "nightcap: headline figures, night after night", fontsize=11)
    return _save(fig, path, dpi=100, tight=False)
