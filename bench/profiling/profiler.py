"""Per-cell profiling: parameters, FLOPs in two conventions, latency, throughput, memory and
where the time goes (issue 7; docs/profiling.md).

``profile_model(model, example_inputs, spec, device)`` runs what ``spec`` asks for and returns
one flat-ish dict the store keeps:

    params, params_m
    gmacs_<convention>, flops (by_module, by_operator, unsupported_ops, conventions note)
    flop_cross_check          fvcore vs torch.utils.flop_counter on matmuls and convolutions
    latency_ms_{median,iqr,p90,mean,min}, latency_samples      batch 1, after warm-up, of
                              the quietest timing window; latency_windows, latency_ms_median_all
                              (every timed call) and latency_drift say how steady the machine was
    timer_check               torch.utils.benchmark.Timer on the same call (``timer_check``)
    throughput                one row per requested batch size (OOM back-off recorded)
    peak_mem_mb_{infer,train}, memory_method
    train_step_ms_*           one optimiser step (``train_step: true``)
    breakdown                 {forward|train_step: {scan|cross_scan_merge|conv|other}_share}
    env                       the run settings stamped on every row (threads, precision,
                              channels_last, TF32, compile, device)
    timing                    wall time of the profile, the part spent in measured calls and
                              the harness's own overhead

A cell fails its profile (``ProfileError``, the result kept) when more ops than
``max_unsupported`` had no FLOP handle. The pieces live in flops.py (``count_flops``),
latency.py (``measure_latency``) and breakdown.py.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
import torch.nn as nn

from bench.config.schema import ProfileSpec
from bench.profiling.breakdown import time_breakdown
from bench.profiling.flops import flop_analysis, flop_counter_cross_check
from bench.profiling.latency import (
    inference_fn,
    peak_memory,
    run_settings,
    steady_heap,
    summarise,
    summarise_windows,
    throughput_sweep,
    time_calls,
    time_inference,
    timer_check_result,
    to_channels_last,
    train_step_fn,
)
from models.errors import UserError


class ProfileError(UserError):
    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


FLOP_NOTE = ("fvcore MACs (one multiply-add = one FLOP). published: selective scan and "
             "element-wise ops not counted (the seed repositories' flops()); full: scan counted "
             "as 9*B*L*D*N + B*D*L (+B*D*L with z); cross-scan/merge = 0 in both")


class _Clock:
    """Sums the wall time spent inside the measured calls, to report the harness overhead."""

    def __init__(self):
        self.measured = 0.0

    @contextlib.contextmanager
    def measure(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.measured += time.perf_counter() - start


def _resolve_device(spec: ProfileSpec, device) -> torch.device:
    if spec.device == "auto":
        return torch.device(device)
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise ProfileError("profile.device is 'cuda' but no CUDA device is available")
    return torch.device(spec.device)


def _random_target(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels for a training step: the model contract puts logits at the input resolution, so
    the target shape comes from the first image input (no forward needed)."""
    image = next(v for v in inputs.values() if v.dim() == 4)
    classes = max(2, int(getattr(model, "num_classes", 2) or 2))
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, classes, (image.shape[0], *image.shape[2:]),
                         generator=gen).to(image.device)


def _flops(model, inputs, spec: ProfileSpec, clock: _Clock, result: dict) -> None:
    with clock.measure():
        flops = flop_analysis(model, inputs, spec.conventions, spec.by_module_depth,
                              spec.flop_scan_backend)
    for convention, value in flops["gmacs"].items():
        result[f"gmacs_{convention}"] = value
    result["unsupported_ops"] = flops["unsupported_ops"]
    result["flops"] = {"by_module": flops["by_module"], "by_operator": flops["by_operator"],
                       "unsupported_ops": flops["unsupported_ops"], "note": FLOP_NOTE,
                       "scan_backend": spec.flop_scan_backend}
    if spec.cross_check:
        with clock.measure():
            result["flop_cross_check"] = flop_counter_cross_check(
                model, inputs, flops["by_operator"], spec.flop_scan_backend)


def _compiled(model: nn.Module, spec: ProfileSpec, result: dict) -> nn.Module:
    if not spec.compile:
        return model
    try:
        return torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - compile is optional; eager is measured instead
        result["compile_error"] = f"{type(exc).__name__}: {exc}"
        return model


def _latency(runner, model, inputs, spec, device, settings, clock, result) -> nn.Module:
    """Batch-1 latency and the throughput sweep; returns the module actually timed (eager when
    compilation failed on the first call)."""
    plan = dict(warmup_s=spec.warmup_s, min_time_s=spec.min_time_s,
                max_time_s=spec.max_time_s, quiet_ratio=spec.quiet_ratio,
                max_windows=spec.max_windows)

    def timed(module):
        with clock.measure():
            return time_inference(module, inputs, spec.precision, device, spec.warmup,
                                  spec.samples, spec.timer_check, **plan)
    windows = None
    if spec.processes > 1 and runner is model:
        try:
            with clock.measure():
                _latency_in_processes(model, inputs, spec, device, plan, result)
        except RuntimeError as exc:
            result["latency_processes_error"] = f"{exc}; timed in this process instead"
    if "latency_processes" not in result:
        try:
            windows, check = timed(runner)
        except Exception as exc:  # noqa: BLE001
            if runner is model:
                raise
            result["compile_error"] = f"{type(exc).__name__}: {exc}"
            settings["compile"] = False
            runner = model
            windows, check = timed(model)
        result.update(summarise_windows(windows, quiet_ratio=spec.quiet_ratio))
        if check is not None:
            result["timer_check"] = check.result(result["latency_ms_median"])
    if spec.batch_sizes != [1]:
        with clock.measure():
            rows = throughput_sweep(runner, inputs, spec.batch_sizes, spec.warmup, spec.samples,
                                    device, spec.precision, settings,
                                    known={1: windows} if windows else None,
                                    **plan)
        result["throughput"] = rows
        best = max((r for r in rows if r.get("samples_per_s")),
                   key=lambda r: r["samples_per_s"], default=None)
        if best:
            result["throughput_samples_per_s"] = best["samples_per_s"]
            result["throughput_batch_size"] = best["batch_size"]
    return runner


def _latency_in_processes(model, inputs, spec, device, plan, result) -> None:
    """Batch-1 latency timed in ``spec.processes`` fresh processes; the result is the process
    with the median latency (the lower middle one for an even count), its window statistics
    and Timer check, and every process's median is kept (``latency_ms_process_medians``)."""
    import kernels
    from bench.profiling.child import time_in_processes

    job = {"model": model, "inputs": inputs, "threads": torch.get_num_threads(),
           "device": str(device), "precision": spec.precision, "warmup": spec.warmup,
           "samples": spec.samples, "plan": plan, "timer_check": spec.timer_check,
           "steady_heap": spec.steady_heap,
           "scan_backend": kernels.resolve_backend("auto", device.type).name}
    runs = time_in_processes(job, spec.processes)
    summaries = [summarise_windows(r["windows"], quiet_ratio=spec.quiet_ratio) for r in runs]
    order = sorted(range(len(runs)), key=lambda i: summaries[i]["latency_ms_median"])
    middle = order[(len(order) - 1) // 2]
    result.update(summaries[middle])
    result["latency_processes"] = len(runs)
    result["latency_ms_process_medians"] = [s["latency_ms_median"] for s in summaries]
    result["latency_protocol"] = (f"median of {len(runs)} processes, each: "
                                  f"{summaries[middle]['latency_protocol']}")
    if spec.timer_check:
        result["timer_check"] = timer_check_result(runs[middle]["timer_means"], spec.samples,
                                                   result["latency_ms_median"])


def profile_model(model: nn.Module, example_inputs: dict[str, torch.Tensor], spec: ProfileSpec,
                  device: str | torch.device = "cpu", target: torch.Tensor | None = None) -> dict:
    """Profile ``model`` on ``example_inputs`` (batch 1) as ``spec`` says; see module doc."""
    wall_start = time.perf_counter()
    clock = _Clock()
    device = _resolve_device(spec, device)
    model = model.eval()
    inputs = {k: v.to(device) for k, v in example_inputs.items()}
    result: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    result["params_m"] = result["params"] / 1e6
    result["input_shapes"] = {k: list(v.shape) for k, v in inputs.items()}
    previous_threads = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    heap = contextlib.ExitStack()
    try:
        allocator = heap.enter_context(steady_heap(spec.steady_heap))
        if spec.flops:
            _flops(model, inputs, spec, clock, result)
        if spec.channels_last:
            model = model.to(memory_format=torch.channels_last)
            inputs = to_channels_last(inputs)
        runner = _compiled(model, spec, result)
        settings = run_settings(device, spec.precision, spec.channels_last,
                                runner is not model)
        if device.type == "cpu":
            settings["allocator"] = allocator or "system default"
        if spec.latency:
            runner = _latency(runner, model, inputs, spec, device, settings, clock, result)
        infer = inference_fn(runner, inputs, spec.precision, device)
        if spec.memory:
            with clock.measure():
                mem = peak_memory(infer, device)
            result["peak_mem_mb_infer"] = mem["peak_mb"]
            result["delta_mem_mb_infer"] = mem["delta_mb"]
            result["memory_method"] = mem["method"]
        breakdown = {}
        if spec.breakdown:
            with clock.measure():
                breakdown["forward"] = time_breakdown(infer, device, spec.breakdown_repeats,
                                                      warmup=0 if spec.latency else 1)
        if spec.train_step:
            step, trainee = train_step_fn(model, inputs, target if target is not None
                                          else _random_target(model, inputs),
                                          spec.precision, device)
            if spec.memory:
                with clock.measure():
                    mem = peak_memory(step, device)
                result["peak_mem_mb_train"] = mem["peak_mb"]
                result["delta_mem_mb_train"] = mem["delta_mb"]
                result.setdefault("memory_method", mem["method"])
            with clock.measure():
                times = time_calls(step, 0 if spec.memory else 1, spec.train_samples, device)
            result.update(summarise(times, "train_step_ms"))
            if spec.breakdown:
                with clock.measure():
                    breakdown["train_step"] = time_breakdown(step, device,
                                                             spec.breakdown_repeats, warmup=0)
            del trainee, step
        if breakdown:
            result["breakdown"] = breakdown
    finally:
        heap.close()
        torch.set_num_threads(previous_threads)
        if spec.channels_last:
            model.to(memory_format=torch.contiguous_format)
    if spec.latency:
        settings["compile"] = settings["compile"] and "compile_error" not in result
    result["env"] = settings
    wall = time.perf_counter() - wall_start
    result["timing"] = {"wall_s": wall, "measured_s": clock.measured,
                        "overhead_s": wall - clock.measured,
                        "overhead_frac": (wall - clock.measured) / wall if wall else 0.0}
    unsupported_total = sum(result.get("unsupported_ops", {}).values())
    if unsupported_total > spec.max_unsupported:
        raise ProfileError(f"{unsupported_total} op call(s) without a FLOP handle (limit "
                           f"{spec.max_unsupported}, profile.max_unsupported): "
                           f"{result['unsupported_ops']}", result)
    return result
