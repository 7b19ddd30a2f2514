"""Every plot draws a PNG from small data, and draws nothing (None) when there is no data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nightcap.analysis.autoscale_metrics import AutoscaleSample
from nightcap.analysis.slo import Slo
from nightcap.analysis.tuning import Candidate, evaluate
from nightcap.analysis.usl import fit_usl
from nightcap.results.plots import (heatmap, plot_p95_by_cores, plot_ramp, timeline_plot, trend_plot, usl_figure,
                                    usl_plot)
from nightcap.steps import StepRow

MI = 1 << 20


def _step(users: int, rps: float, p95: float, replicas: int = 1) -> StepRow:
    return StepRow(stage="single_client", step=users, replicas=replicas, cpu=0.5, memory=None, concurrency=2,
                   users=users, rps=rps, p95_ms=p95)


def _png(path: Path) -> bool:
    return path.read_bytes()[:4] == b"\x89PNG"


def test_ramp_and_latency_plots(tmp_path: Path) -> None:
    steps = [_step(1, 50, 20), _step(2, 95, 22), _step(4, 120, 60), _step(2, 180, 21, replicas=2)]
    ramp = plot_ramp(steps[:3], tmp_path / "ramp.png", "ramp", Slo(100), {"users": 2, "rps": 95.0})
    assert ramp == "ramp.png" and _png(tmp_path / ramp)
    assert plot_p95_by_cores(steps, tmp_path / "cores.png", 100) == "cores.png" and _png(tmp_path / "cores.png")
    assert plot_ramp([], tmp_path / "none.png", "ramp") is None
    assert plot_p95_by_cores([], tmp_path / "none.png", 100) is None


def test_heatmap_usl_and_timeline(tmp_path: Path) -> None:
    results = [evaluate(Candidate(cpu, 512 * MI, conc), replicas=2, saturation_rps=40.0 * cpu * conc, p95_ms=30.0,
                        cpu_use_pct=90.0, memory_peak_pct=40.0, oom_kills=0, restarts=0, meets_slo=True)
               for cpu in (0.5, 1.0) for conc in (1, 2)]
    assert heatmap(results, tmp_path / "heat.png", 512 * MI) == "heat.png" and _png(tmp_path / "heat.png")
    assert heatmap(results, tmp_path / "none.png", 1024 * MI) is None  # nothing measured at that memory
    fit = fit_usl([1, 2, 3, 4], [100, 190, 270, 340])
    rows = [{"replicas": n, "saturation_rps": r} for n, r in zip((1, 2, 3, 4), (100, 190, 270, 340))]
    assert usl_plot(fit, rows, tmp_path / "usl.png") == "usl.png" and _png(tmp_path / "usl.png")
    assert usl_plot(fit, [], tmp_path / "none.png") is None
    assert usl_plot(fit, [{"replicas": 1, "saturation_rps": 0.0}], tmp_path / "none.png") is None  # nothing measured
    samples = [AutoscaleSample(t=float(t), phase="overload", rps=100.0, p50_ms=10.0, p95_ms=50.0 + t,
                               error_rate=0.1 * (t == 3), current=1 + t // 3, desired=2, ready=1, pending=0,
                               offered_rps=120.0) for t in range(6)]
    assert timeline_plot(samples, tmp_path / "tl.png", 100.0, 2.0) == "tl.png" and _png(tmp_path / "tl.png")
    assert timeline_plot([], tmp_path / "none.png", 100.0, 0.0) is None
    assert not (tmp_path / "none.png").exists()


def test_trend_plot_with_and_without_history(tmp_path: Path) -> None:
    frame = pd.DataFrame({"started_at": ["2024-01-01T02:00:00Z", "2024-01-02T02:00:00Z"],
                          "status": ["completed", "failed"], "saturation_rps": [100.0, 90.0],
                          "rps_per_core": [200.0, 180.0], "p95_at_operating_ms": [20.0, 25.0], "slo_users": [10, 9]})
    assert trend_plot(frame, tmp_path / "t" / "trend.png") == "trend.png" and _png(tmp_path / "t" / "trend.png")
    assert trend_plot(pd.DataFrame(), tmp_path / "empty.png") == "empty.png" and _png(tmp_path / "empty.png")


def test_usl_curve_is_drawn_only_for_an_accepted_fit() -> None:
    """Issue 23: a fit that does not explain the data is named "no fit" on the plot and draws no curve or band."""
    import matplotlib.pyplot as plt

    rows = [{"replicas": n, "saturation_rps": r} for n, r in zip((1, 2, 3), (100.0, 133.0, 233.0))]
    rejected = fit_usl([1, 2, 3], [100.0, 133.0, 233.0])  # near the points, but the curve is known too loosely
    assert not rejected.ok
    fig, ax = usl_figure(rejected, rows)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["measured saturation", "linear (N × one pod)"]
    assert [t.get_text() for t in ax.texts] == [rejected.reason] and rejected.reason.startswith("no fit: ")
    plt.close(fig)
    accepted = fit_usl([1, 2, 3, 4], [100.0, 190.0, 270.0, 340.0])
    fig, ax = usl_figure(accepted, rows)
    assert any(label.startswith("USL σ=") for label in ax.get_legend_handles_labels()[1])
    assert "95% band" in ax.get_legend_handles_labels()[1]
    plt.close(fig)
