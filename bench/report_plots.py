"""PNG plots for suite reports (matplotlib / seaborn, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


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


def plot_pareto(done: pd.DataFrame, group: list[str], path: Path) -> Path | None:
    varying = _varying(done, group)
    stats = done.groupby(group, sort=False).agg(
        miou=("clean/mIoU", "mean"), miou_std=("clean/mIoU", "std"), gmacs=("gmacs_full", "median"))
    stats = stats.dropna(subset=["miou", "gmacs"])
    if stats.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = list(zip(stats["gmacs"], stats["miou"]))
    front = pareto_front(points)
    palette = sns.color_palette("tab10", len(stats))
    for (key, row), color in zip(stats.iterrows(), palette):
        name = _name(key, group, varying)
        ax.errorbar(row["gmacs"], row["miou"], yerr=np.nan_to_num(row["miou_std"]), fmt="o",
                    color=color, capsize=3, label=name)
        ax.annotate(name, (row["gmacs"], row["miou"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7, color=color)
    fx = [points[i][0] for i in front]
    fy = [points[i][1] for i in front]
    ax.step(fx, fy, where="post", color="0.3", linestyle="--", linewidth=1, label="Pareto front")
    ax.set_xlabel("GFLOPs as fvcore counts them (1 multiply-add = 1 FLOP; scan counted), "
                  "batch 1", fontsize=8)
    ax.set_ylabel("mIoU (%), clean test split")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
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


def plot_curves(done: pd.DataFrame, group: list[str], path: Path) -> Path | None:
    varying = _varying(done, group)
    have = done[done["history"].map(lambda h: isinstance(h, dict) and bool(h.get("loss")))]
    if have.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = sns.color_palette("tab10", have.groupby(group, sort=False).ngroups)
    for (key, rows), color in zip(have.groupby(group, sort=False), palette):
        curves = [pd.Series(h["loss"], index=h["iteration"]) for h in rows["history"]]
        merged = pd.concat(curves, axis=1)
        mean = merged.mean(axis=1)
        ax.plot(mean.index, mean.values, color=color, label=_name(key, group, varying))
        if merged.shape[1] > 1:
            ax.fill_between(mean.index, merged.min(axis=1), merged.max(axis=1), color=color,
                            alpha=0.15)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (mean over seeds; band = min–max)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
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
