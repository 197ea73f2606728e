"""The environment fingerprint stored with every cell and printed in every report: what a
number was measured on (docs/profiling.md: a missing fingerprint is how ranking flips go unseen)."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def fingerprint(device: str = "cpu", threads: int | None = None, precision: str = "fp32") -> dict:
    import kernels

    env = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "precision": precision,
        "scan_backend": kernels.resolve_backend("auto", "cuda" if device.startswith("cuda")
                                                else "cpu").name,
        "git_commit": git_commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["tf32"] = torch.backends.cuda.matmul.allow_tf32
        env["cudnn"] = torch.backends.cudnn.version()
    return env
