"""Statistics over seeds for the reports: differences with their 95% confidence intervals,
t-tests (paired by seed when the seeds pair the cells, Welch's otherwise), Holm's step-down
correction across a table's comparisons, and the number of seeds a t-test needs to resolve a
gap at a given power. Pure functions of per-seed values (scipy.stats does the distributions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: mean difference (a - b), its confidence interval, the two-sided
    p-value and the test that gave it ("paired t" over n pairs or "Welch t")."""
    delta: float
    low: float
    high: float
    p: float
    test: str
    n: int
    sd: float  # spread the power calculation uses: sd of the paired differences, else pooled


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[~np.isnan(array)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t confidence interval; (mean, nan, nan) with fewer than 2 values."""
    x = _clean(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def compare(a: dict, b: dict, paired: bool = True, confidence: float = 0.95) -> Comparison | None:
    """``a`` and ``b`` map seed -> value. Paired t-test over the seeds both have when ``paired``
    (the seeds pair the cells: same data order and scenes) and at least 2 are shared; Welch's
    t-test otherwise. None when a side has fewer than 2 values (nothing can be assessed)."""
    common = sorted(set(a) & set(b))
    if paired and len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common], dtype=float)
        mean, low, high = mean_ci(d, confidence)
        sd = float(d.std(ddof=1))
        if sd == 0:  # identical differences on every seed: a certain shift (or none at all)
            p = 1.0 if mean == 0 else 0.0
        else:
            p = float(stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue)
        return Comparison(mean, low, high, p, f"paired t, {len(common)} seeds", len(common), sd)
    xa, xb = _clean(a.values()), _clean(b.values())
    if len(xa) < 2 or len(xb) < 2:
        return None
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    delta = float(xa.mean() - xb.mean())
    pooled = math.sqrt((xa.var(ddof=1) + xb.var(ddof=1)) / 2)
    if va + vb == 0:
        return Comparison(delta, delta, delta, 1.0 if delta == 0 else 0.0, "Welch t",
                          min(len(xa), len(xb)), 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)
    return Comparison(delta, delta - half, delta + half, p, "Welch t", min(len(xa), len(xb)),
                      pooled)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order; NaN stays NaN.
    Sorted ascending, the i-th (0-based) of m is multiplied by m - i, then made monotone by a
    running maximum and capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out.tolist()


def t_test_power(effect: float, n: int, paired: bool = True, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test at standardised effect ``effect`` (difference / sd) with
    ``n`` seeds: paired (one-sample on differences, df n-1) or two samples of n each (df
    2n-2), from the noncentral t distribution."""
    if n < 2:
        return math.nan
    if paired:
        df, nc = n - 1, effect * math.sqrt(n)
    else:
        df, nc = 2 * n - 2, effect * math.sqrt(n / 2)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_for_power(delta: float, sd: float, paired: bool = True, power: float = 0.8,
                    alpha: float = ALPHA, max_seeds: int = 1000) -> int | None:
    """Smallest number of seeds at which the t-test detects ``delta`` given spread ``sd`` with
    ``power``; None when the spread is zero or unknown, or more than ``max_seeds`` would do."""
    if not (sd > 0) or not math.isfinite(delta) or delta == 0:
        return None
    effect = abs(delta) / sd
    for n in range(2, max_seeds + 1):
        if t_test_power(effect, n, paired, alpha) >= power:
            return n
    return None


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def fmt_ci(low: float, high: float, digits: int = 1) -> str:
    if math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"
