"""`python -m bench.diagnostics.gpu_check [--out FILE]`: what only a GPU can show, in one command
(a few minutes on one GPU).

    scan        mamba_ssm's selective_scan_fn against ours ("torch" backend) on the GPU: the
                output and every gradient (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias),
                max |diff| / max |ref|; without mamba_ssm's CUDA kernel, ours against "ref"
    bf16        Sigma-T training steps under bf16 autocast: finite losses, and the selective
                scan's recurrence kept in fp32 (MzeroMiko/VMamba issue 138: a bf16 scan
                diverges)
    latency     every seed system at its paper input size, batch 1: CUDA-event latency
                (bench.profiling.latency.measure_latency) and peak memory
    torchrun    one training cell launched by torchrun on one GPU (DDP, NCCL), recorded once

It prints a table and writes it (markdown) to ``--out`` (default reports/gpu_check/README.md).
Without CUDA it says so and exits 0 (``--require-gpu``: exit 2). Each check function also runs
on the CPU at small shapes, which is how tests/bench/test_gpu_check.py covers them.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[2]

#: seed systems at their papers' measurement sizes: (model, size, num_classes, inputs)
PAPER_SYSTEMS = [
    ("sigma", "tiny", 9, {"rgb": (3, 480, 640), "x": (1, 480, 640)}),
    ("sigma", "small", 9, {"rgb": (3, 480, 640), "x": (1, 480, 640)}),
    ("sigma", "base", 9, {"rgb": (3, 480, 640), "x": (1, 480, 640)}),
    ("samba", "base", 7, {"rgb": (3, 512, 512)}),
    ("ms2mnet", "base", 6, {"rgb": (3, 256, 256), "x": (1, 256, 256)}),
    ("mamba_diffusion", "base", 7, {"rgb": (4, 256, 256), "x": (1, 256, 256)}),
    ("remamber", "base", 1, {"rgb": (3, 480, 480), "text": (20,)}),
]
#: the same systems at CPU scale (tests)
SMALL_SYSTEMS = [(m, "nano", k, {n: (s[0], 32, 32) if len(s) == 3 else s for n, s in i.items()})
                 for m, size, k, i in PAPER_SYSTEMS if size in ("tiny", "base")]

#: tolerances of the scan comparison, max |diff| / max |ref|, per dtype
SCAN_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@dataclass
class Row:
    check: str
    name: str
    ok: bool | None           # None: informational (a measurement, nothing to pass)
    value: str
    detail: str = ""


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def markdown(self, title: str = "GPU check") -> str:
        lines = [f"# {title}", "", "| check | name | result | value | detail |",
                 "|---|---|---|---|---|"]
        for r in self.rows:
            result = "–" if r.ok is None else ("pass" if r.ok else "FAIL")
            lines.append(f"| {r.check} | {r.name} | {result} | {r.value} | "
                         f"{r.detail.replace('|', '/')} |")
        lines += ["", f"{len(self.rows)} rows, {len(self.failed)} failed."]
        return "\n".join(lines) + "\n"

    def write(self, path: Path, title: str = "GPU check") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(title))
        return path


# ------------------------------------------------------------------------------------ scan


def scan_inputs(batch: int, dim: int, length: int, dstate: int, device, dtype,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Random selective-scan inputs as Mamba's layer makes them (A negative, delta > 0 after
    softplus), each a leaf that requires grad."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale)

    values = {"u": r(batch, dim, length), "delta": r(batch, dim, length, scale=0.5),
              "A": -torch.rand(dim, dstate, generator=gen, dtype=torch.float64) - 0.5,
              "B": r(batch, dstate, length), "C": r(batch, dstate, length), "D": r(dim),
              "z": r(batch, dim, length), "delta_bias": r(dim, scale=0.1)}
    return {k: v.to(device=device, dtype=torch.float32 if k in ("A", "D", "delta_bias")
                    else dtype).requires_grad_() for k, v in values.items()}


def run_scan(fn: Callable, inputs: dict[str, torch.Tensor], dout: torch.Tensor):
    """Output and gradient of every input of ``fn(**inputs, delta_softplus=True)``."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"],
             z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True)
    out.backward(dout)
    return out.detach(), {f"d{k}": v.grad for k, v in leaves.items()}


def compare_scan(reference: Callable, candidate: Callable, device="cuda", batch: int = 2,
                 dim: int = 192, length: int = 1024, dstate: int = 16,
                 dtype=torch.float32, table: Table | None = None, label: str = "") -> Table:
    """One row per tensor (out and each gradient): relative max error, pass under SCAN_TOL."""
    table = table if table is not None else Table()
    inputs = scan_inputs(batch, dim, length, dstate, device, dtype)
    dout = torch.randn(batch, dim, length, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64).to(device=device, dtype=dtype)
    ref_out, ref_grads = run_scan(reference, inputs, dout)
    out, grads = run_scan(candidate, inputs, dout)
    tol = SCAN_TOL.get(dtype, 1e-2)
    shape = f"B{batch} D{dim} L{length} N{dstate} {str(dtype).removeprefix('torch.')}"
    for name, a, b in [("out", out, ref_out)] + [(k, grads[k], ref_grads[k]) for k in ref_grads]:
        err = ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)
               ).item()
        table.add("scan", f"{label} {name}".strip(), err <= tol, f"{err:.2e}",
                  f"{shape}, tolerance {tol:g}")
    return table


def scan_check(table: Table, device="cuda", **shape) -> Table:
    """mamba_ssm's kernel vs ours on ``device``; ours vs "ref" where mamba_ssm is missing."""
    import functools

    import kernels

    ours = functools.partial(kernels.selective_scan, backend="torch")
    try:
        from kernels.backends.cuda import mamba_selective_scan_fn

        reference, label = mamba_selective_scan_fn(), "mamba_ssm vs ours"
    except ImportError as exc:
        table.add("scan", "mamba_ssm", None, "unavailable", str(exc))
        reference, label = functools.partial(kernels.selective_scan, backend="ref"), "ref vs ours"
    return compare_scan(reference, ours, device=device, table=table, label=label, **shape)


# ------------------------------------------------------------------------------------ bf16


def example_inputs(inputs: dict[str, tuple], device, batch: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in inputs.items():
        if name == "text":
            out[name] = torch.randint(1, 100, (batch, *shape), generator=gen).to(device)
        else:
            out[name] = torch.randn(batch, *shape, generator=gen).to(device)
    return out


def build_system(model: str, size: str, num_classes: int, inputs: dict, device):
    import models

    modalities = {k: v[0] for k, v in inputs.items()}
    # a one-input system (Samba, RGB only) is built with its default modalities
    extra = {"modalities": modalities} if len(modalities) > 1 else {}
    return models.create_model(model, size=size, num_classes=num_classes, **extra).to(device)


def bf16_training_check(table: Table, device="cuda", size: str = "tiny",
                        input_size=(480, 640), steps: int = 3, batch: int = 2) -> Table:
    """Sigma training steps under bf16 autocast: finite losses, the scan's output in fp32."""
    import kernels
    from kernels.selective_scan import compute_dtype

    torch.manual_seed(0)
    model = build_system("sigma", size, 9, {"rgb": (3, *input_size), "x": (1, *input_size)},
                         device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5)
    inputs = example_inputs({"rgb": (3, *input_size), "x": (1, *input_size)}, device, batch)
    target = torch.randint(0, 9, (batch, *input_size), device=device)
    scan_dtypes: set[str] = set()
    original = kernels.selective_scan  # the models call kernels.selective_scan(...)

    def recording(u, *args, **kwargs):
        # the recurrence runs in compute_dtype(u): fp32 for bf16 inputs, as mamba_ssm's kernel
        scan_dtypes.add(f"{str(u.dtype).removeprefix('torch.')} in, "
                        f"{str(compute_dtype(u)).removeprefix('torch.')} recurrence")
        return original(u, *args, **kwargs)

    losses, start = [], time.perf_counter()
    device_type = torch.device(device).type
    try:
        kernels.selective_scan = recording
        for it in range(steps):
            with torch.autocast(device_type, dtype=torch.bfloat16):
                loss = model.forward_train(inputs, target, {"iteration": it, "max_iters": steps,
                                                            "epoch": 1, "max_epochs": 1})["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        kernels.selective_scan = original
    if device_type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps * 1000
    finite = all(map(lambda v: v == v and abs(v) != float("inf"), losses))
    table.add("bf16", f"sigma_{size} losses", finite, ", ".join(f"{v:.3f}" for v in losses),
              f"{steps} AdamW steps, batch {batch}, {input_size[0]}x{input_size[1]}, "
              f"{per_step:.0f} ms/step")
    fp32 = bool(scan_dtypes) and all(d.endswith("float32 recurrence") for d in scan_dtypes)
    table.add("bf16", f"sigma_{size} scan precision", fp32 if scan_dtypes else None,
              "; ".join(sorted(scan_dtypes)) or "no scan recorded",
              "selective scans under bf16 autocast: the recurrence must run in fp32")
    return table


# --------------------------------------------------------------------------------- latency


def latency_check(table: Table, device="cuda", systems=None, warmup: int = 3,
                  samples: int = 10) -> Table:
    """Batch-1 inference latency (CUDA events on a GPU) and peak memory of each system."""
    from bench.profiling.latency import measure_latency

    device = torch.device(device)
    for model_name, size, classes, inputs in systems or PAPER_SYSTEMS:
        label = f"{model_name}_{size}"
        shape = " + ".join("x".join(map(str, s)) for s in inputs.values())
        try:
            torch.manual_seed(0)
            model = build_system(model_name, size, classes, inputs, device).eval()
            batch = example_inputs(inputs, device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            stats = measure_latency(model, batch, warmup, samples, device)
            peak = (f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB peak"
                    if device.type == "cuda" else "peak memory: CUDA only")
            table.add("latency", label, None, f"{stats['latency_ms_median']:.2f} ms",
                      f"{shape}, IQR {stats.get('latency_ms_iqr', float('nan')):.2f} ms, {peak}")
            del model
        except Exception as exc:  # noqa: BLE001 - one system failing is a row, not the end
            table.add("latency", label, False, "error", f"{type(exc).__name__}: {exc}"[:300])
    return table


# -------------------------------------------------------------------------------- torchrun

TORCHRUN_SUITE = """\
name: gpu_check_torchrun
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets: [{name: synrgbx, size: 32, counts: [32, 8, 8]}]
  seeds: [0]
stages: [train, eval]
train: {iterations: 4, batch_size: 4, device: DEVICE, checkpoint_every: 2}
eval: {corruptions: [clean], protocol: {mode: whole}}
"""


def torchrun_check(table: Table, device="cuda", timeout: int = 240) -> Table:
    """One cell trained under ``torchrun --nproc-per-node 1`` and recorded once."""
    from bench.results.store import CellStore

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(TORCHRUN_SUITE.replace("DEVICE", str(torch.device(device).type)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
               "--master-addr", "127.0.0.1", "--master-port", str(port),
               str(REPO / "run_bench.py"), str(suite), "--runs-dir", f"{tmp}/runs",
               "--no-progress", "--no-report"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return table.add("torchrun", "1 process", False, "timeout", f"> {timeout} s") and table
        seconds = time.perf_counter() - start
        states = [t.state.name for t in CellStore("gpu_check_torchrun", None,
                                                  f"{tmp}/runs").trials()] \
            if done.returncode == 0 else []
        ok = done.returncode == 0 and states == ["COMPLETE"]
        last_error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        detail = f"exit {done.returncode}, {seconds:.0f} s" + ("" if ok else f": {last_error}")
        table.add("torchrun", "1 process", ok, ", ".join(states) or "no cell", detail[:300])
    return table


# ------------------------------------------------------------------------------------ main


def run_all(device="cuda", quick: bool = False) -> Table:
    table = Table()
    scan_check(table, device)
    bf16_training_check(table, device, steps=2 if quick else 3)
    latency_check(table, device)
    torchrun_check(table, device)
    return table


def environment_line() -> str:
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.diagnostics.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/gpu_check/README.md")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 2 (not 0) when no CUDA device is available")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        why = "torch has no CUDA build" if torch.version.cuda is None else \
            "no CUDA device is visible"
        print(f"gpu_check: no CUDA device ({why}); nothing was checked. Run it on a machine "
              f"with a GPU; `ssmbench doctor` shows what this one has.")
        return 2 if args.require_gpu else 0
    start = time.perf_counter()
    table = run_all("cuda")
    title = f"GPU check: {environment_line()}, {time.perf_counter() - start:.0f} s"
    print(table.markdown(title))
    path = table.write(Path(args.out), title)
    print(f"written: {path}")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
