"""The Universal Scalability Law fitted to measured throughput, so we can say where scaling stops paying.

X(N) = λN / (1 + σ(N−1) + κN(N−1)): λ is the throughput of one unit (pod, core or user), σ the
contention (the serial fraction, Amdahl) and κ the coherency cost (crosstalk that makes throughput
fall past a peak). Extrapolations always come with the band implied by the fit's covariance,
because a USL curve fitted to three points can say almost anything about N = 50.

A fit is reported only when it explains the data (r² ≥ MIN_R2, and the parameters' 95% intervals move the
fitted curve, at every measured N, by at most MAX_SHIFT of the largest measured throughput); otherwise it is "no fit", with the reason in
one clause, and nothing is extrapolated from it. κ is kept only when the data show it (its interval excludes 0).
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

    from nightcap.analysis.slo import Slo

MIN_POINTS = 3  # λ, σ and κ: three unknowns need three distinct N
Z95 = 1.96
# When a fit is reported (and extrapolated from): it explains the measurements (r² at least MIN_R2) and the
# parameters are known well enough that their 95% intervals (jointly, from the fit's covariance) move the fitted
# curve, at any measured N, by at most MAX_SHIFT of the largest measured throughput (the scale of the data: past a
# retrograde peak the curve is small, and a share of it would reject the fits that show the fall best). Otherwise "no fit", and no curve, peak or
# extrapolation anywhere.
MIN_R2 = 0.9
MAX_SHIFT = 0.2


def usl(n: Any, lam: float, sigma: float, kappa: float) -> Any:
    """Throughput at N (scalar or array)."""
    n = np.asarray(n, dtype=float)
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def _amdahl(n: Any, lam: float, sigma: float) -> Any:
    """The USL with κ = 0 (Amdahl's law): the model kept when the data show no coherency cost."""
    return usl(n, lam, sigma, 0.0)


@dataclass(frozen=True)
class UslFit:
    """A USL fit, or the reason there is none.

    `ok` (reported, plotted, extrapolated from) needs numbers and `accepted`: a fit that does not explain the
    data keeps its numbers for diagnosis but no peak, retrograde point or extrapolation, and `reason` starts
    with "no fit:". Without numbers (too few points) `ok` is False as well.
    """

    lam: float | None
    sigma: float | None
    kappa: float | None
    r2: float | None
    rmse: float | None
    sigma_err: float | None
    kappa_err: float | None  # None when κ was not fitted (model "amdahl": κ = 0)
    predicted_peak_n: float | None  # N* = sqrt((1−σ)/κ); None when κ = 0 (no retrograde) or not accepted
    peak_throughput: float | None  # X(N*)
    retrograde_from_n: int | None  # first integer N with X(N) < X(N−1)
    n_points: int
    reason: str = ""  # why there is no fit ("no fit: ..."), or what to be careful about
    max_measured_n: float | None = None
    cov: tuple[tuple[float, ...], ...] | None = field(default=None, repr=False)  # of (λ, σ, κ)
    accepted: bool = True
    model: str | None = "usl"  # "usl", "amdahl" (κ's 95% interval included 0: κ fixed at 0), None: no numbers

    @property
    def ok(self) -> bool:
        return self.lam is not None and self.accepted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (summary.json `scaling.usl`); the covariance is left out."""
        out = asdict(self)
        out.pop("cov")
        out.pop("accepted")
        out["ok"] = self.ok
        return out


def _no_fit(n_points: int, reason: str) -> UslFit:
    return UslFit(None, None, None, None, None, None, None, None, None, None, n_points, reason, accepted=False,
                  model=None)


def _least_squares(func: Any, ns: np.ndarray, xs: np.ndarray, starts: list[tuple[float, ...]],
                   upper: list[float]) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The best of several starting points (the USL's surface has local minima); None when none converged."""
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(func, ns, xs, p0=p0, bounds=([0.0] * len(upper), upper), maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((func(ns, *popt) - xs) ** 2))
        if best is None or sse < best[0] - 1e-12 * max(1.0, sse):
            best = (sse, popt, pcov)
    return best


def _errors(pcov: np.ndarray) -> tuple[np.ndarray, list[float]]:
    cov = np.where(np.isfinite(pcov), pcov, np.inf)
    return cov, [math.sqrt(v) if math.isfinite(v) and v >= 0 else math.inf for v in np.diag(cov)]


def _widest_band(lam: float, sigma: float, kappa: float, cov: np.ndarray, ns: np.ndarray,
                 scale: float) -> tuple[float, float]:
    """The widest 95% band of the fitted curve over the measured N (delta method on the parameters' full
    covariance: σ and κ trade off against each other, and their separate intervals overstate the curve's), as
    a share of `scale` (the largest measured throughput), and the N where it is widest."""
    worst = (-1.0, float(ns.max()))
    for n in np.unique(ns):
        n = float(n)
        d = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0)
        grad = np.array([n / d, -lam * n * (n - 1.0) / d**2, -lam * n * n * (n - 1.0) / d**2])
        mask = grad != 0
        var = float(grad[mask] @ cov[np.ix_(mask, mask)] @ grad[mask]) if mask.any() else 0.0
        share = Z95 * math.sqrt(var) / scale if math.isfinite(var) and var >= 0 and scale > 0 else math.inf
        if share > worst[0]:
            worst = (share, n)
    return worst


def _rejection(r2: float, band: tuple[float, float]) -> str:
    """"no fit: ..." in one clause when the fit does not explain the data, else ""."""
    if r2 < MIN_R2:
        return f"no fit: r² {r2:.2f} is below {MIN_R2:g}, the curve does not follow the measurements"
    value, n = band
    if not value <= MAX_SHIFT:
        by = "an unbounded amount" if not math.isfinite(value) else f"±{value:.0%} of the largest measured throughput"
        return (f"no fit: the parameters' 95% intervals move the fitted throughput at N={n:g} by {by} "
                f"(at most ±{MAX_SHIFT:.0%} accepted)")
    return ""


def fit_usl(n: Sequence[float], throughput: Sequence[float], kappa_floor: float = 1e-9) -> UslFit:
    """Fit λ, σ, κ (σ in [0, 1], κ ≥ 0) by least squares; repeated N are fine (each is a sample).

    Fewer than three distinct N gives no fit and says so: with two points any σ/κ split fits exactly. κ is kept
    only when its 95% interval excludes 0; otherwise Amdahl's law (κ = 0) is fitted, so a linear target measured
    at 1-3 replicas gets σ ≈ 0, κ = 0 instead of an unbounded κ. A fit below MIN_R2, or with a parameter known
    too loosely (MAX_SHIFT), is returned with `accepted` False and "no fit: ..." as its reason.
    """
    ns = np.asarray(n, dtype=float)
    xs = np.asarray(throughput, dtype=float)
    if ns.shape != xs.shape:
        raise ValueError(f"n and throughput differ in length ({ns.size} vs {xs.size})")
    keep = np.isfinite(ns) & np.isfinite(xs) & (ns > 0) & (xs >= 0)
    ns, xs = ns[keep], xs[keep]
    distinct = np.unique(ns).size
    if distinct < MIN_POINTS:
        counts = ", ".join(f"{v:g}" for v in np.unique(ns)) or "none"
        return _no_fit(int(ns.size), f"no fit: {distinct} distinct count(s) measured ({counts}), the USL needs "
                                     f"{MIN_POINTS} to separate contention from coherency")
    if not np.any(xs > 0):
        return _no_fit(int(ns.size), "no fit: every measured throughput is 0")

    lam0 = float(np.max(xs[ns == ns.min()] / ns.min()))
    full = _least_squares(usl, ns, xs, [(lam0, 0.01, 1e-4), (lam0, 0.1, 0.01), (lam0, 0.5, 0.1), (lam0, 0.0, 0.0)],
                          [np.inf, 1.0, np.inf])
    amdahl = _least_squares(_amdahl, ns, xs, [(lam0, 0.01), (lam0, 0.5), (lam0, 0.0)], [np.inf, 1.0])
    model = "usl"
    if full is not None:
        sse, popt, pcov = full
        cov, errs = _errors(pcov)
        lam, sigma, kappa = (float(v) for v in popt)
        kappa_needed = kappa >= kappa_floor and math.isfinite(errs[2]) and kappa - Z95 * errs[2] > 0
    if amdahl is not None and (full is None or not kappa_needed):
        sse, popt2, pcov2 = amdahl
        cov2, errs2 = _errors(pcov2)
        lam, sigma, kappa, model = float(popt2[0]), float(popt2[1]), 0.0, "amdahl"
        cov = np.zeros((3, 3))
        cov[:2, :2] = cov2
        errs = [errs2[0], errs2[1], None]  # type: ignore[list-item]
    elif full is None:
        return _no_fit(int(ns.size), "no fit: the least-squares fit did not converge")
    return _described(ns, xs, sse, lam, sigma, kappa, cov, errs, model)


def _described(ns: np.ndarray, xs: np.ndarray, sse: float, lam: float, sigma: float, kappa: float,
               cov: np.ndarray, errs: list[Any], model: str) -> UslFit:
    """The fit's quality, its peak when κ > 0, and whether it is accepted (see MIN_R2, MAX_SHIFT)."""
    sst = float(np.sum((xs - xs.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse <= 1e-12 else 0.0)
    top = float(ns.max())
    rejected = _rejection(r2, _widest_band(lam, sigma, kappa, cov, ns, float(xs.max())))
    peak_n = peak_x = retro = None
    if kappa > 0 and sigma < 1.0 and not rejected:
        peak_n = math.sqrt((1.0 - sigma) / kappa)
        peak_x = float(usl(peak_n, lam, sigma, kappa))
        k = max(2, int(math.floor(peak_n)))
        while float(usl(k, lam, sigma, kappa)) >= float(usl(k - 1, lam, sigma, kappa)):
            k += 1
        retro = k
    reason = rejected
    if peak_n is not None and peak_n > 2 * top:
        reason = f"the peak (N≈{peak_n:.0f}) is far beyond the largest measured N ({top:g}): an extrapolation"
    return UslFit(
        lam=lam,
        sigma=sigma,
        kappa=kappa,
        r2=r2,
        rmse=math.sqrt(sse / ns.size),
        sigma_err=errs[1],
        kappa_err=errs[2],
        predicted_peak_n=peak_n,
        peak_throughput=peak_x,
        retrograde_from_n=retro,
        n_points=int(ns.size),
        reason=reason,
        max_measured_n=top,
        cov=tuple(tuple(float(v) for v in row) for row in cov),
        accepted=not rejected,
        model=model,
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


def fit_usl_steps(steps: "pd.DataFrame", slo: "Slo", by: str = "replicas") -> UslFit:
    """Fit goodput against `by` (replicas, or users for one pod) from steps.csv rows.

    Only usable windows that meet the SLO (nightcap.analysis.slo) count; the
    windows of one level are averaged (the max of noisy windows is biased up), and the best level at each
    count is its saturation throughput, not the ramp steps below it. Filter the frame by stage first.
    """
    from nightcap.analysis.saturation import within_slo_mask

    if steps.empty:
        return fit_usl([], [])
    frame = steps.loc[within_slo_mask(steps, slo)]
    levels = frame.groupby([by, "users"])["rps"].mean() if by != "users" else frame.groupby(by)["rps"].mean()
    best = levels.groupby(level=0).max() if by != "users" else levels
    return fit_usl(best.index.to_numpy(dtype=float), best.to_numpy(dtype=float))
