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

from bench.config.suite import Suite
from bench.reporting import stats
from bench.reporting.comparisons import (
    GROUP,
    against_baseline,
    against_best,
    baseline_keys,
    describe_baseline,
    single_class_cells,
    tied,
)
from bench.reporting.markdown import markdown_table
from bench.reporting.plots import plot_corruptions, plot_curves, plot_pareto, plot_per_class
from bench.reporting.summary import class_group_columns, robustness_tables, summary_lines
from bench.results.store import CellStore

CONVENTIONS = (
    "**Conventions.** FLOPs are counted by fvcore, which counts one multiply-add as one FLOP, so "
    "they are given as GMACs. *published*: the seed repositories' counting (the selective scan "
    "and element-wise ops are not counted); *full*: the scan counted as 9·B·L·D·N + B·D·L "
    "(+ B·D·L with a z gate), cross-scan / cross-merge as data movement (0). Latency: batch 1, "
    "after warm-up, the median of the quietest window of timed calls (see the Profile section), "
    "with its interquartile range; threads and precision as listed. Metrics are percentages "
    "from one confusion matrix over the whole split (mmseg's definitions); mean ± sample std "
    "over seeds.")

STATISTICS = (
    "**Statistics over seeds.** *Δ 95% CI*: the confidence interval of the mean difference "
    "from the baseline; *p (Holm)*: a two-sided t-test over seeds, paired by seed when the "
    "seed gives both cells the same data (same scenes and batch order; Welch's otherwise), "
    "Holm-corrected across the table's comparisons; *vs best*: whether a cell is significantly "
    "below the best cell (same test, Holm across the comparisons with the best) or tied with "
    "it. With fewer than 2 seeds nothing can be assessed (–).")


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
               "error": t.user_attrs.get("error"), "attempts": None,
               "batch_size": (cfg.get("train") or {}).get("batch_size")}
        metrics = t.user_attrs.get("metrics") or {}
        for corruption, values in metrics.items():
            for key in ("mIoU", "mF1", "aAcc", "mAcc", "kappa", "oIoU", "P@0.5", "P@0.9"):
                if values and values.get(key) is not None:
                    row[f"{corruption}/{key}"] = values[key]
            for cls, iou in (values.get("IoU") or {}).items():
                row[f"{corruption}/IoU/{cls}"] = iou
            row[f"{corruption}/protocol"] = values.get("protocol")
            row[f"{corruption}/confusion"] = values.get("confusion")
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


def _delta(value: float, group: tuple, means: pd.Series, baseline: dict | None) -> str | None:
    """``value`` minus the best baseline mean; "(baseline)" for a baseline group itself."""
    keys = baseline_keys(group, baseline, means.index)
    if not keys:
        return None
    if group in keys:
        return "(baseline)"
    return f"{value - max(means.loc[k] for k in keys):+.1f}"


def main_table(done: pd.DataFrame, spec) -> pd.DataFrame:
    metrics = [m for m in spec.report.metrics if f"clean/{m}" in done.columns]
    done = done.copy()
    groups_extra = class_group_columns(done, spec.report.class_groups)
    for name, series in groups_extra.items():
        done[f"group/{name}"] = series
    rows = []
    grouped = done.groupby(GROUP, sort=False)
    means = grouped[f"clean/{metrics[0]}"].mean() if metrics else None
    column = f"clean/{metrics[0]}" if metrics else None
    vs_base = against_baseline(done, column, spec.report.baseline) if metrics else {}
    best, vs_best = against_best(done, column) if metrics else ({}, {})
    collapsed = [c["index"] for c in single_class_cells(done)]
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
                r = vs_base.get(key)
                assessed = r is not None and r.result is not None
                row["Δ 95% CI"] = stats.fmt_ci(r.result.low, r.result.high) if assessed else "–"
                row["p (Holm)"] = stats.fmt_p(r.p_holm) if assessed else "–"
            row["vs best"] = _versus_best(key, best, vs_best)
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
        flagged = int(group.index.isin(collapsed).sum())
        if flagged:
            row["note"] = f"⚠ {flagged} of {len(group)} seed(s) predict one class"
        rows.append(row)
    return pd.DataFrame(rows)


def _versus_best(key: tuple, best: dict, vs_best: dict) -> str:
    """"best", "tied" (not significantly worse, Holm p) or "below", with the p-value."""
    if key in best.values():
        return "best"
    row = vs_best.get(key)
    if row is None or row.result is None:
        return "–"
    return f"{'tied' if tied(row) else 'below'} (p {stats.fmt_p(row.p_holm)})"


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
    collapsed = {c: [hit["index"] for hit in single_class_cells(done, c)] for c in present}
    rows = []
    for key, group in done.groupby(GROUP, sort=False):
        row = dict(zip(GROUP, key))
        for c in present:
            flagged = int(group.index.isin(collapsed[c]).sum())
            row[c] = _mean_std(group[f"{c}/mIoU"]) + (f" †{flagged}" if flagged else "")
        rows.append(row)
    return pd.DataFrame(rows)


SINGLE_CLASS_NOTE = ("†n: n seeds predict a single class on that set (its confusion matrix has "
                     "one non-empty column): the chance level of a constant prediction, e.g. a "
                     "model that lost the only modality it uses.")


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


_md = markdown_table


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
    # `ssmbench profile` on a suite that also trains keeps its own store (<suite>-profile,
    # bench/profiling/latency_repro.py profile_study_name): its report says so and names its command
    profile_run = getattr(store, "suite_name", suite.name) != suite.name
    command = f"ssmbench {'profile' if profile_run else 'report'} {suite.path}"
    lines = [f"# {'Profile: ' if profile_run else ''}{title}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    if profile_run:
        lines += [f"Profile only (no training): the store `{store.suite_name}`, written by "
                  f"`{command}`; the suite's trained results are in its own report.", ""]
    lines += [f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from the store of "
              f"`{suite.path}` by `{command}`. Do not edit by hand."
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
                  (f"; Δ against {describe_baseline(spec.report.baseline)}"
                   if spec.report.baseline else "") + ".",
                  "", _md(main_table(done, spec)), "", CONVENTIONS, "", STATISTICS, ""]
        table = corruption_table(done, spec.eval.corruptions)
        if table is not None:
            lines += ["## Robustness sets", "", "mIoU on each test set (mean ± std over seeds).",
                      "", _md(table), ""]
            if table.map(lambda v: isinstance(v, str) and " †" in v).any().any():
                lines += [SINGLE_CLASS_NOTE, ""]
            present = [c for c in spec.eval.corruptions if f"{c}/mIoU" in done.columns]
            deltas, best_lines = robustness_tables(done, spec, present)
            if deltas is not None:
                lines += [f"Δ mIoU against {describe_baseline(spec.report.baseline)} on each "
                          "set with its 95% CI, and the p-value of the t-test over seeds, "
                          "Holm-corrected across this whole table.", "", _md(deltas), ""]
            lines += ["Best on each set, and the cells not significantly worse than it "
                      "(Holm across each set's comparisons with its best, α = 0.05):", "",
                      *best_lines, ""]
        table = per_class_table(done)
        if table is not None:
            lines += ["## Per-class IoU", "", "Clean test split, mean over seeds.", "",
                      _md(table), ""]
        table = published_table(done, spec.report.published)
        if table is not None:
            lines += ["## Published vs measured", "", _md(table), ""]
        plots = []
        if "pareto" in spec.report.plots and "gmacs_full" in done and "clean/mIoU" in done:
            plots.append(("mIoU against GMACs and latency",
                          plot_pareto(done, GROUP, out_dir / "pareto.png")))
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
    from bench.reporting.init_section import init_section  # load reports, published vs measured

    lines += init_section(store, spec, ids)
    from bench.reporting.profile_section import profile_section  # FLOPs, latency, memory, breakdown

    lines += profile_section(store, out_dir=out_dir, ids=ids)
    if not failed.empty:
        lines += ["## Failed cells", ""]
        lines += [f"- `{r.label}`: {r.error}" for r in failed.itertuples()]
        lines.append("")
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    frame.drop(columns=["history", "env", *[c for c in frame if c.endswith("/confusion")]],
               errors="ignore").to_csv(out_dir / "cells.csv", index=False)
    return path
