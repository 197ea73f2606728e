"""Latency, throughput and peak memory of one model, with the run settings on every row.

Timing follows harness.md §6: warm-up calls first (allocator, autotuning, compilation), then
``samples`` timed calls, each synchronised (CUDA events on a GPU, ``perf_counter`` on the CPU),
summarised by median, IQR and p90 rather than a mean (pytest-benchmark's advice for noisy
machines). The settings that flipped rankings in VMamba#172 (TF32, channels-last, precision,
threads, compile) are recorded with every row.

Memory: on a GPU the caching allocator's peak (``max_memory_allocated`` after
``reset_peak_memory_stats``); on the CPU the process's peak resident set, read as ``VmHWM``
after resetting the high-water mark through ``/proc/self/clear_refs`` (Linux ≥ 4.0), so the
figure belongs to the measured call rather than the process's lifetime. Where the reset is not
possible ``ru_maxrss`` is reported, named as the lifetime high-water mark it is.
"""
from __future__ import annotations

import contextlib
import copy
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

#: the issue's floor for a latency figure; fewer samples are allowed but flagged in the result
MIN_SAMPLES = 30


# ----------------------------------------------------------------------------- settings


def autocast_context(precision: str, device_type: str):
    """fp32: nothing; amp: float16 autocast on a GPU (bfloat16 on the CPU, which has no fp16
    autocast worth timing); bf16: bfloat16 autocast on either."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "amp":
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    elif precision == "bf16":
        dtype = torch.bfloat16
    else:
        raise ValueError(f"unknown precision {precision!r}; use fp32, amp or bf16")
    return torch.autocast(device_type, dtype=dtype)


def run_settings(device: torch.device, precision: str, channels_last: bool,
                 compiled: bool) -> dict[str, Any]:
    """What every latency / throughput row is stamped with."""
    settings = {"device": str(device), "threads": torch.get_num_threads(),
                "precision": precision, "channels_last": channels_last, "compile": compiled,
                "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda"
                else False}
    if device.type == "cuda":
        settings["cudnn_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        settings["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return settings


def to_channels_last(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
            for k, v in inputs.items()}


def batch_of(inputs: dict[str, torch.Tensor], batch_size: int,
             channels_last: bool = False) -> dict[str, torch.Tensor]:
    """The batch-1 example repeated to ``batch_size`` (contiguous, so the model sees real
    memory, not a broadcast view)."""
    batch = {k: v[:1].expand(batch_size, *v.shape[1:]).contiguous() for k, v in inputs.items()}
    return to_channels_last(batch) if channels_last else batch


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], warmup: int, samples: int,
               device: torch.device) -> list[float]:
    """Milliseconds of ``samples`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    if device.type == "cuda":
        for _ in range(samples):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarise(times: list[float], prefix: str = "latency_ms") -> dict[str, Any]:
    q1, q3, p90 = np.percentile(times, [25, 75, 90])
    prefix_samples = prefix.replace("_ms", "") + "_samples"
    out = {f"{prefix}_median": float(statistics.median(times)), f"{prefix}_iqr": float(q3 - q1),
           f"{prefix}_p90": float(p90), f"{prefix}_mean": float(statistics.fmean(times)),
           f"{prefix}_min": float(min(times)), prefix_samples: len(times)}
    if len(times) < MIN_SAMPLES:
        out[f"{prefix}_note"] = f"{len(times)} samples (< {MIN_SAMPLES}): reduced for cost"
    return out


def inference_fn(model: nn.Module, inputs: dict[str, torch.Tensor], precision: str,
                 device: torch.device) -> Callable[[], Any]:
    def call():
        with torch.inference_mode(), autocast_context(precision, device.type):
            return model(inputs)
    return call


def measure_latency(model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int,
                    samples: int, device: str | torch.device = "cpu",
                    precision: str = "fp32") -> dict[str, Any]:
    """Batch latency of ``model(inputs)`` in inference mode: median / IQR / p90 in ms."""
    device = torch.device(device)
    times = time_calls(inference_fn(model, inputs, precision, device), warmup, samples, device)
    return summarise(times)


# ----------------------------------------------------------------------------- throughput


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def throughput_sweep(model: nn.Module, inputs: dict[str, torch.Tensor], batch_sizes: list[int],
                     warmup: int, samples: int, device: torch.device, precision: str,
                     settings: dict, known: dict[int, list[float]] | None = None
                     ) -> list[dict[str, Any]]:
    """Samples per second at each batch size. A batch that runs out of memory is halved until
    it fits (timm's back-off, by halving); the row records what was asked, what ran and every
    size that failed. ``known`` maps batch sizes already timed to their times (no re-run)."""
    rows = []
    for requested in batch_sizes:
        size, failed, times, error = requested, [], None, None
        while True:
            try:
                if known and size in known:
                    times = known[size]
                else:
                    batch = batch_of(inputs, size, settings.get("channels_last", False))
                    times = time_calls(inference_fn(model, batch, precision, device), warmup,
                                       samples, device)
                break
            except Exception as exc:  # noqa: BLE001 - only OOM is retried
                if not is_oom(exc):
                    raise
                failed.append(size)
                _free_cache(device)
                if size == 1:
                    error = f"out of memory at batch 1: {exc}"
                    break
                size = max(1, size // 2)
        row = {"batch_size_requested": requested, "batch_size": size if times else None,
               "oom_batch_sizes": failed, **settings}
        if times:
            stats = summarise(times, "step_ms")
            row.update(stats)
            row["samples_per_s"] = size / stats["step_ms_median"] * 1e3
        else:
            row["error"] = error
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- memory

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that the resident set
    before a call is what is live, not what earlier cells freed but the allocator kept."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    _trim_heap()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _ru_maxrss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory while ``fn`` runs: ``peak_mb`` (absolute) and ``delta_mb`` (above what was
    held before the call), with the method named."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / 2 ** 20, "delta_mb": (peak - base) / 2 ** 20,
                "method": "cuda max_memory_allocated (allocator peak, reset before the call)"}
    if _reset_rss_peak() and _status_kb("VmHWM") is not None:
        base = _status_kb("VmRSS")
        fn()
        peak = _status_kb("VmHWM")
        return {"peak_mb": peak / 1024, "delta_mb": (peak - base) / 1024,
                "method": "process peak RSS (VmHWM; heap trimmed and high-water mark reset "
                          "before the call)"}
    before = _ru_maxrss_mb()
    fn()
    peak = _ru_maxrss_mb()
    return {"peak_mb": peak, "delta_mb": peak - before,
            "method": "ru_maxrss (process-lifetime high-water mark, not resettable here: peak_mb "
                      "may predate the call; delta_mb is a lower bound)"}


# ----------------------------------------------------------------------------- training step


def train_step_fn(model: nn.Module, inputs: dict[str, torch.Tensor], target: torch.Tensor,
                  precision: str, device: torch.device) -> tuple[Callable[[], Any], nn.Module]:
    """One optimiser step (forward_train, backward, AdamW) on a copy of ``model``, so profiling
    never changes the weights or normalisation statistics of the model it was given."""
    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=1e-6)
    state = {"iteration": 0, "max_iters": 1, "epoch": 1, "max_epochs": 1}

    def step():
        with autocast_context(precision, device.type):
            if hasattr(trainee, "forward_train"):
                loss = trainee.forward_train(inputs, target, state)["loss"]
            else:
                loss = torch.nn.functional.cross_entropy(trainee(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step, trainee
