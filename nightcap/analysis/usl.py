"""The Universal Scalability Law fitted to measured throughput, so we can say where scaling stops paying.

X(N) = λN / (1 + σ(N−1) + κN(N−1)): λ is the throughput of one unit (pod, core or user), σ the
contention (the serial fraction, Amdahl) and κ the coherency cost (crosstalk that makes throughput
fall past a peak). Extrapolations always come with the band implied by the fit's covariance,
because a USL curve fitted to three points can say almost anything about N = 50.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

if TYPE_CHECKING:
    import pandas as pd

MIN_POINTS = 3  # λ, σ and κ: three unknowns need three distinct N
Z95 = 1.96


def usl(n: Any, lam: float, sigma: float, kappa: float) -> Any:
    """Throughput at N (scalar or array)."""
    n = np.asarray(n, dtype=float)
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


@dataclass(frozen=True)
class UslFit:
    """A USL fit, or the reason there is none (`ok` is False and the numbers are None)."""

    lam: float | None
    sigma: float | None
    kappa: float | None
    r2: float | None
    rmse: float | None
    sigma_err: float | None
    kappa_err: float | None
    predicted_peak_n: float | None  # N* = sqrt((1−σ)/κ); None when κ = 0 (no retrograde)
    peak_throughput: float | None  # X(N*)
    retrograde_from_n: int | None  # first integer N with X(N) < X(N−1)
    n_points: int
    reason: str = ""  # why there is no fit, or what to be careful about
    max_measured_n: float | None = None
    cov: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)  # of (λ, σ, κ)

    @property
    def ok(self) -> bool:
        return self.lam is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (summary.json `scaling.usl`); the covariance is left out."""
        out = asdict(self)
        out.pop("cov")
        out["ok"] = self.ok
        return out


def _no_fit(n_points: int, reason: str) -> UslFit:
    return UslFit(None, None, None, None, None, None, None, None, None, None, n_points, reason)


def fit_usl(n: Sequence[float], throughput: Sequence[float], kappa_floor: float = 1e-9) -> UslFit:
    """Fit λ, σ, κ (σ in [0, 1], κ ≥ 0) by least squares; repeated N are fine (each is a sample).

    Fewer than three distinct N gives no fit and says so: with two points any σ/κ split fits exactly.
    κ below `kappa_floor` is treated as 0, so a linear curve does not report a peak at N = 10⁵.
    """
    ns = np.asarray(n, dtype=float)
    xs = np.asarray(throughput, dtype=float)
    if ns.shape != xs.shape:
        raise ValueError(f"n and throughput differ in length ({ns.size} vs {xs.size})")
    keep = np.isfinite(ns) & np.isfinite(xs) & (ns > 0) & (xs >= 0)
    ns, xs = ns[keep], xs[keep]
    distinct = np.unique(ns).size
    if distinct < MIN_POINTS:
        return _no_fit(
            int(ns.size),
            f"the USL needs throughput at {MIN_POINTS} or more distinct counts to separate contention "
            f"from coherency; got {distinct} ({', '.join(f'{v:g}' for v in np.unique(ns)) or 'none'}). "
            "Measure more replicas (scaling.max_replicas) or user levels.",
        )
    if not np.any(xs > 0):
        return _no_fit(int(ns.size), "every measured throughput is 0: nothing to fit")

    lam0 = float(np.max(xs[ns == ns.min()] / ns.min()))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for p0 in ((lam0, 0.01, 1e-4), (lam0, 0.1, 0.01), (lam0, 0.5, 0.1), (lam0, 0.0, 0.0)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(
                    usl, ns, xs, p0=p0, bounds=([0.0, 0.0, 0.0], [np.inf, 1.0, np.inf]), maxfev=5000
                )
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((usl(ns, *popt) - xs) ** 2))
        if best is None or sse < best[0] - 1e-12 * max(1.0, sse):
            best = (sse, popt, pcov)
    if best is None:
        return _no_fit(int(ns.size), "the least-squares fit did not converge")

    sse, popt, pcov = best
    lam, sigma, kappa = (float(v) for v in popt)
    if kappa < kappa_floor:
        kappa = 0.0
    sst = float(np.sum((xs - xs.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse <= 1e-12 else 0.0)
    rmse = math.sqrt(sse / ns.size)
    cov = np.where(np.isfinite(pcov), pcov, np.inf)
    errs = [math.sqrt(v) if math.isfinite(v) and v >= 0 else math.inf for v in np.diag(cov)]

    peak_n = peak_x = retro = None
    if kappa > 0 and sigma < 1.0:
        peak_n = math.sqrt((1.0 - sigma) / kappa)
        peak_x = float(usl(peak_n, lam, sigma, kappa))
        k = max(2, int(math.floor(peak_n)))
        while float(usl(k, lam, sigma, kappa)) >= float(usl(k - 1, lam, sigma, kappa)):
            k += 1
        retro = k
    reason = ""
    if ns.size == MIN_POINTS:
        reason = "three points fit exactly: the error figures say little"
    if peak_n is not None and peak_n > 2 * ns.max():
        reason = (reason + "; " if reason else "") + (
            f"the peak (N≈{peak_n:.0f}) is far beyond the largest measured N ({ns.max():g}): an extrapolation"
        )
    return UslFit(
        lam=lam,
        sigma=sigma,
        kappa=kappa,
        r2=r2,
        rmse=rmse,
        sigma_err=errs[1],
        kappa_err=errs[2],
        predicted_peak_n=peak_n,
        peak_throughput=peak_x,
        retrograde_from_n=retro,
        n_points=int(ns.size),
        reason=reason,
        max_measured_n=float(ns.max()),
        cov=tuple(tuple(float(v) for v in row) for row in cov),
    )


def predict(fit: UslFit, n: float, z: float = Z95) -> tuple[float, float, float]:
    """Throughput at N with a ±z·sd band (95% by default) from the fit's covariance (delta method).

    The band is clipped at 0 below; an infinite covariance gives an infinite band, which is the truth.
    """
    if not fit.ok:
        raise ValueError(f"no USL fit to predict from: {fit.reason}")
    lam, sigma, kappa = fit.lam, fit.sigma, fit.kappa
    assert lam is not None and sigma is not None and kappa is not None
    n = float(n)
    d = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0)
    value = lam * n / d
    grad = np.array([n / d, -lam * n * (n - 1.0) / d**2, -lam * n * n * (n - 1.0) / d**2])
    cov = np.asarray(fit.cov if fit.cov is not None else np.zeros((3, 3)), dtype=float)
    mask = grad != 0
    sub = cov[np.ix_(mask, mask)]
    if not np.all(np.isfinite(sub)):
        return value, 0.0, math.inf
    var = float(grad[mask] @ sub @ grad[mask])
    half = z * math.sqrt(max(var, 0.0))
    return value, max(0.0, value - half), value + half


def fit_usl_steps(steps: "pd.DataFrame", slo: Any, by: str = "replicas") -> UslFit:
    """Fit goodput against `by` (replicas, or users for one pod) from steps.csv rows.

    Only usable windows within the SLO and the error limit (`slo.p95_ms`, `slo.max_error_rate`) count; the
    windows of one level are averaged (the max of noisy windows is biased up), and the best level at each
    count is its saturation throughput, not the ramp steps below it. Filter the frame by stage first.
    """
    from nightcap.analysis.saturation import within_slo_mask

    if steps.empty:
        return fit_usl([], [])
    frame = steps.loc[within_slo_mask(steps, slo.p95_ms, slo.max_error_rate)]
    levels = frame.groupby([by, "users"])["rps"].mean() if by != "users" else frame.groupby(by)["rps"].mean()
    best = levels.groupby(level=0).max() if by != "users" else levels
    return fit_usl(best.index.to_numpy(dtype=float), best.to_numpy(dtype=float))
