"""Live tracking: a 1-cell run writes TensorBoard events (every loss term, lr, throughput,
memory, validation and test metrics, hyper-parameters) read back with TensorBoard's own
EventAccumulator; --no-tensorboard writes none; a grid cell's validations reach its Optuna
trial as intermediate values (what optuna-dashboard plots live); a resumed cell does not repeat
steps."""
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bench.cli import main
from bench.results.store import CellStore
from bench.results.tracking import ENV_SWITCH, Tracker
from tests.helpers.suites import TOY_SUITE

ONE_CELL = (TOY_SUITE.replace("fusions: [rgb_only, add]", "fusions: [add]")
            .replace("checkpoint_every: 4}", "checkpoint_every: 4, val_every: 6, log_every: 4}")
            .replace("report: {baseline: {fusion: rgb_only}}\n", "")  # no rgb_only cell
            + "stages: [train, eval]\n")


def _run(path, tmp_path, *extra):
    return main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress", "--no-report", *extra])


def _scalars(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_one_cell_run_writes_loss_validation_and_test_scalars(write_suite, tmp_path,
                                                              monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert _run(write_suite(ONE_CELL), tmp_path) == 0
    runs = list((tmp_path / "runs" / "toy" / "tensorboard").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-dualcnn-nano-add-seed0")
    scalars = _scalars(runs[0])
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 13))   # every iteration
    assert [s for s, _ in scalars["val/mIoU"]] == [6, 12]
    assert {"train/lr", "perf/samples_per_s", "memory/peak_rss_mb",
            "test/clean/mIoU"} <= set(scalars)
    # the last logged loss equals what the store recorded for the same iterations' mean
    store = CellStore("toy", None, tmp_path / "runs")
    (trial,) = store.latest_results()
    history = trial.user_attrs["history"]
    assert history["loss_terms"] == []      # dualcnn's loss is cross-entropy alone
    last = [v for s, v in scalars["train/loss"] if s > 8]
    assert sum(last) / len(last) == pytest.approx(history["loss"][-1], rel=1e-5)
    assert history["val_mIoU"] == pytest.approx([v for _, v in scalars["val/mIoU"]])
    # the grid cell's validations are its trial's intermediate values
    assert trial.intermediate_values == pytest.approx(dict(zip([6, 12], history["val_mIoU"])))
    hparams = [p for p in runs[0].rglob("events.out.tfevents.*")]
    assert hparams, "no event file"


def test_no_tensorboard_writes_no_events(write_suite, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert _run(write_suite(ONE_CELL), tmp_path, "--no-tensorboard") == 0
    assert not (tmp_path / "runs" / "toy" / "tensorboard").exists()
    monkeypatch.delenv(ENV_SWITCH, raising=False)  # the CLI set it for this process


def test_a_resumed_writer_purges_the_steps_it_will_write_again(tmp_path):
    import torch

    from bench.config.schema import CellConfig, EvalSpec, ProfileSpec, TrainSpec

    config = CellConfig(id="abc", model="m", size="s", fusion="f", seed=0, dataset={"name": "d"},
                        stages=["train"], train=TrainSpec(batch_size=2, log_every=2),
                        eval=EvalSpec(), profile=ProfileSpec())
    workdir = tmp_path / "runs" / "suite" / "cells" / "abc"
    first = Tracker(config, workdir, 0, torch.device("cpu"))
    for it in range(1, 7):   # killed after 6 steps; the checkpoint was at 4
        first.step(it, {"loss": torch.tensor(float(it))}, 0.1)
    first.writer.flush()
    second = Tracker(config, workdir, 4, torch.device("cpu"))
    for it in range(5, 9):
        second.step(it, {"loss": torch.tensor(10.0 + it)}, 0.1)
    second.close()
    steps = _scalars(first.dir)["train/loss"]
    assert [s for s, _ in steps] == list(range(1, 9))
    assert [v for _, v in steps] == [1, 2, 3, 4, 15, 16, 17, 18]
