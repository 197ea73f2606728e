"""Reports generated from the store, never edited by hand: ``reports/<suite>/README.md`` plus
PNG plots. Tables are pandas frames rendered to markdown: mean ± std over seeds, Δ against the
suite's baseline cells, robustness sets, per-class IoU, FLOPs / params / latency with their
conventions, and published figures beside measured ones.
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report_plots import (plot_corruptions, plot_curves, plot_pareto, plot_per_class)
from bench.store import CellStore
from bench.suite import Suite

GROUP = ["model", "size", "fusion", "dataset"]

CONVENTIONS = (
    "**Conventions.** FLOPs are counted by fvcore, which counts one multiply-add as one FLOP, so "
    "they are given as GMACs. *published*: the seed repositories' counting (the selective scan "
    "and element-wise ops are not counted); *full*: the scan counted as 9·B·L·D·N + B·D·L "
    "(+ B·D·L with a z gate), cross-scan / cross-merge as data movement (0). Latency: batch 1, "
    "after warm-up, the median of the quietest window of timed calls (see the Profile section), "
    "with its interquartile range; threads and precision as listed. Metrics are percentages "
    "from one confusion matrix over the whole split (mmseg's definitions); mean ± sample std "
    "over seeds.")


def _dataset_tag(ds: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(ds.items()) if k not in ("name", "root"))
    return ds["name"] + (f"[{opts}]" if opts else "")


def results_frame(store: CellStore) -> pd.DataFrame:
    """One row per cell (its completed trial, or its latest attempt)."""
    rows = []
    for t in store.latest_results():
        cfg = t.user_attrs["config"]
        row = {"cell": cfg["id"], "label": cfg["label"], "state": t.state.name,
               "model": cfg["model"], "size": cfg["size"], "fusion": cfg["fusion"],
               "dataset": _dataset_tag(cfg["dataset"]), "seed": cfg["seed"],
               "error": t.user_attrs.get("error"), "attempts": None}
        metrics = t.user_attrs.get("metrics") or {}
        for corruption, values in metrics.items():
            for key in ("mIoU", "mF1", "aAcc", "mAcc", "kappa", "oIoU", "P@0.5", "P@0.9"):
                if values and values.get(key) is not None:
                    row[f"{corruption}/{key}"] = values[key]
            for cls, iou in (values.get("IoU") or {}).items():
                row[f"{corruption}/IoU/{cls}"] = iou
            row[f"{corruption}/protocol"] = values.get("protocol")
        profile = t.user_attrs.get("profile") or {}
        for key in ("params_m", "gmacs_published", "gmacs_full", "latency_ms_median",
                    "latency_ms_iqr", "latency_ms_p90", "latency_samples", "peak_mem_mb_infer"):
            if key in profile:
                row[key] = profile[key]
        env = t.user_attrs.get("env") or {}
        row["threads"] = (profile.get("env") or {}).get("threads", env.get("threads"))
        timing = t.user_attrs.get("timing") or {}
        for key in ("train_s", "eval_s", "profile_s"):
            row[key] = timing.get(key)
        row["history"] = t.user_attrs.get("history")
        row["env"] = env
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series, digits: int = 1) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _fmt(value, digits: int = 2) -> str:
    """``digits`` significant digits, without switching to exponent notation."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if not isinstance(value, (float, np.floating, int)):
        return str(value)
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


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


def _delta(value: float, group: tuple, means: pd.Series, baseline: dict | None) -> str | None:
    """``value`` minus the best baseline mean; "(baseline)" for a baseline group itself."""
    keys = baseline_keys(group, baseline, means.index)
    if not keys:
        return None
    if group in keys:
        return "(baseline)"
    return f"{value - max(means.loc[k] for k in keys):+.1f}"


def _class_group_columns(done: pd.DataFrame, class_groups: dict[str, list[int]],
                         corruption: str = "clean") -> dict[str, pd.Series]:
    """Mean IoU over each named group of classes, per cell."""
    out = {}
    iou_cols = [c for c in done.columns if c.startswith(f"{corruption}/IoU/")]
    for name, indices in class_groups.items():
        cols = [iou_cols[i] for i in indices if i < len(iou_cols)]
        if cols:
            out[name] = done[cols].mean(axis=1, skipna=True)
    return out


def main_table(done: pd.DataFrame, spec) -> pd.DataFrame:
    metrics = [m for m in spec.report.metrics if f"clean/{m}" in done.columns]
    done = done.copy()
    groups_extra = _class_group_columns(done, spec.report.class_groups)
    for name, series in groups_extra.items():
        done[f"group/{name}"] = series
    rows = []
    grouped = done.groupby(GROUP, sort=False)
    means = grouped[f"clean/{metrics[0]}"].mean() if metrics else None
    for key, group in grouped:
        row = dict(zip(GROUP, key))
        row["seeds"] = len(group)
        for m in metrics:
            row[m] = _mean_std(group[f"clean/{m}"])
        for name in groups_extra:
            row[f"{name} IoU"] = _mean_std(group[f"group/{name}"])
        if metrics:
            delta = _delta(group[f"clean/{metrics[0]}"].mean(), key, means,
                           spec.report.baseline)
            if delta is not None:
                row[f"Δ {metrics[0]}"] = delta
        for col, label, digits in (("params_m", "Params (M)", 4),
                                   ("gmacs_published", "GMACs published", 4),
                                   ("gmacs_full", "GMACs full", 4),
                                   ("latency_ms_median", "Latency ms", 2)):
            if col in group:
                row[label] = _fmt(group[col].median(), digits)
        if "latency_ms_iqr" in group:
            row["IQR ms"] = _fmt(group["latency_ms_iqr"].median(), 2)
        if "threads" in group:
            row["threads"] = group["threads"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def _short(key: tuple, varying: list[str]) -> str:
    parts = dict(zip(GROUP, key))
    return "/".join(str(parts[k]) for k in varying) or str(parts["fusion"])


def summary_lines(done: pd.DataFrame, spec) -> list[str]:
    """What the table says, in words: the best cell against the baseline(s), and the ranking
    on each named class group (e.g. SynRGBX's XOR pair, which late fusion cannot solve)."""
    metrics = [m for m in spec.report.metrics if f"clean/{m}" in done.columns]
    if not metrics:
        return []
    metric = metrics[0]
    varying = [k for k in GROUP if done[k].nunique() > 1]
    grouped = done.groupby(GROUP, sort=False)
    means, stds = grouped[f"clean/{metric}"].mean(), grouped[f"clean/{metric}"].std()
    lines = []
    baseline = spec.report.baseline
    is_baseline = {k for key in means.index for k in baseline_keys(key, baseline, means.index)}
    contenders = means[[k not in is_baseline for k in means.index]]
    if not contenders.empty:
        best = contenders.idxmax()
        std = stds.loc[best]
        text = (f"- Best on the clean test split: **{_short(best, varying)}**, {metric} "
                f"{means.loc[best]:.1f}" + (f" ± {std:.1f}" if std == std else ""))
        bases = baseline_keys(best, baseline, means.index)
        if bases:
            text += "; ahead of " + ", ".join(
                f"{_short(k, varying)} by {means.loc[best] - means.loc[k]:+.1f}" for k in bases)
        lines.append(text + ".")
    for name, series in _class_group_columns(done, spec.report.class_groups).items():
        ranked = series.groupby([done[k] for k in GROUP], sort=False).mean().sort_values(
            ascending=False)
        lines.append(f"- {name} IoU (clean, mean over seeds), best first: " + ", ".join(
            f"{_short(k, varying)} {v:.1f}" for k, v in ranked.items()) + ".")
    return lines


def compute_line(frame: pd.DataFrame) -> str | None:
    cols = [c for c in ("train_s", "eval_s", "profile_s") if c in frame]
    if not cols or frame[cols].isna().all().all():
        return None
    total = frame[cols].sum().sum()
    parts = ", ".join(f"{c[:-2]} {frame[c].sum() / 60:.1f}" for c in cols)
    return (f"Compute: {total / 60:.1f} min summed over the stored cells ({parts} min); the "
            f"run's wall time adds dataset rendering and start-up.")


def corruption_table(done: pd.DataFrame, corruptions: list[str]) -> pd.DataFrame | None:
    present = [c for c in corruptions if f"{c}/mIoU" in done.columns]
    if len(present) < 2:
        return None
    rows = []
    for key, group in done.groupby(GROUP, sort=False):
        row = dict(zip(GROUP, key))
        for c in present:
            row[c] = _mean_std(group[f"{c}/mIoU"])
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_table(done: pd.DataFrame) -> pd.DataFrame | None:
    cols = [c for c in done.columns if c.startswith("clean/IoU/")]
    if not cols:
        return None
    table = done.groupby(GROUP, sort=False)[cols].mean().round(1)
    table.columns = [c.split("/", 2)[2] for c in cols]
    return table.reset_index()


def published_table(done: pd.DataFrame, published: dict) -> pd.DataFrame | None:
    rows = []
    for key, figures in published.items():
        model, _, size = key.rpartition("_")
        match = done[(done["model"] == model) & (done["size"] == size)]
        if match.empty:
            continue
        row = {"model": key}
        for col, value in figures.items():
            src = col if col in match else f"clean/{col}"  # a metric: the clean test split
            measured = match[src].median() if src in match else float("nan")
            row[f"{col} published"] = value
            row[f"{col} measured"] = _fmt(measured, 4)
            row[f"{col} Δ%"] = _fmt((measured - value) / value * 100, 2) if value else "–"
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def environment_lines(frame: pd.DataFrame) -> list[str]:
    envs = [e for e in frame.get("env", []) if isinstance(e, dict) and e]
    if not envs:
        return []
    keys = ["cpu", "cpu_count", "device", "gpu", "torch", "cuda", "python", "scan_backend",
            "threads", "precision", "git_commit", "host"]
    lines = []
    for key in keys:
        values = sorted({str(e.get(key)) for e in envs if e.get(key) is not None})
        if values:
            lines.append(f"- {key}: {', '.join(values)}")
    return lines


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False)


def write_report(suite: Suite, store: CellStore, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = results_frame(store)
    # cells the suite no longer has (a fusion dropped from the grid) stay in the store, where a
    # later run may want them again, but are not the suite's results
    ids = {cell["id"] for cell in suite.cells()}
    stale = 0
    if not frame.empty:
        stale = int((~frame["cell"].isin(ids)).sum())
        frame = frame[frame["cell"].isin(ids)]
    spec = suite.spec
    title = spec.report.title or f"{suite.name}"
    lines = [f"# {title}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from the store of "
              f"`{suite.path}` by `ssmbench report {suite.path}`. Do not edit by hand."
              + (f" {stale} stored cell(s) outside the suite's grid (cells that left it, or whose "
                 f"settings changed) are kept in the store and left out here." if stale else ""),
              "", "Reruns on the same machine and build reproduce these numbers bit for bit; on "
              "another CPU model the same seeds give slightly different numbers (README, "
              "\"Reruns and determinism\").", ""]
    if frame.empty:
        lines += ["No cells have run yet."]
        (out_dir / "README.md").write_text("\n".join(lines) + "\n")
        return out_dir / "README.md"
    done = frame[frame["state"] == "COMPLETE"]
    failed = frame[frame["state"] == "FAIL"]
    total = len(suite.cells())
    lines += [f"Cells: {len(done)} complete, {len(failed)} failed, "
              f"{total - len(done) - len(failed)} pending, of {total}.", ""]
    env = environment_lines(frame)
    if env:
        compute = compute_line(frame)
        lines += ["## Environment", "", *env, *([f"- {compute}"] if compute else []), ""]
    summary = summary_lines(done, spec) if not done.empty else []
    if summary:
        lines += ["## Summary", "", *summary, ""]
    if not done.empty:
        protocol = next((p for p in done.get("clean/protocol", []) if isinstance(p, str)), None)
        evaluated = "clean/mIoU" in done.columns  # a profile-only suite has no test split
        lines += ["## Results", "",
                  ("Clean test split" if evaluated else "Profile only, no evaluation") +
                  (f", protocol: {protocol}" if protocol else "") +
                  (f"; Δ against {spec.report.baseline}" if spec.report.baseline else "") + ".",
                  "", _md(main_table(done, spec)), "", CONVENTIONS, ""]
        table = corruption_table(done, spec.eval.corruptions)
        if table is not None:
            lines += ["## Robustness sets", "", "mIoU on each test set (mean ± std over seeds).",
                      "", _md(table), ""]
        table = per_class_table(done)
        if table is not None:
            lines += ["## Per-class IoU", "", "Clean test split, mean over seeds.", "",
                      _md(table), ""]
        table = published_table(done, spec.report.published)
        if table is not None:
            lines += ["## Published vs measured", "", _md(table), ""]
        plots = []
        if "pareto" in spec.report.plots and "gmacs_full" in done and "clean/mIoU" in done:
            plots.append(("mIoU vs GFLOPs", plot_pareto(done, GROUP, out_dir / "pareto.png")))
        if "per_class" in spec.report.plots and per_class_table(done) is not None:
            plots.append(("Per-class IoU",
                          plot_per_class(per_class_table(done), GROUP, out_dir / "per_class.png",
                                         spec.report.class_groups)))
        if "curves" in spec.report.plots:
            plots.append(("Training curves", plot_curves(done, GROUP, out_dir / "curves.png")))
        if "corruptions" in spec.report.plots and corruption_table(done, spec.eval.corruptions) \
                is not None:
            plots.append(("Robustness sets",
                          plot_corruptions(done, GROUP, spec.eval.corruptions,
                                           out_dir / "corruptions.png")))
        plots = [(name, path) for name, path in plots if path is not None]
        if plots:
            lines += ["## Plots", ""]
            lines += [f"### {name}\n\n![{name}]({path.name})\n" for name, path in plots]
    from bench.checkpoint_report import init_section  # load reports, published vs measured

    lines += init_section(store, spec, ids)
    from bench.profile_report import profile_section  # FLOPs, latency, memory, breakdown

    lines += profile_section(store, out_dir=out_dir)
    if not failed.empty:
        lines += ["## Failed cells", ""]
        lines += [f"- `{r.label}`: {r.error}" for r in failed.itertuples()]
        lines.append("")
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    frame.drop(columns=["history", "env"], errors="ignore").to_csv(out_dir / "cells.csv",
                                                                   index=False)
    return path
