"""Seed statistics on a report's results frame (one row per cell): each cell group against the
suite's baseline (Δ with its 95% CI, paired or Welch t-test, Holm across the table), the best
group and those not significantly worse than it, the seeds a closer look would need, the
Pareto-efficient groups, and cells whose predictions collapsed to one class. The tests
themselves are bench/reporting/stats.py; this module only picks what is compared with what.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.reporting import stats

GROUP = ["model", "size", "fusion", "dataset"]


def baseline_keys(group: tuple, baseline: dict | None, index) -> list[tuple]:
    """The groups ``group`` is compared with: those in ``index`` equal to ``group`` except on the
    keys the baseline names, where they take the baseline's value (or one of its values: a list
    such as ``{fusion: [rgb_only, x_only]}`` compares with the best of them)."""
    if not baseline:
        return []
    named = {k: (v if isinstance(v, list) else [v]) for k, v in baseline.items() if k in GROUP}
    out = []
    for candidate in index:
        parts = dict(zip(GROUP, candidate))
        own = dict(zip(GROUP, group))
        if all(parts[k] in named[k] if k in named else parts[k] == own[k] for k in GROUP):
            out.append(candidate)
    return out


def describe_baseline(baseline: dict | None) -> str:
    """``{fusion: [rgb_only, x_only]}`` -> "the better of fusion rgb_only / x_only"."""
    if not baseline:
        return ""
    parts = []
    for key, value in baseline.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"{key} " + " / ".join(str(v) for v in values))
    several = any(isinstance(v, list) and len(v) > 1 for v in baseline.values())
    return ("the better of " if several else "") + ", ".join(parts)


def seed_values(done: pd.DataFrame, column: str) -> dict[tuple, dict]:
    """group -> {seed: value} of ``column`` (NaN dropped)."""
    out: dict[tuple, dict] = {}
    if column not in done:
        return out
    for key, rows in done.groupby(GROUP, sort=False):
        values = {int(s): float(v) for s, v in zip(rows["seed"], rows[column]) if v == v}
        out[key] = values
    return out


def _batch_sizes(done: pd.DataFrame) -> dict[tuple, set]:
    if "batch_size" not in done:
        return {}
    return {k: set(rows["batch_size"].dropna()) for k, rows in done.groupby(GROUP, sort=False)}


def paired(a: tuple, b: tuple, batch: dict) -> bool:
    """The same seed gives two groups the same data: same scenes (the dataset is part of the
    group and baselines keep it) and the same batch order (a function of the seed, the
    dataset's size and the batch size; bench/run/train.py EpochBatchSampler)."""
    return a[GROUP.index("dataset")] == b[GROUP.index("dataset")] and \
        batch.get(a, {None}) == batch.get(b, {None})


@dataclass
class Row:
    """One comparison of a table: ``group`` against ``other``."""
    group: tuple
    other: tuple
    result: stats.Comparison | None
    p_holm: float = math.nan


def _holm(rows: list[Row]) -> list[Row]:
    adjusted = stats.holm([r.result.p if r.result else math.nan for r in rows])
    for row, p in zip(rows, adjusted):
        row.p_holm = p
    return rows


def against_baseline(done: pd.DataFrame, column: str, baseline: dict | None) -> dict[tuple, Row]:
    """Each non-baseline group against its best baseline group (by mean), Holm-corrected
    across all of them."""
    values = seed_values(done, column)
    means = {k: np.mean(list(v.values())) if v else math.nan for k, v in values.items()}
    batch = _batch_sizes(done)
    rows = []
    for key in values:
        bases = baseline_keys(key, baseline, list(values))
        if not bases or key in bases:
            continue
        base = max(bases, key=lambda k: means[k] if means[k] == means[k] else -math.inf)
        rows.append(Row(key, base, stats.compare(values[key], values[base],
                                                 paired(key, base, batch))))
    return {r.group: r for r in _holm(rows)}


def against_best(done: pd.DataFrame, column: str) -> tuple[dict[tuple, tuple], dict[tuple, Row]]:
    """Per dataset: the best group by mean and every other group compared with it (other minus
    best), Holm-corrected across the dataset's comparisons. Returns ({dataset: best group},
    {group: Row})."""
    values = seed_values(done, column)
    batch = _batch_sizes(done)
    best, rows = {}, {}
    by_dataset: dict = {}
    for key, v in values.items():
        if v:
            by_dataset.setdefault(key[GROUP.index("dataset")], []).append(key)
    for dataset, keys in by_dataset.items():
        top = max(keys, key=lambda k: np.mean(list(values[k].values())))
        best[dataset] = top
        compared = [Row(k, top, stats.compare(values[k], values[top], paired(k, top, batch)))
                    for k in keys if k != top]
        rows.update({r.group: r for r in _holm(compared)})
    return best, rows


def tied(row: Row | None, alpha: float = stats.ALPHA) -> bool:
    """Not significantly worse than the best (Holm-adjusted p at or above alpha)."""
    return row is not None and row.result is not None and not row.p_holm < alpha


def closest_gap(rows: dict[tuple, Row]) -> Row | None:
    """The comparison with the best whose mean difference is smallest."""
    assessed = [r for r in rows.values() if r.result is not None]
    return min(assessed, key=lambda r: abs(r.result.delta)) if assessed else None


def power_line(row: Row | None, name, metric: str) -> str | None:
    """How many seeds a t-test would need to resolve ``row``'s gap at 80% power."""
    if row is None or row.result is None:
        return None
    r = row.result
    is_paired = r.test.startswith("paired")
    n = stats.seeds_for_power(r.delta, r.sd, paired=is_paired)
    spread = ("sd of the per-seed differences" if is_paired else "pooled sd") + f" {r.sd:.2f}"
    head = (f"Closest gap: {name(row.group)} {r.delta:+.2f} {metric} behind {name(row.other)} "
            f"({spread}); ")
    if n is None:
        return head + ("no spread to estimate it from." if not r.sd > 0 else
                       "more than 1000 seeds would be needed to resolve it at 80% power.")
    return head + (f"a {'paired ' if is_paired else ''}t-test would resolve it at 80% power "
                   f"(α = 0.05) with {n} seeds" + (" per cell" if not is_paired else "")
                   + f" (this run: {r.n}).")


def pareto_groups(points: dict[tuple, tuple[float, float]]) -> list[tuple]:
    """Groups no other group beats on both cost (lower) and score (higher), cheapest first."""
    items = [(k, c, s) for k, (c, s) in points.items() if c == c and s == s]
    items.sort(key=lambda t: (t[1], -t[2]))
    front, best = [], -math.inf
    for key, _, score in items:
        if score > best:
            front.append(key)
            best = score
    return front


def single_class_cells(done: pd.DataFrame, corruption: str = "clean") -> list[dict]:
    """Cells whose predictions on ``corruption`` fall in one class: the confusion matrix has
    one non-empty column. Such a cell scores the chance level of always predicting that class
    (its IoU is the class's share of pixels, every other class 0), whatever it learnt."""
    out = []
    column = f"{corruption}/confusion"
    if column not in done:
        return out
    for index, row in done.iterrows():
        matrix = row.get(column)
        if not isinstance(matrix, list) or not matrix:
            continue
        m = np.asarray(matrix, dtype=float)
        predicted = np.flatnonzero(m.sum(axis=0) > 0)
        if len(predicted) == 1:
            out.append({"index": index, "row": row, "class_index": int(predicted[0]),
                        "classes": m.shape[0]})
    return out
