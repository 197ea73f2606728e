"""torchrun: two CPU processes (gloo) train one cell with DDP and synchronised BatchNorm and
give the metrics of one process with the same global batch; rank 0 alone records the cell."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.run.train as train_module
from bench.config.suite import load_suite
from bench.results.store import CellStore

REPO = Path(__file__).resolve().parents[2]

SUITE = """\
name: toy_ddp
plugins: [TOY_PLUGIN]
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: toy_rgbx}]
stages: [train, eval]
# SGD: its update is linear in the gradient, so the float-order differences between one and
# two processes stay at 1e-7; AdamW divides by sqrt(v) and lets them grow to ~1e-3 in 12 steps
train: {iterations: 12, batch_size: 8, optimizer: sgd, lr: 0.05, threads: 1,
        checkpoint_every: 4, val_every: 6, log_every: 4}
eval: {corruptions: [clean]}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_matches_one_process(write_suite, tmp_path):
    path = write_suite(SUITE)
    config = load_suite(path).cells()[0]
    single = train_module.run_cell(config, tmp_path / "single", progress=False)

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           str(REPO / "run_bench.py"), str(path), "--runs-dir", str(tmp_path / "runs"),
           "--reports-dir", str(tmp_path / "reports"), "--no-progress", "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    trials = CellStore("toy_ddp", None, tmp_path / "runs").trials()
    assert [t.state.name for t in trials] == ["COMPLETE"]        # recorded once, by rank 0
    ddp = trials[0].user_attrs
    assert ddp["cell_id"] == config["id"]
    assert (tmp_path / "runs/toy_ddp/cells" / config["id"] / "checkpoint.pt").is_file()

    # same samples per step, gradients averaged over ranks, BN statistics over the global
    # batch: equal up to the order of floating-point sums
    assert ddp["history"]["iteration"] == single["history"]["iteration"]
    assert ddp["history"]["loss"] == pytest.approx(single["history"]["loss"], rel=1e-5)
    assert ddp["history"]["val_mIoU"] == pytest.approx(single["history"]["val_mIoU"], abs=1e-3)
    for key in ("mIoU", "aAcc", "mAcc"):
        assert ddp["metrics"]["clean"][key] == pytest.approx(single["metrics"]["clean"][key],
                                                             abs=1e-3), key
    assert ddp["metrics"]["clean"]["samples"] == single["metrics"]["clean"]["samples"]
    # the weights themselves agree
    a = torch.load(tmp_path / "runs/toy_ddp/cells" / config["id"] / "checkpoint.pt",
                   weights_only=False)["model"]
    b = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)["model"]
    for name, tensor in b.items():
        if tensor.is_floating_point():
            assert torch.allclose(a[name], tensor, rtol=1e-4, atol=1e-6), name


def test_one_process_takes_the_whole_batch_and_gloo_bn_is_plain_bn_outside_torchrun():
    from bench.run import distributed

    assert not distributed.active()
    assert distributed.batch_slice([1, 2, 3]) == [1, 2, 3]
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4).train()
    model = distributed.sync_batchnorm(torch.nn.Sequential(bn), torch.device("cpu"))
    assert type(model[0]) is distributed.GlooSyncBatchNorm
    x = torch.randn(3, 4, 5, 5)
    assert torch.equal(model(x), torch.nn.BatchNorm2d(4).train()(x))


def test_torchrun_cell_killed_mid_training_resumes_exactly(write_suite, tmp_path):
    """SIGKILL of torchrun and both ranks after a checkpoint; the rerun resumes the cell and
    stores the uninterrupted torchrun run's losses, validations and metrics, bit for bit.
    SynRGBX draws random augmentation for every item, on whichever rank takes it."""
    from tests.helpers.resume import (
        SUBPROCESS_ENV,
        kill_when_mid_cell,
        resumed_from,
        stored_results,
    )

    text = SUITE.replace("[{name: toy_rgbx}]", "[{name: synrgbx, size: 32, counts: [48, 16, 16]}]"
                         ).replace("plugins: [TOY_PLUGIN]\n", "").replace("iterations: 12",
                                                                           "iterations: 16")
    path = write_suite(text)

    def torchrun(runs: Path) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                str(REPO / "run_bench.py"), str(path), "--runs-dir", str(runs),
                "--no-progress", "--no-report"]

    reference, runs = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run(torchrun(reference), env=SUBPROCESS_ENV, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    kill_when_mid_cell(torchrun(runs), runs, "toy_ddp", after=0)
    done = subprocess.run(torchrun(runs), env=SUBPROCESS_ENV, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(0 < r < 16 for r in resumed_from(runs, "toy_ddp")), resumed_from(runs, "toy_ddp")
    assert stored_results(runs, "toy_ddp") == stored_results(reference, "toy_ddp")


@pytest.mark.parametrize("main_rank", [True, False])
def test_every_rank_leaves_the_process_group_when_the_run_ends(write_suite, tmp_path,
                                                               monkeypatch, main_rank):
    """torch.distributed.destroy_process_group runs at the end of a torchrun run, on rank 0
    (after releasing the others) and on the ranks that followed it."""
    import bench.run.runner as runner
    from bench.run import distributed

    suite = load_suite(write_suite(SUITE))
    left = []
    monkeypatch.setattr(distributed, "init", lambda device_type="cpu": True)
    monkeypatch.setattr(distributed, "is_main", lambda: main_rank)
    monkeypatch.setattr(distributed, "shutdown", lambda: left.append(True))
    monkeypatch.setattr(runner, "follow", lambda: None)
    monkeypatch.setattr(runner, "_run_suite", lambda *args, **kwargs: "rank 0 ran the suite")
    outcome = runner.run_suite(suite, runs_dir=tmp_path / "runs", preflight=False)
    assert left == [True]
    assert (outcome == "rank 0 ran the suite") is main_rank
