"""`ssmbench doctor [SUITE.yaml] [--storage URL]`: what a result depends on, and why a run is
slow or fails, before it runs.

It prints the environment the cells' fingerprint records (bench/profiling/machine.py), the thread
settings, every selective-scan backend with its state and the reason when it is unavailable
(mamba_ssm and its CUDA extension, causal-conv1d and its CUDA extension, the cpu kernel: built
where, or why not), the CUDA devices (capability, bf16), which backend ``auto`` picks per device,
and the storage a suite would use and whether it opens. The missing CUDA kernels that the seed
repositories' users discover only at run time (state-spaces/mamba issue 89, MzeroMiko/VMamba issue
313, zifuwan/Sigma issue 3) show up here. It changes nothing and always exits 0; the last line is a
summary.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Check:
    section: str
    name: str
    state: str          # "ok", "warn" (works, slower or degraded) or "off" (not usable here)
    detail: str


def _module_state(name: str, extension: str | None = None) -> tuple[str, str]:
    """(state, detail) of an optional package and its compiled extension."""
    if importlib.util.find_spec(name) is None:
        return "off", f"not installed (pip install {name.replace('_', '-')})"
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the answer
        return "off", f"installed but does not import: {type(exc).__name__}: {exc}"
    version = getattr(module, "__version__", "?")
    if extension is None:
        return "ok", f"version {version}"
    if importlib.util.find_spec(extension) is None:
        return "warn", (f"version {version}, but its CUDA extension {extension} is missing (built "
                        f"without CUDA: reinstall on a CUDA machine with --no-build-isolation)")
    try:
        ext = importlib.import_module(extension)
    except Exception as exc:  # noqa: BLE001
        return "warn", f"version {version}; {extension} does not import: {exc}"
    if not hasattr(ext, "fwd"):
        return "warn", f"version {version}; {extension} has no compiled kernels (a stand-in)"
    return "ok", f"version {version}, {extension} present"


def environment_checks() -> list[Check]:
    import platform

    import torch

    from bench.profiling.machine import cpu_model, git_commit

    out = [Check("environment", "python", "ok", f"{platform.python_version()} ({sys.executable})"),
           Check("environment", "torch", "ok", f"{torch.__version__} (CUDA build "
                 f"{torch.version.cuda or 'none'}, cuDNN {torch.backends.cudnn.version()})"),
           Check("environment", "platform", "ok", platform.platform()),
           Check("environment", "cpu", "ok", f"{cpu_model()}, {os.cpu_count()} logical cores"),
           Check("environment", "ssmbench", "ok",
                 f"{Path(__file__).resolve().parents[2]} at {git_commit() or 'no git'}")]
    threads = torch.get_num_threads()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    state = "warn" if cores and threads > cores else "ok"
    out.append(Check("threads", "torch", state,
                     f"{threads} intra-op, {torch.get_num_interop_threads()} inter-op; "
                     f"{cores} cores usable by this process"
                     + (f"; {', '.join(f'{k}={v}' for k, v in env.items())}" if env else "")
                     + ("; more threads than cores: set train.threads" if state == "warn" else "")))
    return out


def cuda_checks() -> list[Check]:
    import torch

    if not torch.cuda.is_available():
        why = "torch has no CUDA build" if torch.version.cuda is None else \
            "no CUDA device visible (driver, CUDA_VISIBLE_DEVICES)"
        return [Check("cuda", "device", "off", why)]
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(Check("cuda", f"cuda:{i}", "ok",
                         f"{props.name}, capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2 ** 30:.1f} GiB"))
    bf16 = torch.cuda.is_bf16_supported()
    out.append(Check("cuda", "bf16", "ok" if bf16 else "warn",
                     "supported" if bf16 else "not supported on this device: train.amp uses "
                     "fp16 with a gradient scaler"))
    return out


def backend_checks() -> list[Check]:
    import kernels
    from kernels.backends import cpu as cpu_backend

    out = []
    state, detail = _module_state("mamba_ssm", "selective_scan_cuda")
    out.append(Check("scan", "mamba_ssm", state, detail))
    state, detail = _module_state("causal_conv1d", "causal_conv1d_cuda")
    out.append(Check("scan", "causal_conv1d", state, detail))
    for name in kernels.list_backends():
        backend = kernels.get_backend(name)
        ok, why = backend.available()
        if name == "cpu":
            where = cpu_backend.cache_dir()
            built = getattr(cpu_backend._STATE.get("lib"), "_name", None)  # noqa: SLF001
            detail = (f"built: {built or where}" if ok else
                      f"unavailable: {why or 'not built'} (cache {where}; "
                      f"SSMBENCH_KERNEL_CACHE moves it)")
        else:
            detail = "available" if ok else f"unavailable: {why}"
        out.append(Check("scan", f"backend {name}", "ok" if ok else "off",
                         f"{detail}; devices {', '.join(backend.devices)}"))
    import torch

    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        usable = kernels.available_backends(device)
        if usable:
            chosen = kernels.resolve_backend("auto", device).name
            state = "ok" if device == "cpu" or chosen == "cuda" else "warn"
            note = "" if state == "ok" else " (slow: mamba_ssm's CUDA kernel is not usable)"
            out.append(Check("scan", f"auto on {device}", state, f"{chosen}{note}"))
    return out


def storage_checks(suite_path: str | None, storage: str | None,
                   runs_dir: str = "runs") -> list[Check]:
    if suite_path is None and storage is None:
        return [Check("storage", "suite", "ok", "no suite given (ssmbench doctor SUITE.yaml "
                      "checks the storage it would use)")]
    name = None
    if suite_path is not None:
        from bench.config.suite import load_suite
        from bench.config.yaml_source import SuiteError

        try:
            suite = load_suite(suite_path, check_names=False)
            name = suite.name
        except SuiteError as exc:
            return [Check("storage", "suite", "off", f"the suite does not load: {exc}")]
    where = storage or str(Path(runs_dir) / (name or "suite") / "study.journal")
    try:
        from bench.results.store import open_storage

        if storage is None:
            directory = Path(runs_dir) / name
            if not directory.exists():
                parent = next(p for p in [directory, *directory.parents] if p.exists())
                writable = os.access(parent, os.W_OK)
                return [Check("storage", "store", "ok" if writable else "off",
                              f"{where} (not created yet; {parent} is "
                              f"{'writable' if writable else 'not writable'})")]
        open_storage(storage, Path(runs_dir) / (name or "suite"))
    except Exception as exc:  # noqa: BLE001 - unreachable storage is the answer, not a crash
        return [Check("storage", "store", "off", f"{where}: cannot be opened: {exc}")]
    return [Check("storage", "store", "ok", f"{where}: reachable")]


def run_checks(suite_path: str | None = None, storage: str | None = None,
               runs_dir: str = "runs") -> list[Check]:
    return (environment_checks() + cuda_checks() + backend_checks()
            + storage_checks(suite_path, storage, runs_dir))


def format_checks(checks: list[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "off": "--  "}
    lines, section = [], None
    for check in checks:
        if check.section != section:
            section = check.section
            lines.append(f"[{section}]")
        lines.append(f"  {marks[check.state]} {check.name:22s} {check.detail}")
    warn = [c for c in checks if c.state == "warn"]
    off = [c for c in checks if c.state == "off"]
    import kernels

    summary = (f"doctor: {len(checks)} checks, {len(warn)} warning(s), {len(off)} unavailable; "
               f"scan backend on cpu: {kernels.resolve_backend('auto', 'cpu').name}")
    if any(c.section == "storage" and c.state == "off" for c in checks):
        summary += "; STORAGE NOT REACHABLE"
    return "\n".join(lines + [summary])
