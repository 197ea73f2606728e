"""One process of a multi-process latency measurement (``profile.processes`` > 1).

Each fresh process gets its own address-space layout and allocator state; on the project's VM
one process in about six ran a whole model 8-10% slower than the others for as long as it
lived, which no amount of timing inside one process averages out. pyperf runs its benchmarks in
many worker processes for the same reason. The parent pickles the module and inputs
(``torch.save``), starts ``python -m bench.profiling.child JOB OUT`` once per process and takes
the median process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def run_job(job: dict) -> dict[str, Any]:
    """Time one pickled call as ``time_windows`` does; the windows (and Timer's means)."""
    import kernels
    from bench.profiling.latency import steady_heap, time_inference

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    model = job["model"].to(device).eval()
    inputs = {k: v.to(device) for k, v in job["inputs"].items()}
    with steady_heap(job["steady_heap"]), kernels.scan_backend(job["scan_backend"]):
        windows, check = time_inference(model, inputs, job["precision"], device, job["warmup"],
                                        job["samples"], job["timer_check"], **job["plan"])
    return {"windows": windows, "timer_means": check.means if check else None}


def time_in_processes(job: dict, processes: int) -> list[dict[str, Any]]:
    """``run_job`` in ``processes`` fresh Python processes, one after the other. Raises
    RuntimeError (with the child's last line of error) when a process fails, e.g. when the
    model cannot be pickled or its class cannot be imported in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="ssmbench-latency-") as tmp:
        job_path = Path(tmp) / "job.pt"
        try:
            torch.save(job, job_path)
        except Exception as exc:  # noqa: BLE001 - lambdas, hooks, compiled modules
            raise RuntimeError(f"the model cannot be pickled for a child process: {exc}") from exc
        # the parent's import path, so a plugin model's module imports in the child too
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        results = []
        for index in range(processes):
            out = Path(tmp) / f"out{index}.json"
            done = subprocess.run([sys.executable, "-m", "bench.profiling.child", str(job_path),
                                   str(out)], capture_output=True, text=True,
                                  env=env)
            if done.returncode != 0 or not out.exists():
                last = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"latency process {index + 1} failed: {last[0]}")
            results.append(json.loads(out.read_text()))
        return results


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    job = torch.load(job_path, weights_only=False)
    Path(out_path).write_text(json.dumps(run_job(job)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
