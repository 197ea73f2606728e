"""PNG plots for suite reports (matplotlib / seaborn, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: reports are drawn to files, with no display
    (a backend chosen when plotting, not when this module is imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _name(key: tuple, group: list[str], varying: list[str]) -> str:
    parts = dict(zip(group, key))
    return "/".join(str(parts[k]) for k in varying) or str(parts.get("fusion"))


def _varying(done: pd.DataFrame, group: list[str]) -> list[str]:
    return [k for k in group if done[k].nunique() > 1]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower cost and higher score), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _cost_axis(ax, values, label: str) -> None:
    """Log scale only when the costs span more than a decade (a log axis over a narrower range
    shows one or two ticks); plain-number tick labels either way."""
    values = [v for v in values if v > 0]
    if values and max(values) / min(values) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    else:
        ax.xaxis.set_major_locator(mticker.MaxNLocator(6))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(label, fontsize=8)


def _label_points(ax, xs, ys, names, colors) -> None:
    """Point labels pushed apart from each other and from the markers (adjustText)."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, name, fontsize=7, color=color)
             for x, y, name, color in zip(xs, ys, names, colors)]
    adjust_text(texts, x=list(xs), y=list(ys), ax=ax, expand=(1.3, 1.6),
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})


def plot_pareto(done: pd.DataFrame, group: list[str], path: Path) -> Path | None:
    """mIoU (mean, 95% CI over seeds) against GMACs (full convention) and, when measured,
    batch-1 latency, each with its Pareto front."""
    from bench.reporting.stats import mean_ci

    varying = _varying(done, group)
    rows = []
    for key, g in done.groupby(group, sort=False):
        mean, low, _ = mean_ci(g["clean/mIoU"])
        rows.append({"key": key, "miou": mean, "ci": mean - low if low == low else 0.0,
                     "gmacs": g["gmacs_full"].median(),
                     "latency": g["latency_ms_median"].median()
                     if "latency_ms_median" in g else np.nan})
    stats = pd.DataFrame(rows).dropna(subset=["miou", "gmacs"])
    if stats.empty:
        return None
    axes_spec = [("gmacs", "GMACs, full convention (fvcore: 1 multiply-add = 1 FLOP; "
                           "scan counted), batch 1")]
    if stats["latency"].notna().any():
        axes_spec.append(("latency", "latency (ms), batch 1, median of the quietest window"))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.5 * len(axes_spec), 4.8),
                             squeeze=False, sharey=True)
    palette = sns.color_palette("tab10", len(stats))
    names = [_name(k, group, varying) for k in stats["key"]]
    for ax, (col, label) in zip(axes[0], axes_spec):
        have = stats[col].notna().to_numpy()
        sub = stats[have]
        colors = [c for c, h in zip(palette, have) if h]
        for (_, row), color in zip(sub.iterrows(), colors):
            ax.errorbar(row[col], row["miou"], yerr=row["ci"], fmt="o", color=color,
                        capsize=3, markersize=5)
        points = list(zip(sub[col], sub["miou"]))
        front = pareto_front(points)
        ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                color="0.3", linestyle="--", linewidth=1, label="Pareto front")
        _cost_axis(ax, sub[col].tolist(), label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        _label_points(ax, sub[col], sub["miou"], [n for n, h in zip(names, have) if h], colors)
    axes[0][0].set_ylabel("mIoU (%), clean test split\nmean over seeds, bars: 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_class(table: pd.DataFrame, group: list[str], path: Path,
                   highlight: dict[str, list[int]] | None = None) -> Path | None:
    """Heatmap of per-class IoU; ``highlight`` frames named groups of class columns (the
    report's ``class_groups``, e.g. SynRGBX's XOR pair)."""
    varying = _varying(table, group)
    index = ["/".join(str(r[k]) for k in varying) or str(r["fusion"])
             for _, r in table.iterrows()]
    values = table.drop(columns=group)
    values.index = index
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * values.shape[1], 1.2 + 0.35 * len(values)))
    sns.heatmap(values.astype(float), annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100,
                cbar_kws={"label": "IoU (%)"}, ax=ax, annot_kws={"fontsize": 7})
    for name, columns in (highlight or {}).items():
        for column in columns:
            if 0 <= column < values.shape[1]:
                ax.add_patch(plt.Rectangle((column, 0), 1, len(values), fill=False,
                                           edgecolor="red", linewidth=1.5))
        if columns:
            ax.text(np.mean(columns) + 0.5, -0.15, name, ha="center", va="bottom",
                    fontsize=8, color="red")
    ax.set_xlabel("class")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loss_composition(row: pd.Series) -> str:
    """What a cell's training loss sums: its recorded loss terms, else (stores written before
    the terms were recorded) its model, whose loss those terms are."""
    terms = (row["history"] or {}).get("loss_terms")
    if terms is None:
        return f"loss of {row['model']}"
    return "loss = " + " + ".join(t.removeprefix("loss_") for t in terms) if terms else \
        "single-term loss"


def plot_curves(done: pd.DataFrame, group: list[str], path: Path) -> Path | None:
    """Training loss per cell group (mean over seeds, band min–max), one panel per loss
    composition: losses that sum different terms are not on one scale."""
    varying = _varying(done, group)
    have = done[done["history"].map(lambda h: isinstance(h, dict) and bool(h.get("loss")))]
    if have.empty:
        return None
    have = have.assign(composition=have.apply(loss_composition, axis=1))
    panels = list(dict.fromkeys(have["composition"]))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    palette = sns.color_palette("tab10", have.groupby(group, sort=False).ngroups)
    colors = dict(zip([k for k, _ in have.groupby(group, sort=False)], palette))
    for ax, composition in zip(axes[0], panels):
        for key, rows in have[have["composition"] == composition].groupby(group, sort=False):
            curves = [pd.Series(h["loss"], index=h["iteration"]) for h in rows["history"]]
            merged = pd.concat(curves, axis=1)
            mean = merged.mean(axis=1)
            # a curve of one or a few logged points still shows (markers)
            ax.plot(mean.index, mean.values, color=colors[key], marker="o",
                    markersize=3 if len(mean) > 3 else 6, label=_name(key, group, varying))
            if merged.shape[1] > 1:
                ax.fill_between(mean.index, merged.min(axis=1), merged.max(axis=1),
                                color=colors[key], alpha=0.15)
        ax.set_title(composition, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel("training loss (mean over seeds; band = min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_corruptions(done: pd.DataFrame, group: list[str], corruptions: list[str],
                     path: Path) -> Path | None:
    varying = _varying(done, group)
    present = [c for c in corruptions if f"{c}/mIoU" in done.columns]
    rows = []
    for key, g in done.groupby(group, sort=False):
        for c in present:
            for value in g[f"{c}/mIoU"].dropna():
                rows.append({"cell": _name(key, group, varying), "test set": c, "mIoU": value})
    if not rows:
        return None
    data = pd.DataFrame(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * data["cell"].nunique() + 2), 4.5))
    sns.barplot(data=data, x="cell", y="mIoU", hue="test set", errorbar="sd", ax=ax)
    ax.set_ylabel("mIoU (%), mean ± std over seeds")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(present))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
