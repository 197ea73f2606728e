"""torchrun / DDP support for training one cell on several processes.

``torchrun --nproc-per-node N run_bench.py SUITE`` starts N copies of the runner. Rank 0 alone
talks to the store (sync, claim, record, report) and broadcasts each claimed cell to the other
ranks; every rank trains it on its slice of each global batch (``train.batch_size`` is the
global batch, split evenly, so N processes see the same samples per step as one process), and
rank 0 alone writes checkpoints, metrics and the profile. The backend is NCCL on CUDA and gloo
on the CPU.

BatchNorm statistics are synchronised over the global batch: torch's ``SyncBatchNorm`` on CUDA,
``GlooSyncBatchNorm`` below on the CPU (torch's refuses CPU tensors). With the batch split and
the statistics synchronised, a step on N processes computes the same update as a step on one
process, up to the order of floating-point sums.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn


def launched() -> bool:
    """True in a process started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device_type: str = "cpu") -> bool:
    """Join the process group torchrun set up (env://); a no-op outside torchrun."""
    if not launched() or active():
        return active()
    backend = "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return True


def shutdown() -> None:
    """Leave the process group at the end of a run (every rank); a no-op outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Each rank's GPU under torchrun (LOCAL_RANK); the CPU stays the CPU."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(flag: bool) -> bool:
    """Rank 0's decision (e.g. a pruner's) on every rank, so all ranks stop together."""
    return bool(broadcast_object(bool(flag)))


def barrier() -> None:
    if active():
        dist.barrier()


def mean(value: float) -> float:
    """The mean of a per-rank scalar over ranks (the logged training loss)."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a sharded evaluation's confusion matrix)."""
    if not active():
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def batch_slice(indices: list[int]) -> list[int]:
    """This rank's contiguous share of a global batch of indices."""
    n, r = world_size(), rank()
    if len(indices) % n:
        raise ValueError(f"the global batch of {len(indices)} does not split over {n} ranks; "
                         f"make train.batch_size a multiple of the number of processes")
    share = len(indices) // n
    return indices[r * share:(r + 1) * share]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the incoming gradients: each
    rank's statistics feed every rank's loss."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the global batch on every rank.

    Mean and biased variance normalise (as ``nn.BatchNorm2d``); the running variance gets the
    unbiased estimate with the global count. The per-channel sums travel through an
    all-reduce whose backward all-reduces their gradients, so gradients flow to every rank's
    inputs as in torch's SyncBatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(
                    momentum * var.detach() * n.detach() / (n.detach() - 1))
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one (weights and buffers kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        if type(module) is nn.BatchNorm2d:
            new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                    module.affine, module.track_running_stats)
            new.load_state_dict(module.state_dict())
            new.train(module.training)
            return new
        for name, child in module.named_children():
            setattr(module, name, convert(child))
        return module

    return convert(model)


class TrainStep(nn.Module):
    """``forward`` = the model's ``forward_train``: DDP synchronises gradients of what runs
    through ``forward``, and the training losses live in ``forward_train``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs, target, state):
        return self.model.forward_train(inputs, target, state)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The DDP training step for ``model`` (parameters broadcast from rank 0). Unused
    parameters are allowed: an rgb_only fusion leaves the X stream without gradients."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(TrainStep(model), device_ids=ids,
                                   find_unused_parameters=True)
