"""A run killed with SIGKILL and rerun ends exactly where an uninterrupted one does: every
stored metric, logged loss, learning rate and validation of every cell equals the
uninterrupted run's, bit for bit, for a suite drained by two workers (killed twice, so a cell
resumes mid-training from its checkpoint) and for a search trial. SynRGBX draws random
misregistration and modality dropout for every training item, and validations run between
checkpoints: both used to shift the RNG streams of a resumed cell."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bench.run.train as train_module
from bench.cli import main
from bench.config.suite import load_suite
from tests.helpers.resume import SUBPROCESS_ENV, kill_when_mid_cell, resumed_from, stored_results

REPO = Path(__file__).resolve().parents[2]

SUITE = """\
name: exact
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: synrgbx, size: 32, counts: [48, 16, 16], modality_dropout: 0.3}]
  seeds: [0, 1, 2]
stages: [train, eval]
train: {iterations: 20, batch_size: 8, lr: 0.003, threads: 1, checkpoint_every: 5,
        log_every: 5, val_every: 10, augment: {flip: true}}
eval: {corruptions: [clean]}
"""

SEARCH = """\
name: exact_search
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: synrgbx, size: 32, counts: [48, 16, 16]}]
stages: [train]
train: {iterations: 30, batch_size: 8, lr: 0.003, threads: 1, checkpoint_every: 5,
        log_every: 5, val_every: 10}
search:
  space:
    train.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  n_trials: 1
"""

def _args(path: Path, runs: Path, *extra) -> list[str]:
    return [str(path), "--runs-dir", str(runs), "--reports-dir", str(runs.parent / "reports"),
            "--no-progress", *extra]


def test_suite_killed_twice_ends_exactly_as_an_uninterrupted_run(write_suite, tmp_path):
    path = write_suite(SUITE)
    reference = tmp_path / "reference" / "runs"
    assert main(["run", *_args(path, reference)]) == 0
    runs = tmp_path / "killed" / "runs"
    cmd = [sys.executable, str(REPO / "run_bench.py"), *_args(path, runs, "--workers", "2")]
    kill_when_mid_cell(cmd, runs, "exact", after=0)
    kill_when_mid_cell(cmd, runs, "exact", after=time.time())
    done = subprocess.run(cmd[:-2], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(0 < r < 20 for r in resumed_from(runs, "exact")), "no cell resumed mid-training"
    expected, got = stored_results(reference, "exact"), stored_results(runs, "exact")
    assert len(expected) == 3 and got.keys() == expected.keys()
    for label in expected:
        assert got[label] == expected[label], label


def test_search_trial_killed_mid_training_ends_as_an_uninterrupted_one(write_suite, tmp_path):
    path = write_suite(SEARCH)
    reference = tmp_path / "reference" / "runs"
    assert main(["search", *_args(path, reference)]) == 0
    runs = tmp_path / "killed" / "runs"
    cmd = [sys.executable, str(REPO / "run_bench.py"), "search", *_args(path, runs)]
    kill_when_mid_cell(cmd, runs, "exact_search", after=0)
    done = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(0 < r < 30 for r in resumed_from(runs, "exact_search"))
    expected, got = stored_results(reference, "exact_search"), stored_results(runs, "exact_search")
    assert len(expected) == 1 and got == expected
    assert len(next(iter(got.values()))["history"]["val_mIoU"]) == 3


@pytest.mark.parametrize("where", ["validation", "evaluation"])
def test_cell_killed_inside_validation_or_evaluation_resumes_exactly(write_suite, tmp_path,
                                                                    monkeypatch, where):
    """Killed in the second validation (between checkpoints: the rerun replays from the last
    one) or in the test-split evaluation (after the last checkpoint)."""
    config = load_suite(write_suite(SUITE)).cells()[0]
    reference = train_module.run_cell(config, tmp_path / "ref", progress=False)
    name = "validate" if where == "validation" else "evaluate_cell"
    real, calls = getattr(train_module, name), []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == (2 if where == "validation" else 1):
            raise KeyboardInterrupt  # as SIGKILL: only the checkpoint on disk survives
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, name, dies)
    with pytest.raises(KeyboardInterrupt):
        train_module.run_cell(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module, name, real)
    resumed = train_module.run_cell(config, tmp_path / "cut", progress=False)
    assert resumed["resumed_from"] == (15 if where == "validation" else 20)
    assert resumed["history"] == reference["history"]
    # as JSON: a float's repr round-trips exactly, and an absent class's NaN F-score equals NaN
    assert json.dumps(resumed["metrics"], sort_keys=True) == json.dumps(reference["metrics"],
                                                                        sort_keys=True)
