"""The search report: ``reports/<suite>/README.md`` with the best trials per model and fusion,
the suite's defaults against the best trial, every trial, and Optuna's own matplotlib plots
(optimisation history, parameter importances, intermediate values, Pareto front), all read
from the study in the store, never edited by hand."""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import TrialState

from bench.config.search_space import METRICS
from bench.reporting.markdown import markdown_table
from bench.reporting.plots import pyplot

log = logging.getLogger("ssmbench")


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def trial_rows(study: optuna.Study, metrics: list[str]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if "duplicate_of" in t.user_attrs or t.state == TrialState.WAITING:
            continue
        cfg = t.user_attrs.get("config") or {}
        row = {"trial": t.number, "state": t.state.name, "model": cfg.get("model"),
               "size": cfg.get("size"), "fusion": cfg.get("fusion"),
               "default": bool(t.user_attrs.get("default")),
               "retry of": t.system_attrs.get("failed_trial")}
        for key, value in t.params.items():
            if key != "arch":
                row[key] = value
        for i, metric in enumerate(metrics):
            row[metric] = t.values[i] if t.values and t.state == TrialState.COMPLETE else None
        row["last step"] = max(t.intermediate_values) if t.intermediate_values else None
        row["error"] = t.user_attrs.get("error", "") if t.state == TrialState.FAIL else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _condition(when: dict) -> str:
    """``{fusion: [a, b]}`` -> "fusion in a, b" (no Python reprs in a report)."""
    return " and ".join(f"{k} in {', '.join(map(str, v if isinstance(v, list) else [v]))}"
                        for k, v in when.items())


def _markdown(frame: pd.DataFrame) -> str:
    return markdown_table(frame.map(_fmt)) if len(frame) else "(none)"


def best_per_group(frame: pd.DataFrame, metrics: list[str], directions: list[str],
                   pareto: set[int]) -> pd.DataFrame:
    """Single objective: each model/fusion's best complete trial. Several objectives: each
    model/fusion's trials on the study's Pareto front."""
    done = frame[frame["state"] == "COMPLETE"]
    if done.empty:
        return done
    if len(metrics) == 1:
        ascending = directions[0] == "minimize"
        ranked = done.sort_values(metrics[0], ascending=ascending)
        return ranked.groupby(["model", "size", "fusion"], sort=False).head(1)
    return done[done["trial"].isin(pareto)].sort_values(["model", "fusion", metrics[0]])


def defaults_vs_best(frame: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """Per model/fusion: the suite's default values against the best trial."""
    rows = []
    done = frame[frame["state"] == "COMPLETE"]
    for (model, size, fusion), group in done.groupby(["model", "size", "fusion"]):
        default = group[group["default"]]
        best = group.sort_values(metric, ascending=direction == "minimize").iloc[0]
        base = default[metric].iloc[0] if len(default) else None
        rows.append({"model": model, "size": size, "fusion": fusion,
                     f"default {metric}": base, f"best {metric}": best[metric],
                     "Δ": None if base is None else best[metric] - base,
                     "best trial": int(best["trial"])})
    return pd.DataFrame(rows)


def _save(ax_or_fig, path: Path) -> None:
    fig = ax_or_fig.figure if hasattr(ax_or_fig, "figure") and not isinstance(
        ax_or_fig, Figure) else ax_or_fig
    if not isinstance(fig, Figure):  # an array of axes
        fig = ax_or_fig.flat[0].figure
    fig.set_size_inches(7, 4.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def write_plots(study: optuna.Study, metrics: list[str], out: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNGs; returns {file: caption}, and notes why any is
    missing (e.g. importances need two finished trials that differ)."""
    plt = pyplot()  # before Optuna's plotting module imports pyplot
    from optuna.visualization import matplotlib as ovm

    names = [f"{m} ({METRICS[m].replace('imize', '')})" for m in metrics]
    single = len(metrics) == 1
    plots = {
        "history.png": ("optimisation history", lambda: ovm.plot_optimization_history(
            study, target=None if single else (lambda t: t.values[0]),
            target_name=names[0])),
        "importances.png": ("parameter importances (fANOVA)", lambda: ovm.plot_param_importances(
            study, target=None if single else (lambda t: t.values[0]),
            target_name=names[0])),
    }
    if single:
        plots["intermediate.png"] = ("per-validation val mIoU of every trial (pruned ones stop "
                                     "early)", lambda: ovm.plot_intermediate_values(study))
    else:
        plots["pareto.png"] = ("Pareto front", lambda: ovm.plot_pareto_front(
            study, target_names=names))
    written = {}
    for file, (caption, draw) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _save(draw(), out / file)
            written[file] = caption
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn yet is noted
            written[file] = f"not drawn: {type(exc).__name__}: {exc}"
            plt.close("all")
    return written


# fANOVA fits a random forest to the complete trials; Hutter et al. (ICML 2014) evaluate it on
# hundreds of configurations. Below this many trials the plots are read as anecdotes.
FEW_TRIALS = 20


def small_sample_caveat(complete: int, total: int) -> str | None:
    """A warning over the plots when the study is too small to rank parameters."""
    if complete >= FEW_TRIALS:
        return None
    return (f"⚠ Small sample: {complete} complete trial(s) of {total}. The parameter "
            f"importances are a random forest (fANOVA) fitted to {complete} point(s) and change "
            f"with every new trial, and the history's best-so-far reflects few draws: read "
            f"both as indicative only (fewer than {FEW_TRIALS} complete trials).")


def write_search_report(plan, store, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    study = store.study
    metrics = [o.metric for o in plan.spec.objectives]
    directions = plan.spec.directions
    frame = trial_rows(study, metrics)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    pareto = {t.number for t in study.best_trials} if complete else set()
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    spec = plan.spec
    lines = [f"# Search: {plan.suite.name}", ""]
    if plan.suite.spec.description:
        lines += [plan.suite.spec.description, ""]
    objective_text = ", ".join(f"{d} {m}" for m, d in zip(metrics, directions))
    lines += [
        f"- Objective(s): {objective_text}; sampler {spec.sampler.name} "
        f"(seed {spec.sampler.seed}); pruner {spec.pruner.name}; budget {spec.n_trials} trials"
        + (f", timeout {spec.timeout:g} s per worker" if spec.timeout else ""),
        "- Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())),
        "- Space: " + "; ".join(
            f"`{k}` {p.type}" + (f" [{p.low:g}, {p.high:g}]" if p.low is not None else
                                 " {" + ", ".join(map(str, p.choices or [])) + "}")
            + (" log" if p.log else "") + (f" when {_condition(p.when)}" if p.when else "")
            for k, p in spec.space.items()),
        "- val_mIoU is the last validation of a trial (train.val_split), the value the pruner "
        "sees; the test split is not used to choose.",
        "",
        "## Best trials per model and fusion",
        "",
        _markdown(best_per_group(frame, metrics, directions, pareto).drop(
            columns=["state", "default", "retry of", "error"], errors="ignore")),
        "",
    ]
    if len(frame) and frame["default"].any():
        lines += [f"## Suite defaults against the best trial ({metrics[0]})", "",
                  _markdown(defaults_vs_best(frame, metrics[0], directions[0])), ""]
    plots = write_plots(study, metrics, out)
    lines += ["## Plots", ""]
    caveat = small_sample_caveat(len(complete), len(frame))
    if caveat:
        lines += [caveat, ""]
    for file, caption in plots.items():
        if caption.startswith("not drawn"):
            lines.append(f"- {file}: {caption}")
        else:
            lines += [f"**{caption}**", "", f"![{caption}]({file})", ""]
    lines += ["", "## All trials", "", _markdown(frame.drop(columns=["error"])
                                                 if len(frame) else frame), ""]
    failed = frame[frame["state"] == "FAIL"] if len(frame) else frame
    if len(failed):
        lines += ["## Failed trials", ""]
        lines += [f"- trial {int(r['trial'])}: {r['error']}" for _, r in failed.iterrows()]
        lines.append("")
    where = store.storage_url or str(store.dir / "study.journal")
    lines += ["## Browse the study", "",
              f"`optuna-dashboard {where}` (study `{store.suite_name}`) shows the same trials "
              "live; `ssmbench search SUITE --report-only` regenerates this page.", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    frame.to_csv(out / "trials.csv", index=False)
    return path
