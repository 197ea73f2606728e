"""Train and evaluate one cell.

Reproducibility: every seed is set from the cell's seed, deterministic algorithms are requested,
the batch order of epoch e is a permutation drawn from a generator seeded by (seed, e), every
training item is drawn under its own RNG seed, a function of (seed, e, index) (``SeededItems``:
augmentation, modality dropout and misregistration do not depend on which items came before or
on the DataLoader's workers), DataLoaders draw their worker seeds from their own generator,
never from the global RNG, and the thread count is fixed per cell; the same cell on the same
machine and build gives bit-identical metrics (across CPU models they differ slightly: README
"Reruns and determinism").
Resumability: a checkpoint (model, optimiser, schedule, every RNG stream, history) is written
atomically every ``checkpoint_every`` iterations; a killed cell restarts from it and, because the
batch order and every item are functions of the iteration, and the global RNG (dropout, drop
path) is restored, continues exactly where it stopped: every logged loss, validation and
metric equals the uninterrupted run's.
Under torchrun (bench/run/distributed.py) each rank trains on its slice of every global batch with
DDP and synchronised BatchNorm; evaluation is sharded and summed; rank 0 alone writes
checkpoints and profiles.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, default_collate
from tqdm.auto import tqdm

import models
from bench.config.schema import CellConfig, TrainSpec
from bench.data import build_dataset
from bench.evaluation.metrics import ConfusionMeter, ReferringMeter
from bench.evaluation.protocols import describe, infer
from bench.results import tracking
from bench.run import distributed
from bench.run.cell_build import build_model, dataset_info
from models.errors import UserError


class CellError(UserError):
    """A cell that cannot go on (NaN loss, bad data): recorded as failed, the suite goes on."""


class Pruned(Exception):
    """Raised when a search pruner stops a cell early."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CellError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


class EpochBatchSampler(Sampler):
    """Batches of a per-epoch permutation seeded by (seed, epoch), starting at any iteration."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int, total: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.total = start, total
        self.per_epoch = max(1, size // batch_size)

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        perm, perm_epoch = None, -1
        for it in range(self.start, self.total):
            epoch, pos = divmod(it, self.per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm, perm_epoch = torch.randperm(self.size, generator=gen).tolist(), epoch
            batch = [(index, epoch) for index in perm[pos * self.batch_size:
                                                      (pos + 1) * self.batch_size]]
            yield distributed.batch_slice(batch) if distributed.active() else batch


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of training item ``index`` in epoch ``epoch`` of a cell seeded ``seed``."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, epoch, index]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


class SeededItems(torch.utils.data.Dataset):
    """Training items keyed by ``(index, epoch)``, each drawn with the global torch, numpy and
    python RNGs seeded by ``item_seed`` and restored afterwards. Datasets draw their random
    augmentation from the global torch RNG (bench/data/transforms.py); seeded per item, what an
    item looks like no longer depends on the items drawn before it, on the DataLoader worker
    that draws it, or on where a resumed run started."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, epoch = key
        seed = item_seed(self.seed, epoch, index)
        numpy_state, python_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what torch.manual_seed seeds first, so the same stream):
            # torch.manual_seed also queues a lazy seeding of every accelerator backend, which
            # records a Python stack each time, ~4 ms per item on a CPU
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % 2 ** 32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(numpy_state)
                random.setstate(python_state)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: it draws the workers' base seed when an iterator starts,
    which would otherwise be a draw from the global RNG (one more on every resume)."""
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict:
    """Every RNG stream that affects a result and a checkpoint restores: the global torch (and
    CUDA) generators that dropout and drop path draw from, numpy and python. The batch order
    and the items are functions of (seed, epoch, index), and a DataLoader's own generator only
    picks its workers' base seeds, which no item depends on (``SeededItems``): none has state
    to keep."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def lr_factor(train: TrainSpec, total: int) -> Callable[[int], float]:
    """Warm-up then poly / cosine / constant, per iteration (Sigma's WarmUpPolyLR form:
    linear warm-up, then lr * (1 - (it - warmup) / (total - warmup)) ** power)."""
    warmup, ratio, base = train.warmup_iters, train.warmup_ratio, train.lr
    floor = train.min_lr / base

    def factor(it: int) -> float:
        if it < warmup:
            return ratio + (1 - ratio) * it / warmup
        progress = min(1.0, (it - warmup) / max(1, total - warmup))
        if train.schedule == "poly":
            return floor + (1 - floor) * (1 - progress) ** train.poly_power
        if train.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if train.schedule == "step":
            return train.gamma ** sum(it >= m for m in train.milestones)
        return 1.0

    return factor


def make_optimizer(model: torch.nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    groups = models.param_groups(model, train.weight_decay, train.param_groups)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def split_batch(batch: dict, modalities) -> tuple[dict, torch.Tensor]:
    return {k: batch[k] for k in modalities if k in batch}, batch["label"]


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_cell(cell: CellConfig, model: torch.nn.Module, info, workdir: Path, device: torch.device,
               on_validation: Callable[[int, float], bool] | None = None,
               progress: bool = True) -> dict:
    """Train ``model`` for the cell; returns the training history."""
    train = cell.train
    dataset = build_dataset(cell.dataset.name, split="train",
                            augment=train.augment or None, **cell.dataset.loader_options)
    if len(dataset) < train.batch_size:
        raise CellError(f"the train split has {len(dataset)} samples, fewer than one batch of "
                        f"{train.batch_size}")
    per_epoch = max(1, len(dataset) // train.batch_size)
    total = train.iterations or (train.epochs or 1) * per_epoch
    if distributed.active():  # before the optimiser: the synchronised BN has new parameters
        distributed.batch_slice(list(range(train.batch_size)))  # refuses an uneven split
        distributed.sync_batchnorm(model, device)
    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train, total))
    history: dict[str, list] = {"iteration": [], "loss": [], "lr": [], "val_iteration": [],
                                "val_mIoU": []}
    start, running_loss = 0, 0.0
    ckpt_path = workdir / "checkpoint.pt"
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history, start = state["history"], state["iteration"]
        running_loss = state["running_loss"]
    if start >= total:
        return {"history": history, "iterations": total, "resumed_from": start}

    sampler = EpochBatchSampler(len(dataset), train.batch_size, cell.seed, start, total)
    loader = DataLoader(SeededItems(dataset, cell.seed), batch_sampler=sampler,
                        num_workers=train.num_workers, collate_fn=default_collate,
                        generator=loader_generator(cell.seed))
    use_amp = train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    model.train()
    step = distributed.wrap(model, device) if distributed.active() else model.forward_train
    bar = tqdm(total=total, initial=start, desc="  iterations", leave=False, disable=not progress,
               dynamic_ncols=True)
    it = start
    running = running_loss
    tracker = tracking.open_tracker(cell, workdir, start, device, distributed.is_main())
    for batch in loader:
        inputs, target = split_batch(to_device(batch, device), model.modalities)
        state = {"iteration": it, "max_iters": total, "epoch": it // per_epoch + 1,
                 "max_epochs": math.ceil(total / per_epoch)}
        with torch.autocast(device.type, enabled=use_amp):
            losses = step(inputs, target, state)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise CellError(f"loss became {loss.item()} at iteration {it}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if train.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        it += 1
        running += loss.item()
        bar.update(1)
        if tracker is not None:
            tracker.step(it, losses, scheduler.get_last_lr()[0])
        if it % train.log_every == 0 or it == total:
            n = it % train.log_every or train.log_every
            history["iteration"].append(it)
            history["loss"].append(distributed.mean(running / n))
            history["lr"].append(scheduler.get_last_lr()[0])
            history["loss_terms"] = [k for k in losses if k != "loss"]  # report: curve panels
            bar.set_postfix(loss=f"{running / n:.3f}")
            running = 0.0
        if train.val_every and (it % train.val_every == 0 or it == total):
            # the last validation is the search objective val_mIoU; pruning stops before it
            miou = validate(cell, model, info, device)
            history["val_iteration"].append(it)
            history["val_mIoU"].append(miou)
            if tracker is not None:
                tracker.validation(it, miou)
            model.train()
            stop = on_validation(it, miou) if on_validation is not None else False
            if distributed.agree(stop) and it < total:
                raise Pruned(f"pruned at iteration {it} (val mIoU {miou:.2f})")
        if (it % train.checkpoint_every == 0 or it == total) and distributed.is_main():
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": it, "history": history,
                "running_loss": running, "rng": rng_state()})
    bar.close()
    if tracker is not None:
        tracker.close()
    return {"history": history, "iterations": total, "resumed_from": start}


@torch.no_grad()
def evaluate_split(cell: CellConfig, model: torch.nn.Module, info, device: torch.device,
                   split: str, corruption: str | None, max_samples: int | None = None) -> dict:
    ev = cell.eval
    dataset = build_dataset(cell.dataset.name, split=split, augment=None,
                            corruption=corruption, **cell.dataset.loader_options)
    if max_samples:
        dataset = torch.utils.data.Subset(dataset, range(min(max_samples, len(dataset))))
    samples = len(dataset)
    referring = info.task == "referring"
    sharded = distributed.active() and not referring  # confusion matrices add over shards
    if sharded:
        dataset = torch.utils.data.Subset(dataset, range(distributed.rank(), samples,
                                                         distributed.world_size()))
    loader = DataLoader(dataset, batch_size=ev.batch_size, shuffle=False,
                        num_workers=cell.train.num_workers,
                        generator=loader_generator(cell.seed))
    model.eval()
    protocol = ev.protocol or info.protocol
    meter = ReferringMeter() if referring else ConfusionMeter(info.num_classes, info.ignore_index)
    for batch in loader:
        inputs, target = split_batch(to_device(batch, device), model.modalities)
        scores = infer(model, inputs, info.num_classes, protocol)
        pred = (scores[:, 0] > 0) if referring else scores.argmax(1)
        meter.update(pred, target)
    if referring:
        out = meter.compute()
    else:
        if sharded:
            meter.matrix = distributed.sum_tensor(meter.matrix)
        out = meter.compute(info.eval_classes, list(info.classes))
        out["confusion"] = meter.matrix.tolist()
    out["protocol"] = describe(protocol)
    out["samples"] = samples
    return out


def validate(cell: CellConfig, model, info, device) -> float:
    train = cell.train
    result = evaluate_split(cell, model, info, device, train.val_split, None,
                            train.val_max_samples)
    return result["mIoU"]


def evaluate_cell(cell: CellConfig, model, info, device, progress: bool = True) -> dict:
    """Metrics on the test split and on every robustness set named in the suite."""
    out = {}
    corruptions = cell.eval.corruptions
    for name in tqdm(corruptions, desc="  eval", leave=False, disable=not progress):
        out[name] = evaluate_split(cell, model, info, device, cell.eval.split,
                                   None if name == "clean" else name, cell.eval.max_samples)
    return out


def example_inputs(cell: CellConfig, info, device: torch.device) -> dict[str, torch.Tensor]:
    """Batch-1 inputs for profiling at ``profile.input_size`` (or the eval sample's size)."""
    size = cell.profile.input_size
    if size is None:
        sample = build_dataset(cell.dataset.name, split=cell.eval.split,
                               augment=None, **cell.dataset.loader_options)[0]
        size = list(sample["label"].shape[-2:])
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, channels in info.modalities.items():
        if name == "text":
            out[name] = torch.randint(1, 10, (1, channels), generator=gen).to(device)
        else:
            out[name] = torch.randn(1, channels, *size, generator=gen).to(device)
    return out


def run_cell(config: dict, workdir: Path, on_validation=None,
             progress: bool = True) -> dict[str, Any]:
    """Every stage of one cell; returns what the store keeps."""
    from bench.profiling.machine import fingerprint
    from bench.profiling.profiler import ProfileError, profile_model

    cell = CellConfig.model_validate(config)  # the stored dict, read typed from here on
    train = cell.train
    threads = train.threads
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cell.seed)
    device = distributed.local_device(pick_device(train.device))
    info = dataset_info(cell)
    model = build_model(cell, info).to(device)
    result: dict[str, Any] = {"timing": {}, "artifacts": {"dir": str(workdir)}}
    if cell.init is not None:  # pretrained / released weights (bench/run/checkpoints.py)
        from bench.run.checkpoints import apply_init

        result["init"] = apply_init(cell, model)
    result["env"] = fingerprint(str(device), torch.get_num_threads(),
                                "amp" if train.amp and device.type == "cuda" else "fp32")
    stages = cell.stages
    if "train" in stages:
        start = time.perf_counter()
        trained = train_cell(cell, model, info, workdir, device, on_validation, progress)
        result["timing"]["train_s"] = time.perf_counter() - start
        result["history"] = trained["history"]
        result["iterations"] = trained["iterations"]
        result["resumed_from"] = trained["resumed_from"]
        result["artifacts"]["checkpoint"] = str(workdir / "checkpoint.pt")
    if "eval" in stages:
        start = time.perf_counter()
        result["metrics"] = evaluate_cell(cell, model, info, device, progress)
        if distributed.is_main():
            tracking.log_test_metrics(cell, workdir, result["metrics"],
                                      result.get("iterations", 0))
        result["timing"]["eval_s"] = time.perf_counter() - start
    if "profile" in stages and distributed.is_main():  # latency of one process, alone
        start = time.perf_counter()
        try:
            result["profile"] = profile_model(model, example_inputs(cell, info, device),
                                              cell.profile, device)
        except ProfileError as exc:  # keep the metrics; the store records the cell as failed
            result["profile"] = exc.result
            result["error"] = f"profile: {exc}"
        result["timing"]["profile_s"] = time.perf_counter() - start
    return result
