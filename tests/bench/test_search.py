"""`ssmbench search`: the search: block's schema, a median-pruned TPE search whose best trial
beats the suite's default learning rate, conditional parameters, the grid sampler, a
multi-objective (mIoU vs GMACs) NSGA-II search, resume, and the report with Optuna's plots."""
import re

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from bench.cli import main
from bench.config.suite import load_suite
from bench.config.yaml_source import SuiteError
from bench.results.store import CellStore
from bench.run.search import SearchPlan

SEARCH = """\
name: toy_search
plugins: [TOY_PLUGIN]
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: toy_rgbx}]
stages: [train]
train: {iterations: 16, batch_size: 8, lr: 3.0e-4, threads: 1, checkpoint_every: 8,
        val_every: 4}
search:
  space:
    train.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}
  pruner: {name: median, n_startup_trials: 2}
  n_trials: 7
"""


def _search(path, tmp_path, *extra):
    return main(["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress", *extra])


def _trials(tmp_path, name="toy_search", directions=None):
    return CellStore(name, None, tmp_path / "runs", directions).study.get_trials()


def test_median_pruned_search_beats_the_default_lr(write_suite, tmp_path, capsys):
    path = write_suite(SEARCH)
    assert _search(path, tmp_path) == 0
    assert "7 trial(s) run now" in capsys.readouterr().out
    trials = _trials(tmp_path)
    states = [t.state for t in trials]
    assert len(trials) == 7 and TrialState.PRUNED in states and TrialState.FAIL not in states
    default = trials[0]
    assert default.user_attrs["default"] and default.params == {"train.lr": 3.0e-4}
    assert default.state == TrialState.COMPLETE
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert best.value > default.value + 5                        # mIoU points
    # every trial is a cell: its configuration carries the sampled lr, its id hashes it
    for t in trials:
        assert t.user_attrs["config"]["train"]["lr"] == pytest.approx(t.params["train.lr"])
    assert len({t.user_attrs["cell_id"] for t in trials}) == 7
    # the objective is the last validation; pruned trials stopped early
    assert best.value == best.user_attrs["history"]["val_mIoU"][-1]
    assert best.user_attrs["history"]["val_iteration"][-1] == 16
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(max(t.intermediate_values) < 16 for t in pruned)

    out = tmp_path / "reports" / "toy_search"
    report = (out / "README.md").read_text()
    best_table = report.split("## Best trials per model and fusion")[1].split("##")[0]
    assert re.search(rf"\|\s+{best.number} \|", best_table)
    table = report.split("## Suite defaults against the best trial")[1]
    assert f"{default.value:.4g}" in table and f"{best.value:.4g}" in table
    for png in ("history.png", "importances.png", "intermediate.png"):
        assert (out / png).stat().st_size > 5000, png
    assert "optuna-dashboard" in report
    # a 7-trial study's importances come with their caveat; every table renders
    assert re.search(r"⚠ Small sample: \d complete trial\(s\) of 7", report)
    from tests.helpers.markdown_tables import table_problems
    assert table_problems(report) == []
    frame = pd.read_csv(out / "trials.csv")
    assert sorted(frame["state"].unique()) == ["COMPLETE", "PRUNED"]

    # re-running spends no more trials; a changed space is refused until --fresh
    assert _search(path, tmp_path) == 0
    assert "0 trial(s) run now, 7 in the study" in capsys.readouterr().out
    assert _search(path, tmp_path, "--n-trials", "8") == 0     # a larger budget goes on
    assert "1 trial(s) run now, 8 in the study" in capsys.readouterr().out
    changed = write_suite(SEARCH.replace("high: 0.1", "high: 0.2"))
    assert _search(changed, tmp_path) == 2
    assert "--fresh" in capsys.readouterr().err


def test_conditional_parameters_follow_the_trial_fusion(write_suite, tmp_path):
    text = SEARCH.replace("fusions: [add]", "fusions: [add, concat_conv]").replace(
        "iterations: 16", "iterations: 2").replace("val_every: 4", "val_every: 1").replace(
        "    train.lr:", "    train.warmup_iters: {type: int, low: 0, high: 4, step: 2,\n"
                        "                         when: {fusion: concat_conv}}\n    train.lr:")
    text = text.replace("n_trials: 7", "n_trials: 3").replace("name: median", "name: none")
    path = write_suite(text)
    assert _search(path, tmp_path, "--n-trials", "6") == 0
    trials = _trials(tmp_path)
    assert len(trials) == 6
    archs = {t.params["arch"] for t in trials}
    assert archs == {"dualcnn/nano/add", "dualcnn/nano/concat_conv"}
    for t in trials:
        fusion = t.params["arch"].split("/")[-1]
        assert t.user_attrs["config"]["fusion"] == fusion
        assert ("train.warmup_iters" in t.params) == (fusion == "concat_conv")
    defaults = [t for t in trials if t.user_attrs.get("default")]
    assert len(defaults) == 2                      # the suite's values, once per fusion


def test_grid_sampler_visits_each_point_once(write_suite, tmp_path):
    text = SEARCH.replace("iterations: 16", "iterations: 2").replace(
        "{type: float, low: 1.0e-4, high: 0.1, log: true}",
        "{type: categorical, choices: [0.001, 0.01, 0.1]}\n"
        "    train.schedule: {type: categorical, choices: [poly, cosine]}").replace(
        "sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}",
        "sampler: {name: grid}\n  enqueue_defaults: false").replace(
        "name: median, n_startup_trials: 2", "name: none").replace("n_trials: 7", "n_trials: 20")
    path = write_suite(text)
    assert _search(path, tmp_path) == 0
    points = sorted((t.params["train.lr"], t.params["train.schedule"]) for t in _trials(tmp_path))
    assert points == sorted((lr, s) for lr in (0.001, 0.01, 0.1) for s in ("poly", "cosine"))


def test_multi_objective_search_reports_a_pareto_front(write_suite, tmp_path):
    text = SEARCH.replace("fusions: [add]", "fusions: [add, concat_conv]").replace(
        "stages: [train]", "stages: [train, profile]\nprofile: {latency: false}").replace(
        "iterations: 16", "iterations: 4").replace(
        "sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}",
        "sampler: {name: nsga2, seed: 0, options: {population_size: 4}}\n"
        "  objectives: [{metric: val_mIoU}, {metric: gmacs}]").replace(
        "name: median, n_startup_trials: 2", "name: none").replace("n_trials: 7", "n_trials: 4")
    path = write_suite(text)
    assert _search(path, tmp_path) == 0
    trials = _trials(tmp_path, directions=["maximize", "minimize"])
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    gmacs = {t.params["arch"]: t.values[1] for t in trials}
    assert gmacs["dualcnn/nano/concat_conv"] > gmacs["dualcnn/nano/add"]  # the 1x1 convs
    out = tmp_path / "reports" / "toy_search"
    assert (out / "pareto.png").stat().st_size > 5000
    assert "maximize val_mIoU, minimize gmacs" in (out / "README.md").read_text()


@pytest.mark.parametrize("edit, key, message", [
    (("log: true", "log: true, step: 0.1"), "search", "log and step do not combine"),
    (("low: 1.0e-4", "low: 0"), "search", "log: true needs low > 0"),
    (("train.lr:", "trian.lr:"), "search.space", "must be a dotted path"),
    (("n_trials: 7", "n_trials: 7\n  objectives: [{metric: val_mIoU}, {metric: gmacs}]"),
     "search", "pruners do not support several objectives"),
    (("name: tpe", "name: grid"), "search", "grid sampler needs a step"),
    (("name: median", "name: medain"), "search.pruner.name", "median"),
])
def test_bad_search_blocks_exit_2_naming_the_key(write_suite, tmp_path, capsys, edit, key,
                                                 message):
    path = write_suite(SEARCH.replace(*edit))
    assert _search(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert key in err and message in err and "Traceback" not in err


def test_search_needs_validations_for_its_pruner(write_suite):
    suite = load_suite(write_suite(SEARCH.replace("val_every: 4", "val_every: 0")))
    with pytest.raises(SuiteError, match="train.val_every"):
        SearchPlan(suite)
    # a space key that is not a setting is refused when the suite loads (bench/config/checks.py)
    with pytest.raises(SuiteError, match="train has no setting 'learning_rate'"):
        load_suite(write_suite(SEARCH.replace("train.lr:", "train.learning_rate:")))


SYNRGBX_SEARCH = """\
name: syn_search
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: synrgbx, size: 32, counts: [256, 64, 64]}]
stages: [train]
train: {iterations: 48, batch_size: 16, lr: 3.0e-4, threads: 1, checkpoint_every: 48,
        val_every: 12}
search:
  space:
    train.lr: {type: float, low: 1.0e-4, high: 5.0e-2, log: true}
  sampler: {name: tpe, seed: 0, options: {n_startup_trials: 3}}
  pruner: {name: median, n_startup_trials: 2}
  n_trials: 6
"""


@pytest.mark.slow
def test_median_pruned_search_on_synrgbx_beats_the_default_lr(write_suite, tmp_path):
    """The committed suites/search_fusion_lr.yaml in small: SynRGBX at 32 px."""
    path = write_suite(SYNRGBX_SEARCH)
    assert _search(path, tmp_path) == 0
    trials = _trials(tmp_path, "syn_search")
    assert any(t.state == TrialState.PRUNED for t in trials)
    default = trials[0]
    assert default.user_attrs["default"] and default.state == TrialState.COMPLETE
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert best.value > default.value + 2 and best.params["train.lr"] > 3.0e-4
    table = (tmp_path / "reports" / "syn_search" / "README.md").read_text().split(
        "## Suite defaults against the best trial")[1]
    assert f"{best.value:.4g}" in table


def test_failed_trials_are_recorded_and_retried_by_the_next_run(write_suite, tmp_path, capsys):
    text = SEARCH.replace("[{name: toy_rgbx}]", "[{name: toy_rgbx, nan_after: 0}]").replace(
        "n_trials: 7", "n_trials: 2")
    path = write_suite(text)
    # the preflight refuses NaN inputs before any trial (test_preflight.py); this test is about
    # trials that fail while the search runs, so it goes past the preflight
    assert _search(path, tmp_path, "--no-preflight") == 0
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("loss became nan" in t.user_attrs["error"] for t in trials)
    assert "## Failed trials" in (tmp_path / "reports/toy_search/README.md").read_text()
    capsys.readouterr()
    assert _search(path, tmp_path, "--no-preflight") == 0  # each failed trial runs once more
    trials = _trials(tmp_path)
    assert len(trials) == 4
    retries = trials[2:]
    assert [t.system_attrs["failed_trial"] for t in retries] == [0, 1]
    assert [t.params for t in retries] == [t.params for t in trials[:2]]


@pytest.mark.slow
def test_two_search_workers_share_the_trial_budget(write_suite, tmp_path):
    text = SEARCH.replace("iterations: 16", "iterations: 4").replace(
        "name: median, n_startup_trials: 2", "name: none")
    path = write_suite(text)
    assert _search(path, tmp_path, "--workers", "2", "--n-trials", "4") == 0
    trials = _trials(tmp_path)
    assert 4 <= len(trials) <= 5            # a budget check and an ask may race once
    assert all(t.state == TrialState.COMPLETE for t in trials)
    lrs = [t.params["train.lr"] for t in trials]
    assert len(set(lrs)) == len(lrs)
    # the workers' samplers have different seeds, else two TPE workers draw the same trials
    plan = SearchPlan(load_suite(path))
    first = [optuna.create_study(sampler=plan.sampler(worker)).ask().suggest_float(
        "train.lr", 1e-4, 0.1, log=True) for worker in (0, 1, 0)]
    assert first[0] == first[2] != first[1]


def test_a_resumed_search_asks_only_new_configurations(write_suite, tmp_path):
    """The rerun's sampler does not replay the first run's draws: every trial is a distinct
    configuration and the budget counts distinct configurations."""
    text = SEARCH.replace("iterations: 16", "iterations: 4").replace(
        "name: median, n_startup_trials: 2", "name: none")
    path = write_suite(text)
    assert _search(path, tmp_path, "--n-trials", "2") == 0
    assert _search(path, tmp_path, "--n-trials", "4") == 0
    trials = _trials(tmp_path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    lrs = [t.params["train.lr"] for t in trials]
    assert len(set(lrs)) == 4, lrs
    store = CellStore("toy_search", None, tmp_path / "runs")
    assert len(store.by_cell()) == 4
