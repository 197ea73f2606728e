"""The report's summary in words, with its statistics: the best cell with its cost, the cells
tied with it, how many seeds the closest gap needs, the Pareto-efficient cells, the cheapest
cell within the best's confidence interval, cells at chance level, the class-group ranking;
and the same comparisons on every robustness set (bench/reporting/suite_report.py lays them out).
"""
from __future__ import annotations

import math

import pandas as pd

from bench.reporting import stats
from bench.reporting.comparisons import (
    GROUP,
    against_baseline,
    against_best,
    closest_gap,
    pareto_groups,
    power_line,
    single_class_cells,
    tied,
)
from bench.reporting.markdown import significant as _num

NO_SIGNIFICANCE = ("Significance cannot be assessed: that needs at least 2 seeds per cell "
                   "group (this run has {n}); the differences above are single measurements.")


def short_name(key: tuple, varying: list[str]) -> str:
    parts = dict(zip(GROUP, key))
    return "/".join(str(parts[k]) for k in varying) or str(parts["fusion"])


def class_group_columns(done: pd.DataFrame, class_groups: dict[str, list[int]],
                        corruption: str = "clean") -> dict[str, pd.Series]:
    """Mean IoU over each named group of classes, per cell."""
    out = {}
    iou_cols = [c for c in done.columns if c.startswith(f"{corruption}/IoU/")]
    for name, indices in class_groups.items():
        cols = [iou_cols[i] for i in indices if i < len(iou_cols)]
        if cols:
            out[name] = done[cols].mean(axis=1, skipna=True)
    return out


def _cost(done: pd.DataFrame) -> pd.DataFrame:
    """Per group: median GMACs (both conventions), parameters and latency over seeds."""
    cols = [c for c in ("gmacs_published", "gmacs_full", "params_m", "latency_ms_median")
            if c in done]
    if not cols:
        return pd.DataFrame()
    return done.groupby(GROUP, sort=False)[cols].median()


def _cost_text(cost: pd.DataFrame, key: tuple) -> str:
    if key not in cost.index:
        return ""
    c = cost.loc[key]
    parts = []
    if "gmacs_published" in c and "gmacs_full" in c:
        parts.append(f"{_num(c['gmacs_published'])} GMACs published / "
                     f"{_num(c['gmacs_full'])} full")
    if "params_m" in c:
        parts.append(f"{_num(c['params_m'])} M parameters")
    if "latency_ms_median" in c and c["latency_ms_median"] == c["latency_ms_median"]:
        parts.append(f"{_num(c['latency_ms_median'], 2)} ms latency")
    return ", ".join(parts)


def summary_lines(done: pd.DataFrame, spec) -> list[str]:
    """What the table says, in words (see the module docstring)."""
    metrics = [m for m in spec.report.metrics if f"clean/{m}" in done.columns]
    if not metrics:
        return []
    metric = metrics[0]
    column = f"clean/{metric}"
    varying = [k for k in GROUP if done[k].nunique() > 1]
    name = lambda key: short_name(key, varying)  # noqa: E731
    grouped = done.groupby(GROUP, sort=False)[column]
    means, counts = grouped.mean(), grouped.count()
    cost = _cost(done)
    lines = []
    vs_base = against_baseline(done, column, spec.report.baseline)
    best_of, vs_best = against_best(done, column)
    for dataset, best in best_of.items():
        values = done.loc[grouped.groups[best], column]
        mean, low, high = stats.mean_ci(values)
        ci = (f" ± {values.std(ddof=1):.1f} (95% CI {low:.1f}–{high:.1f}, {counts[best]} seeds)"
              if low == low else f" ({counts[best]} seed)")
        where = f" on {dataset}" if done["dataset"].nunique() > 1 else ""
        text = (f"- Best on the clean test split{where}: **{name(best)}**, {metric} "
                f"{mean:.1f}{ci}")
        cost_text = _cost_text(cost, best)
        text += f", at {cost_text}" if cost_text else ""
        base = vs_base.get(best)
        if base is not None:
            text += f"; {base.result.delta:+.1f} against {name(base.other)}" if base.result \
                else f"; {means[best] - means[base.other]:+.1f} against {name(base.other)}"
            if base.result:
                text += (f" (Δ 95% CI {stats.fmt_ci(base.result.low, base.result.high)}, "
                         f"p (Holm) {stats.fmt_p(base.p_holm)}, {base.result.test})")
        lines.append(text + ".")
        others = [k for k in means.index if k[GROUP.index("dataset")] == dataset and k != best]
        if counts[best] < 2 or not others or all(vs_best.get(k) is None or
                                                 vs_best[k].result is None for k in others):
            lines.append("- " + NO_SIGNIFICANCE.format(n=int(counts[counts > 0].min())))
        else:
            ties = [k for k in others if tied(vs_best.get(k))]
            lines.append(
                "- Tied with the best (not significantly worse: t-test over seeds, "
                "Holm-corrected across the comparisons with the best, α = 0.05): "
                + (", ".join(f"{name(k)} ({vs_best[k].result.delta:+.1f}, p "
                             f"{stats.fmt_p(vs_best[k].p_holm)})" for k in ties)
                   if ties else "none") + ".")
            gap = power_line(closest_gap({k: vs_best[k] for k in others if k in vs_best}),
                             name, metric)
            if gap:
                lines.append("- " + gap)
        lines += _cost_lines(done, column, best, dataset, cost, name)
    lines += chance_lines(done, name)
    for group, series in class_group_columns(done, spec.report.class_groups).items():
        ranked = series.groupby([done[k] for k in GROUP], sort=False).mean().sort_values(
            ascending=False)
        lines.append(f"- {group} IoU (clean, mean over seeds), best first: " + ", ".join(
            f"{name(k)} {v:.1f}" for k, v in ranked.items()) + ".")
    return lines


def _cost_lines(done, column, best, dataset, cost, name) -> list[str]:
    """Pareto-efficient groups (accuracy vs GMACs, vs latency) and the cheapest group whose
    mean lies within the best's 95% confidence interval."""
    if cost.empty:
        return []
    in_dataset = [k for k in cost.index if k[GROUP.index("dataset")] == dataset]
    means = done.groupby(GROUP, sort=False)[column].mean()
    lines = []
    fronts = []
    for col, label in (("gmacs_full", "GMACs (full)"), ("latency_ms_median", "latency")):
        if col in cost:
            front = pareto_groups({k: (cost.loc[k, col], means[k]) for k in in_dataset})
            if front:
                fronts.append(f"vs {label}: " + ", ".join(name(k) for k in front))
    if fronts:
        lines.append("- Pareto-efficient (no other cell both cheaper and more accurate), "
                     "cheapest first, " + "; ".join(fronts) + ".")
    _, low, high = stats.mean_ci(done.loc[done.groupby(GROUP, sort=False).groups[best], column])
    if low == low and "gmacs_full" in cost:
        within = [k for k in in_dataset if low <= means[k] <= high]
        cheapest = min(within, key=lambda k: (cost.loc[k, "gmacs_full"],
                                              cost.loc[k].get("latency_ms_median", 0)))
        if cheapest == best:
            lines.append(f"- Cheapest cell whose mean lies within the best's 95% CI "
                         f"({low:.1f}–{high:.1f}): the best itself.")
        else:
            ratio = cost.loc[cheapest, "gmacs_full"] / cost.loc[best, "gmacs_full"]
            lines.append(f"- Cheapest cell whose mean lies within the best's 95% CI "
                         f"({low:.1f}–{high:.1f}): **{name(cheapest)}**, {means[cheapest]:.1f} "
                         f"at {_cost_text(cost, cheapest)} ({ratio:.2f}× the best's GMACs).")
    return lines


def _class_name(row: pd.Series, index: int, corruption: str = "clean") -> str:
    names = [c.split("/", 2)[2] for c in row.index if c.startswith(f"{corruption}/IoU/")]
    return names[index] if index < len(names) else f"class {index}"


def chance_lines(done: pd.DataFrame, name) -> list[str]:
    """Cells whose clean predictions are all one class: their score is the chance level of
    always predicting it, not a measurement of the fusion."""
    out = []
    for hit in single_class_cells(done):
        row = hit["row"]
        key = tuple(row[k] for k in GROUP)
        out.append(f"- ⚠ At chance level: {name(key)} seed {row['seed']} predicts only "
                   f"*{_class_name(row, hit['class_index'])}* ({hit['classes']} classes) on the "
                   f"clean test split, so its {row.get('clean/mIoU', math.nan):.1f} mIoU is "
                   f"that of a constant prediction; suspect a collapsed training run.")
    return out


def robustness_tables(done: pd.DataFrame, spec, present: list[str]) -> tuple[pd.DataFrame | None,
                                                                              list[str]]:
    """Δ against the baseline on every robustness set ("Δ [95% CI], p (Holm)", Holm across
    the whole table), and per set the best group and those tied with it."""
    varying = [k for k in GROUP if done[k].nunique() > 1]
    name = lambda key: short_name(key, varying)  # noqa: E731
    baseline = spec.report.baseline
    rows: dict[tuple, dict] = {}
    comparisons = []
    for c in present:
        for key, r in against_baseline(done, f"{c}/mIoU", baseline).items():
            comparisons.append((c, key, r))
    adjusted = stats.holm([r.result.p if r.result else math.nan for _, _, r in comparisons])
    for (c, key, r), p in zip(comparisons, adjusted):
        row = rows.setdefault(key, dict(zip(GROUP, key)))
        row[f"{c} Δ"] = f"{r.result.delta:+.1f} {stats.fmt_ci(r.result.low, r.result.high)}" \
            if r.result else "–"
        row[f"{c} p (Holm)"] = stats.fmt_p(p) if r.result else "–"
    lines = []
    for c in present:
        best_of, vs_best = against_best(done, f"{c}/mIoU")
        for dataset, best in best_of.items():
            ties = [k for k, r in vs_best.items() if k[GROUP.index("dataset")] == dataset and
                    tied(r)]
            assessed = any(r.result is not None for r in vs_best.values())
            lines.append(f"- {c}: best **{name(best)}**; " + (
                ("tied with it: " + (", ".join(name(k) for k in ties) or "none"))
                if assessed else "significance cannot be assessed (fewer than 2 seeds)") + ".")
    table = pd.DataFrame(list(rows.values())) if rows else None
    return table, lines
