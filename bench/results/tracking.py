"""Live tracking of a running cell: TensorBoard scalars under ``runs/<suite>/tensorboard/<cell>``
(every loss term, the learning rate, throughput, memory, validation and test metrics) with the
cell's hyper-parameters, and validation values reported to the cell's Optuna trial so that
optuna-dashboard draws live curves. ``ssmbench run --no-tensorboard`` (or
``SSMBENCH_TENSORBOARD=0``) turns TensorBoard off.

Browse: ``tensorboard --logdir runs/<suite>/tensorboard``.
"""
from __future__ import annotations

import logging
import os
import re
import resource
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch

from bench.config.schema import CellConfig

log = logging.getLogger("ssmbench")

ENV_SWITCH = "SSMBENCH_TENSORBOARD"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "false", "no", "off")


def log_dir(cell: CellConfig, workdir: Path) -> Path:
    """``runs/<suite>/tensorboard/<cell id>-<model>-<size>-<fusion>-seed<seed>`` (the cell's
    workdir is ``runs/<suite>/cells/<cell id>``)."""
    name = f"{cell.id}-{cell.model}-{cell.size}-{cell.fusion}-seed{cell.seed}"
    name = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name)
    return Path(workdir).parent.parent / "tensorboard" / name


def _hparam(value: Any):
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def hyperparameters(cell: CellConfig) -> dict:
    """The cell's grid keys and every training setting, flat (TensorBoard's HPARAMS tab)."""
    out = {k: _hparam(getattr(cell, k)) for k in ("model", "size", "fusion", "seed")}
    out["dataset"] = _hparam(cell.dataset.model_dump(exclude_none=True))
    for key, value in cell.train.model_dump(mode="json").items():
        out[f"train.{key}"] = _hparam(value)
    return out


def _peak_memory_mb(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "memory/cuda_max_allocated_mb", torch.cuda.max_memory_allocated(device) / 2 ** 20
    # ru_maxrss is in KiB on Linux: the process's peak resident set
    return "memory/peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Tracker:
    """One cell's TensorBoard writer. ``start`` is the iteration training resumes from (its
    checkpoint's): events after it, left by the killed run, are purged (``purge_step``) so no
    step repeats."""

    def __init__(self, cell: CellConfig, workdir: Path, start: int, device: torch.device):
        from torch.utils.tensorboard import SummaryWriter

        self.cell, self.device = cell, device
        self.dir = log_dir(cell, workdir)
        # steps up to the checkpoint (``start``) are kept; later ones are written again
        self.writer = SummaryWriter(str(self.dir), purge_step=start + 1 if start else None)
        # a pruned or failed cell leaves train_cell by an exception: close when dropped
        weakref.finalize(self, self.writer.close)
        self.batch_size = cell.train.batch_size
        self.log_every = cell.train.log_every
        self._since, self._clock = start, time.perf_counter()
        self._last_val: float | None = None

    def step(self, iteration: int, losses: dict, lr: float) -> None:
        """After optimiser step ``iteration`` (1-based): every loss term and the learning rate;
        every ``log_every`` steps, throughput and peak memory."""
        for name, value in losses.items():
            value = value.detach() if torch.is_tensor(value) else value
            self.writer.add_scalar(f"train/{name}", float(value), iteration)
        self.writer.add_scalar("train/lr", lr, iteration)
        if iteration % self.log_every == 0:
            now = time.perf_counter()
            if now > self._clock and iteration > self._since:
                self.writer.add_scalar("perf/samples_per_s", (iteration - self._since) *
                                       self.batch_size / (now - self._clock), iteration)
            self._since, self._clock = iteration, now
            self.writer.add_scalar(*_peak_memory_mb(self.device), iteration)
            self.writer.flush()  # a pruned or killed cell keeps what it logged

    def validation(self, iteration: int, miou: float) -> None:
        self.writer.add_scalar("val/mIoU", miou, iteration)
        self.writer.flush()
        self._last_val = miou

    def close(self) -> None:
        metrics = {"hparam/val_mIoU": self._last_val} if self._last_val is not None else \
            {"hparam/trained": 1.0}
        self.writer.add_hparams(hyperparameters(self.cell), metrics, run_name=".")
        self.writer.close()


def open_tracker(cell: CellConfig, workdir: Path, start: int, device: torch.device,
                 main_process: bool = True) -> Tracker | None:
    """A tracker for this cell, or None when TensorBoard is off or this is not the main rank;
    a writer that cannot start is logged, never fatal to the cell."""
    if not (enabled() and main_process):
        return None
    try:
        return Tracker(cell, workdir, start, device)
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a cell
        log.warning("TensorBoard off for %s: %s", cell.label, exc)
        return None


def log_test_metrics(cell: CellConfig, workdir: Path, metrics: dict, iteration: int) -> None:
    """The cell's test-split metrics (every robustness set) at the last iteration."""
    if not enabled() or not metrics:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir(cell, workdir))) as writer:
        for corruption, values in metrics.items():
            for key in ("mIoU", "mF1", "aAcc", "mAcc", "oIoU"):
                if isinstance(values, dict) and values.get(key) is not None:
                    writer.add_scalar(f"test/{corruption}/{key}", values[key], iteration)


def trial_reporter(claim) -> Callable[[int, float], bool]:
    """``on_validation`` for a grid cell: report each validation mIoU to the cell's Optuna
    trial (optuna-dashboard's intermediate-value plot); never asks to prune. A step already
    reported (a resumed cell) is skipped by Optuna itself."""
    trial = None

    def report(iteration: int, miou: float) -> bool:
        nonlocal trial
        try:
            if trial is None:
                trial = claim.trial
            if len(trial.study.directions) == 1:
                trial.report(miou, iteration)
        except Exception as exc:  # noqa: BLE001 - a storage hiccup must not fail the cell
            log.warning("could not report val mIoU to the study: %s", exc)
        return False

    return report
