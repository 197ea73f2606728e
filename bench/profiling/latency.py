"""Latency, throughput and peak memory of one model, with the run settings on every row.

Timing follows docs/profiling.md: warm-up calls first (allocator, autotuning, compilation), then
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
import functools
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


def _timed_window(fn: Callable[[], Any], samples: int, device: torch.device) -> list[float]:
    """Milliseconds of ``samples`` consecutive calls, each synchronised."""
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


def warm_up(fn: Callable[[], Any], calls: int, seconds: float, device: torch.device) -> int:
    """At least ``calls`` untimed calls and, when ``calls`` > 0, at least ``seconds`` of them
    (allocator, caches, autotuning and the CPU's clock settle by time, not by count; a paper-
    size forward of several seconds still warms up once). Returns the number of calls."""
    start, done = time.perf_counter(), 0
    while done < calls or (calls > 0 and time.perf_counter() - start < seconds):
        fn()
        done += 1
    synchronize(device)
    return done


def time_windows(fn: Callable[[], Any], warmup: int, samples: int, device: torch.device,
                 warmup_s: float = 0.0, min_time_s: float = 0.0, max_windows: int = 1,
                 max_time_s: float | None = None, quiet_ratio: float | None = None,
                 between_windows: Callable[[], Any] | None = None) -> list[list[float]]:
    """After warm-up, windows of ``samples`` consecutive timed calls: at least one, at least
    ``min_time_s`` of timed calls, then more until a *quiet* window, one whose median is within
    ``quiet_ratio`` of the fastest call seen, or until ``max_time_s`` (or ``max_windows``).

    Why: on a shared or virtualised CPU a neighbour's load slows every call by up to 2x for
    stretches of one to ten seconds (measured on this project's 2-core VM: Sigma nano ran at
    17 ms in some processes and 26-30 ms for all of 8 s in others), so the median of one short
    run says how busy the host was. Timing until a quiet stretch and summarising the quietest
    window (``summarise_windows``) is timeit's min-of-repeats rule applied to window medians;
    replayed on six 8-s traces per model, the runs that found a quiet window agreed within 4%
    (Sigma nano) and 6% (dualcnn nano), and the runs that found none are flagged rather than
    reported as if they had.
    ``between_windows`` runs after each window, untimed (the Timer cross-check interleaves its
    windows with ours there, so both clocks see the same stretches of the host's load)."""
    warm_up(fn, warmup, warmup_s, device)
    max_time_s = min_time_s if max_time_s is None else max(max_time_s, min_time_s)
    windows: list[list[float]] = []
    timed_s, best, fastest = 0.0, float("inf"), float("inf")
    while True:
        window = _timed_window(fn, samples, device)
        windows.append(window)
        if between_windows is not None:
            between_windows()
        timed_s += sum(window) / 1e3
        best, fastest = min(best, statistics.median(window)), min(fastest, min(window))
        if len(windows) >= max_windows or timed_s >= max_time_s:
            break
        if timed_s >= min_time_s and (quiet_ratio is None or best <= quiet_ratio * fastest):
            break
    return windows


def time_calls(fn: Callable[[], Any], warmup: int, samples: int,
               device: torch.device) -> list[float]:
    """Milliseconds of ``samples`` calls of ``fn`` after ``warmup`` untimed ones (one window)."""
    return time_windows(fn, warmup, samples, device)[0]


def summarise(times: list[float], prefix: str = "latency_ms") -> dict[str, Any]:
    q1, q3, p90 = np.percentile(times, [25, 75, 90])
    prefix_samples = prefix.replace("_ms", "") + "_samples"
    out = {f"{prefix}_median": float(statistics.median(times)), f"{prefix}_iqr": float(q3 - q1),
           f"{prefix}_p90": float(p90), f"{prefix}_mean": float(statistics.fmean(times)),
           f"{prefix}_min": float(min(times)), prefix_samples: len(times)}
    if len(times) < MIN_SAMPLES:
        out[f"{prefix}_note"] = f"{len(times)} samples (< {MIN_SAMPLES}): reduced for cost"
    return out


def summarise_windows(windows: list[list[float]], prefix: str = "latency_ms",
                      quiet_ratio: float | None = None) -> dict[str, Any]:
    """``summarise`` of the quietest window (lowest median), plus what all windows together
    say: ``<stem>_windows``; ``<prefix>_median_all``, the median over every timed call;
    ``<stem>_drift`` = median_all / quietest median - 1, how much slower the machine was
    outside its quietest stretch (0 with one window, about 0 on a quiet machine);
    ``<prefix>_fastest``, the fastest call; ``<stem>_contention`` = quietest median / fastest
    call - 1; and with ``quiet_ratio``, ``<stem>_quiet``: whether the quietest window was
    within that ratio of the fastest call (False: the host was busy throughout)."""
    best = min(windows, key=statistics.median)
    out = summarise(best, prefix)
    stem = prefix.replace("_ms", "")
    every = [t for window in windows for t in window]
    median_all = float(statistics.median(every))
    fastest = float(min(every))
    out[f"{stem}_windows"] = len(windows)
    out[f"{prefix}_median_all"] = median_all
    out[f"{stem}_drift"] = median_all / out[f"{prefix}_median"] - 1.0
    out[f"{prefix}_fastest"] = fastest
    out[f"{stem}_contention"] = out[f"{prefix}_median"] / fastest - 1.0 if fastest > 0 else 0.0
    if quiet_ratio is not None:
        out[f"{stem}_quiet"] = bool(out[f"{prefix}_median"] <= quiet_ratio * fastest)
    out[f"{stem}_protocol"] = (f"median of the quietest of {len(windows)} window(s) of "
                               f"{len(best)} consecutive calls")
    return out


class TimerCrossCheck:
    """The same call timed by ``torch.utils.benchmark.Timer`` (its own clock, and its own CUDA
    synchronisation on a GPU): one ``Timer.timeit(samples)`` window after each of the
    profiler's windows (``time_windows(between_windows=check)``), the quietest taken, as the
    profiler does. Timer gives a mean per call per window, so the ratio compares our
    quietest-window median with Timer's quietest-window mean."""

    def __init__(self, fn: Callable[[], Any], samples: int):
        from torch.utils.benchmark import Timer

        self.samples = samples
        self.timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        self.means: list[float] = []

    def __call__(self) -> None:
        self.means.append(self.timer.timeit(self.samples).mean * 1e3)

    def result(self, profiler_ms: float) -> dict[str, Any]:
        if not self.means:
            self()
        return timer_check_result(self.means, self.samples, profiler_ms)


def timer_check_result(means: list[float], samples: int, profiler_ms: float) -> dict[str, Any]:
    best = min(means)
    return {"timer_ms": best, "profiler_ms": profiler_ms, "ratio": profiler_ms / best,
            "windows": len(means), "samples": samples,
            "method": "torch.utils.benchmark.Timer.timeit(samples) after each profiler window; "
                      "the quietest window's mean per call"}


def inference_fn(model: nn.Module, inputs: dict[str, torch.Tensor], precision: str,
                 device: torch.device) -> Callable[[], Any]:
    def call():
        with torch.inference_mode(), autocast_context(precision, device.type):
            return model(inputs)
    return call


def time_inference(model: nn.Module, inputs: dict[str, torch.Tensor], precision: str,
                   device: torch.device, warmup: int, samples: int, timer_check: bool = False,
                   **plan) -> tuple[list[list[float]], TimerCrossCheck | None]:
    """``time_windows`` of ``model(inputs)`` in inference mode, with the Timer cross-check
    interleaved when asked: the one timing routine of the profiling process and of
    ``bench/profiling/child.py``."""
    call = inference_fn(model, inputs, precision, device)
    check = TimerCrossCheck(call, samples) if timer_check else None
    return time_windows(call, warmup, samples, device, **plan, between_windows=check), check

def measure_latency(model: nn.Module, inputs: dict[str, torch.Tensor], warmup: int,
                    samples: int, device: str | torch.device = "cpu",
                    precision: str = "fp32", **plan) -> dict[str, Any]:
    """Batch latency of ``model(inputs)`` in inference mode: median / IQR / p90 in ms of the
    quietest window. ``plan``: ``time_windows``'s keywords (default: one window)."""
    device = torch.device(device)
    windows, _ = time_inference(model, inputs, precision, device, warmup, samples, **plan)
    return summarise_windows(windows, quiet_ratio=plan.get("quiet_ratio"))


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
                     settings: dict, known: dict[int, list[list[float]]] | None = None,
                     **plan) -> list[dict[str, Any]]:
    """Samples per second at each batch size, timed as ``time_windows`` does. A batch that runs
    out of memory is halved until it fits (timm's back-off, by halving); the row records what
    was asked, what ran and every size that failed. ``known`` maps batch sizes already timed to
    their windows (no re-run)."""
    rows = []
    for requested in batch_sizes:
        size, failed, times, error = requested, [], None, None
        while True:
            try:
                if known and size in known:
                    times = known[size]
                else:
                    batch = batch_of(inputs, size, settings.get("channels_last", False))
                    times, _ = time_inference(model, batch, precision, device, warmup,
                                              samples, **plan)
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
            stats = summarise_windows(times, "step_ms", plan.get("quiet_ratio"))
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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def steady_heap(enabled: bool = True):
    """Keep freed memory in the process while timing. By default glibc hands large blocks
    back to the OS on free (mmap'ed blocks, a trimmed heap top), so every forward faults its
    activations in again: several hundred page faults per call for Sigma nano at 128x128 on
    this VM, 15-70% of its time and most of its spread. Raising both thresholds reuses memory,
    as a long-running server with jemalloc does (``torch.backends.xeon.run_cpu`` preloads
    jemalloc with dirty/muzzy decay switched off for the same reason). Yields what was set (None
    where glibc is absent); on exit the thresholds go back to what glibc's dynamic thresholds
    reach for PyTorch workloads (mmap 32 MiB, trim 64 MiB), so the next free above 64 MiB
    trims the heap as usual (no explicit trim here: it costs ~0.1 s of harness time)."""
    libc = _libc() if enabled and sys.platform.startswith("linux") else None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        yield None
        return
    big = 1 << 30
    mmap_set = big if mallopt(_M_MMAP_THRESHOLD, big) else (32 << 20) * bool(
        mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    trim_set = big if mallopt(_M_TRIM_THRESHOLD, big) else 0
    try:
        yield (f"glibc, freed memory kept while timing (mallopt mmap threshold "
               f"{mmap_set >> 20} MiB, trim threshold {trim_set >> 20} MiB)"
               if mmap_set and trim_set else None)
    finally:
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that the resident set
    before a call is what is live, not what earlier cells freed but the allocator kept."""
    import gc

    gc.collect()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


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
