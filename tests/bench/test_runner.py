"""Runner and store: finished cells are skipped, failures are recorded and the suite goes on,
a changed setting re-runs only the cells it changes, a cell is deterministic, and a killed run
resumes exactly."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bench.run.train as train_module
from bench.cli import main
from bench.config.suite import load_suite
from bench.results.store import CellStore
from tests.helpers.suites import TOY_SUITE

REPO = Path(__file__).resolve().parents[2]


def _run(path, tmp_path, *extra):
    return main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress", *extra])


def _states(tmp_path, name="toy"):
    store = CellStore(name, None, tmp_path / "runs")
    return {label: [t.state.name for t in sorted(ts, key=lambda t: t.number)]
            for label, ts in ((ts[0].user_attrs["label"], ts) for ts in store.by_cell().values())}


def test_run_then_rerun_skips_finished(write_suite, tmp_path, capsys):
    path = write_suite(TOY_SUITE)
    assert _run(path, tmp_path) == 0
    assert "2 cell(s) run now" in capsys.readouterr().out
    assert _run(path, tmp_path) == 0
    assert "0 cell(s) run now, 2 already finished" in capsys.readouterr().out
    assert all(s == ["COMPLETE"] for s in _states(tmp_path).values())
    report = (tmp_path / "reports" / "toy" / "README.md").read_text()
    assert "| dualcnn | nano   | add" in report and "(baseline)" in report


def test_failing_cell_is_recorded_and_the_suite_goes_on(write_suite, tmp_path, capsys):
    text = TOY_SUITE.replace("[{name: toy_rgbx}]",
                             "[{name: toy_rgbx}, {name: toy_rgbx, nan_after: 0}]")
    path = write_suite(text)
    # the preflight refuses NaN inputs before any cell trains (test_preflight.py); this test is
    # about a cell that fails while the suite runs, so it goes past the preflight
    assert _run(path, tmp_path, "--no-preflight") == 1
    err = capsys.readouterr().err
    assert "loss became nan at iteration 0" in err
    states = _states(tmp_path)
    assert sum(s == ["COMPLETE"] for s in states.values()) == 2
    assert sum(s == ["FAIL"] for s in states.values()) == 2
    # a re-run retries the failed cells only
    assert _run(path, tmp_path, "--no-preflight") == 1
    states = _states(tmp_path)
    assert sorted(len(s) for s in states.values()) == [1, 1, 2, 2]
    report = (tmp_path / "reports" / "toy" / "README.md").read_text()
    assert "## Failed cells" in report and "loss became nan" in report


def test_reruns_after_a_change_run_only_the_new_cells(write_suite, tmp_path, capsys):
    path = write_suite(TOY_SUITE.replace("train: {", "stages: [train, eval]\ntrain: {"))
    assert _run(path, tmp_path) == 0
    capsys.readouterr()
    # logging cadence cannot change a result: nothing re-runs
    assert _run(path, tmp_path, "--set", "train.log_every=3") == 0
    assert "0 cell(s) run now, 2 already finished" in capsys.readouterr().out
    # a new learning rate for the add cell only: that cell is new, the other one is kept
    lr = ["--set", "overrides=[{match: {fusion: add}, set: {train.lr: 0.02}}]"]
    assert _run(path, tmp_path, *lr) == 0
    out = capsys.readouterr().out
    assert "1 cell(s) run now, 1 already finished" in out
    assert "1 stored cell(s) outside the grid" in out
    by_cell = CellStore("toy", None, tmp_path / "runs").by_cell()  # the old add cell stays
    assert sorted(t.state.name for ts in by_cell.values() for t in ts) == ["COMPLETE"] * 3
    report = (tmp_path / "reports" / "toy" / "README.md").read_text()
    assert "1 stored cell(s) outside the suite's grid" in report
    assert "Cells: 2 complete, 0 failed, 0 pending, of 2." in report
    assert _run(path, tmp_path, *lr, "--fresh") == 0
    assert "2 cell(s) run now, 0 already finished" in capsys.readouterr().out


def test_profile_section_leaves_out_cells_outside_the_grid(write_suite, tmp_path, capsys):
    from bench.reporting.profile_section import profiled_cells

    path = write_suite(TOY_SUITE.replace("train: {", "stages: [profile]\ntrain: {"))
    assert _run(path, tmp_path) == 0
    lr = ["--set", "overrides=[{match: {fusion: add}, set: {train.lr: 0.02}}]"]
    assert _run(path, tmp_path, *lr) == 0
    store = CellStore("toy", None, tmp_path / "runs")
    ids = {c["id"] for c in load_suite(path, lr[1:]).cells()}
    assert len(profiled_cells(store)) == 3  # the old add cell is kept in the store ...
    assert {cfg["id"] for cfg, _, _ in profiled_cells(store, ids)} == ids  # ... not reported


def test_cuda_device_without_cuda_is_refused_at_load(write_suite, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_suite(TOY_SUITE)
    assert _run(path, tmp_path, "--set", "train.device=cuda") == 2
    err = capsys.readouterr().err
    assert "train.device" in err and "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "toy").exists()  # refused before anything ran


def test_same_seed_same_metrics(write_suite, tmp_path):
    config = load_suite(write_suite(TOY_SUITE)).cells()[1]
    a = train_module.run_cell(config, tmp_path / "a", progress=False)
    b = train_module.run_cell(config, tmp_path / "b", progress=False)
    assert a["metrics"] == b["metrics"]
    assert a["history"]["loss"] == b["history"]["loss"]


def test_interrupted_cell_resumes_exactly(write_suite, tmp_path, monkeypatch):
    config = load_suite(write_suite(TOY_SUITE)).cells()[1]
    reference = train_module.run_cell(config, tmp_path / "ref", progress=False)

    real_save = train_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["iteration"] == 8:
            raise KeyboardInterrupt  # as if killed right after the checkpoint at 8

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_module.run_cell(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed = train_module.run_cell(config, tmp_path / "cut", progress=False)
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["history"]["loss"] == reference["history"]["loss"]


def test_sigkill_mid_suite_loses_and_duplicates_nothing(write_suite, tmp_path):
    text = TOY_SUITE.replace("iterations: 12", "iterations: 60").replace(
        "checkpoint_every: 4", "checkpoint_every: 5").replace("seeds: [0]", "seeds: [0, 1]")
    path = write_suite(text)
    cmd = [sys.executable, str(REPO / "run_bench.py"), str(path), "--runs-dir",
           str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cells_dir = tmp_path / "runs" / "toy" / "cells"
    deadline = time.time() + 120
    killed_in = None
    try:
        while time.time() < deadline and proc.poll() is None:
            states = _states(tmp_path) if (tmp_path / "runs/toy/study.journal").exists() else {}
            done = sum("COMPLETE" in s for s in states.values())
            running = [c for c in cells_dir.glob("*/checkpoint.pt")] if cells_dir.exists() else []
            if done >= 1 and len(running) > done:
                killed_in = states
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_in is not None, "the run finished before it could be killed"
    done_before = {label for label, s in killed_in.items() if "COMPLETE" in s}
    completed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    states = _states(tmp_path)
    assert len(states) == 4
    for label, seq in states.items():
        assert seq.count("COMPLETE") == 1, (label, seq)       # none lost, none duplicated
        if label in done_before:
            assert seq == ["COMPLETE"]                         # finished cells not re-run
    store = CellStore("toy", None, tmp_path / "runs")
    resumed = [t.user_attrs.get("resumed_from") for t in store.trials()
               if t.state.name == "COMPLETE"]
    assert any(r for r in resumed), "the killed cell restarted from scratch"


def test_two_workers_drain_one_suite(write_suite, tmp_path):
    path = write_suite(TOY_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    assert _run(path, tmp_path, "--workers", "2") == 0
    states = _states(tmp_path)
    assert len(states) == 4 and all(s == ["COMPLETE"] for s in states.values())


def test_run_refuses_broken_real_data_before_training(tmp_path, capsys):
    """A real dataset with a missing modality file stops the run before any cell trains."""
    from tests.helpers.native_data import make_mfnet

    root = tmp_path / "MFNet"
    make_mfnet(root, layout="sigma", full_size=None)
    victim = sorted((root / "Modal").glob("*.png"))[0]
    victim.unlink()
    suite = tmp_path / "mfnet.yaml"
    suite.write_text(f"""\
name: mfnet_broken
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{{name: mfnet, root: {root}}}]
train: {{iterations: 2, batch_size: 1}}
""")
    assert _run(suite, tmp_path) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "mfnet_broken" / "cells").exists()


def test_suite_runs_on_a_real_dataset_layout(tmp_path):
    """A suite names a real dataset with root: and runs end to end (tiny MFNet fixture)."""
    from tests.helpers.native_data import make_mfnet

    root = tmp_path / "MFNet"
    make_mfnet(root, layout="sigma", full_size=None)
    suite = tmp_path / "mfnet.yaml"
    suite.write_text(f"""\
name: mfnet_tiny
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{{name: mfnet, root: {root}}}]
train: {{iterations: 2, batch_size: 2, threads: 1}}
eval: {{protocol: {{mode: slide, crop: [8, 8], stride_rate: 0.667, windows: sigma}},
        corruptions: [clean, x_missing]}}
profile: {{samples: 2, warmup: 0, min_time_s: 0, max_time_s: 0}}
""")
    assert _run(suite, tmp_path) == 0
    report = (tmp_path / "reports" / "mfnet_tiny" / "README.md").read_text()
    assert "protocol: slide 8×8/6." in report and "| dualcnn | nano   | add" in report
