"""Selective-scan kernel sweep (suites with ``kind: kernels``): times every backend over a grid of
shapes, forward and forward+backward, and writes ``reports/<suite>/README.md`` with ms, GB/s,
GFLOP/s, the multiple of this machine's rooflines (memory bandwidth, FLOP rate and exp rate,
all measured in the same run), errors against ``ref``, and a plot of throughput against length.
The report is rebuilt from results.csv and meta.json by ``write_kernel_report``.

Rooflines (docs/kernels.md): bytes = selective_scan_bytes (u, delta, out, B, C,
A, D; fwd+bwd adds dout, du, ddelta, dB, dC), flops = 9BDLN + BDL (fwd+bwd: 3x), t_roof =
max(bytes / bandwidth, flops / GEMM rate); the exp bound is B*D*L*N exps (fwd+bwd: 2x) at
torch.exp's measured rate.
"""
from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

import kernels
from bench.config.schema import KernelSweepSpec, Mode, SweepShape
from bench.profiling.machine import fingerprint
from kernels import flops as kflops

PEERS = ("mamba_ref", "mambapy")


# ----------------------------------------------------------------------------- inputs, timing


def vmamba_inputs(s: SweepShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """VMamba's initialisation: A = -[1..N], dt ~ logU[1e-3, 0.1] through delta_bias,
    delta = 0.1 randn, D = 1, B and C standard normal (grouped when G > 1)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(s.D, generator=g) * (math.log(0.1) - math.log(1e-3))
                   + math.log(1e-3))
    bc = (s.B, s.N, s.L) if s.G == 1 else (s.B, s.G, s.N, s.L)
    return dict(
        u=torch.randn(s.B, s.D, s.L, generator=g),
        delta=0.1 * torch.randn(s.B, s.D, s.L, generator=g),
        A=-torch.arange(1, s.N + 1, dtype=torch.float32).repeat(s.D, 1),
        B=torch.randn(*bc, generator=g), C=torch.randn(*bc, generator=g),
        D=torch.ones(s.D), delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )


def _mamba_ref() -> Callable | None:
    """mamba_ssm's selective_scan_ref, importable on a CPU-only install once its two compiled
    modules have stand-ins (docs/kernels.md)."""
    for name in ("selective_scan_cuda", "causal_conv1d_cuda"):
        sys.modules.setdefault(name, types.ModuleType(name))
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except Exception:  # noqa: BLE001 - any import failure: the peer is not installed
        return None
    return selective_scan_ref


def _mambapy() -> Callable | None:
    try:
        from mambapy.pscan import pscan
    except Exception:  # noqa: BLE001
        return None

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        # mambapy's MambaBlock.selective_scan on (B, L, D, N) tensors, G = 1
        dt = delta + delta_bias[:, None] if delta_bias is not None else delta
        dt = torch.nn.functional.softplus(dt) if delta_softplus else dt
        dt = dt.transpose(1, 2)                                  # (B, L, D)
        dA = torch.exp(dt.unsqueeze(-1) * A)                     # (B, L, D, N)
        bx = (dt * u.transpose(1, 2)).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
        hs = pscan(dA, bx)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1)   # (B, L, D)
        return y.transpose(1, 2) + (u * D[:, None] if D is not None else 0)

    return scan


def implementations(spec: KernelSweepSpec) -> dict[str, Callable]:
    impls: dict[str, Callable] = {}
    for name in spec.backends:
        ok, why = kernels.get_backend(name).available()
        if not ok or "cpu" not in kernels.get_backend(name).devices:
            print(f"  skipping backend {name}: {why or 'does not run on cpu'}", file=sys.stderr)
            continue
        impls[name] = (lambda backend: lambda **kw: kernels.selective_scan(
            **kw, delta_softplus=True, backend=backend))(name)
    peers = {"mamba_ref": _mamba_ref, "mambapy": _mambapy}
    for name in spec.peers:
        fn = peers[name]()
        if fn is None:
            print(f"  skipping peer {name}: not installed", file=sys.stderr)
            continue
        impls[name] = (lambda f: lambda **kw: f(**kw, delta_softplus=True))(fn)
    return impls


def _timed(fn: Callable, spec: KernelSweepSpec) -> tuple[float, int]:
    """Median seconds per call and the number of calls timed."""
    from torch.utils.benchmark import Timer

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > spec.single_call_s:
        start = time.perf_counter()
        fn()
        return min(first, time.perf_counter() - start), 1
    m = Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=spec.min_run_time)
    return m.median, len(m.times) * m.number_per_run


def _calls(impl: Callable, inputs: dict, mode: Mode):
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return impl(**inputs)
        return run, None
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}

    def run():
        for v in leaves.values():
            v.grad = None
        out = impl(**leaves)
        out.backward(torch.ones_like(out))
        return out
    return run, leaves


def machine_rooflines(threads: int, seconds: float = 0.5) -> dict[str, float]:
    """Copy bandwidth (GB/s), SGEMM rate (GFLOP/s) and torch.exp rate (Gexp/s), measured now."""
    from torch.utils.benchmark import Timer

    torch.set_num_threads(threads)
    src = torch.randn(32 * 2**20)
    dst = torch.empty_like(src)
    t_copy = Timer("d.copy_(s)", globals={"d": dst, "s": src}).blocked_autorange(
        min_run_time=seconds).median
    a = torch.randn(1536, 1536)
    t_mm = Timer("a @ a", globals={"a": a}).blocked_autorange(min_run_time=seconds).median
    x = -torch.rand(8 * 2**20)
    t_exp = Timer("torch.exp(x)", globals={"x": x, "torch": torch}).blocked_autorange(
        min_run_time=seconds).median
    return {"bandwidth_gbs": 2 * src.numel() * 4 / t_copy / 1e9,
            "gemm_gflops": 2 * 1536**3 / t_mm / 1e9,
            "exp_gexps": x.numel() / t_exp / 1e9}


def cell_cost(s: SweepShape, mode: Mode) -> dict[str, float]:
    mult = 3 if mode == "fwdbwd" else 1
    flop = kflops.selective_scan_flops(s.B, s.L, s.D, s.N, with_D=True) * mult
    byt = kflops.selective_scan_bytes(s.B, s.L, s.D, s.N, G=s.G, with_D=True, with_bias=True)
    if mode == "fwdbwd":  # + dout, du, ddelta (B*D*L each), dB, dC (B*G*N*L each)
        byt += 4 * (3 * s.B * s.D * s.L + 2 * s.B * s.G * s.N * s.L)
    return {"flops": flop, "bytes": byt, "exps": s.B * s.D * s.L * s.N * (2 if mult > 1 else 1)}


def _errors(out, leaves, ref) -> float:
    """max |x - ref| / max(1, max |ref|) over the output and every gradient."""
    ref_out, ref_grads = ref
    err = float((out.detach() - ref_out).abs().max()) / max(1.0, float(ref_out.abs().max()))
    if leaves is not None and ref_grads is not None:
        for k, v in leaves.items():
            r = ref_grads[k]
            err = max(err, float((v.grad - r).abs().max()) / max(1.0, float(r.abs().max())))
    return err


# ----------------------------------------------------------------------------- the sweep


def run_sweep(spec: KernelSweepSpec, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    torch.set_num_threads(spec.threads)
    roof = machine_rooflines(spec.threads, spec.roofline_s)
    if progress:
        print(f"rooflines: {roof['bandwidth_gbs']:.1f} GB/s copy, {roof['gemm_gflops']:.0f} "
              f"GFLOP/s SGEMM, {roof['exp_gexps']:.2f} Gexp/s torch.exp")
    impls = implementations(spec)
    rows = []
    slow: dict[tuple[str, str], float] = {}   # (impl, mode) -> seconds per B*D*L*N element
    for s in spec.shapes:
        inputs = vmamba_inputs(s)
        elems = s.B * s.D * s.L * s.N
        for mode in s.modes:
            cost = cell_cost(s, mode)
            t_roof = max(cost["bytes"] / (roof["bandwidth_gbs"] * 1e9),
                         cost["flops"] / (roof["gemm_gflops"] * 1e9))
            t_exp = cost["exps"] / (roof["exp_gexps"] * 1e9)
            ref = None
            for name, impl in impls.items():
                if name in PEERS and (mode == "fwdbwd" or (name == "mambapy" and s.G > 1)):
                    continue  # mamba_ref's autograd is O(L^2); mambapy has no groups
                estimate = slow.get((name, mode), 0.0) * elems
                if estimate > spec.max_cell_s:
                    if progress:
                        print(f"  skip {name} {mode} {s.B}x{s.D}x{s.L}x{s.N} "
                              f"(~{estimate:.0f} s)")
                    continue
                run, leaves = _calls(impl, inputs, mode)
                out = run()
                if name == "ref":
                    ref = (out.detach(), None if leaves is None else
                           {k: v.grad.clone() for k, v in leaves.items()})
                err = _errors(out, leaves, ref) if ref is not None and name != "ref" else None
                seconds, calls = _timed(run, spec)
                slow[(name, mode)] = max(slow.get((name, mode), 0.0), seconds / elems)
                row = dict(impl=name, mode=mode, B=s.B, D=s.D, L=s.L, N=s.N, G=s.G,
                           ms=seconds * 1e3,
                           calls=calls, gbs=cost["bytes"] / seconds / 1e9,
                           gflops=cost["flops"] / seconds / 1e9, x_roof=seconds / t_roof,
                           x_bw=seconds / (cost["bytes"] / (roof["bandwidth_gbs"] * 1e9)),
                           x_exp=seconds / t_exp, t_roof_ms=t_roof * 1e3, err_vs_ref=err)
                rows.append(row)
                if progress:
                    print(f"  {name:9s} {mode:6s} {s.B}x{s.D}x{s.L}x{s.N} G{s.G}: "
                          f"{row['ms']:9.2f} ms  {row['x_roof']:6.1f}x roof"
                          + (f"  err {err:.1e}" if err is not None else ""))
    meta = {"rooflines": roof, "env": fingerprint("cpu", spec.threads),
            "spec": spec.model_dump(mode="json")}
    return pd.DataFrame(rows), meta


def run_kernel_sweep(spec: KernelSweepSpec, suite_name: str, out_dir: Path,
                     progress: bool = True) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, meta = run_sweep(spec, progress)
    frame.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return write_kernel_report(frame, meta, spec, suite_name, out_dir)


# ----------------------------------------------------------------------------- the report


def _cell(frame: pd.DataFrame, impl: str, mode: str, s: SweepShape | None) -> float | None:
    if s is None:
        return None
    hit = frame[(frame.impl == impl) & (frame["mode"] == mode) & (frame.B == s.B)
                & (frame.D == s.D) & (frame.L == s.L) & (frame.N == s.N) & (frame.G == s.G)]
    return float(hit.ms.iloc[0]) if len(hit) else None


def headline(frame: pd.DataFrame, spec: KernelSweepSpec) -> list[str]:
    """The issue's two checks, as measured in this run."""
    lines = []
    s = spec.target_fwd
    cpu, ref = _cell(frame, "cpu", "fwd", s), _cell(frame, "ref", "fwd", s)
    if cpu and ref:
        ok = ref / cpu >= 50 and cpu <= 8.0
        lines.append(f"- forward at B={s.B}, D={s.D}, L={s.L}, N={s.N}: `cpu` {cpu:.2f} ms, "
                     f"`ref` {ref:.1f} ms: **{ref / cpu:.0f}x** faster (target >= 50x and "
                     f"<= 8 ms: {'met' if ok else 'NOT met'})")
    s = spec.target_fwdbwd
    cpu = _cell(frame, "cpu", "fwdbwd", s)
    pure = {name: _cell(frame, name, "fwdbwd", s) for name in ("torch", "ref", *PEERS)}
    pure = {k: v for k, v in pure.items() if v}
    if cpu and pure:
        best = min(pure, key=pure.get)
        ratio = pure[best] / cpu
        lines.append(f"- forward + backward at B={s.B}, D={s.D}, L={s.L}, N={s.N}: `cpu` "
                     f"{cpu:.2f} ms, fastest pure-PyTorch form here `{best}` {pure[best]:.1f} "
                     f"ms: **{ratio:.1f}x** (target >= 4x: {'met' if ratio >= 4 else 'NOT met'})")
    return lines


def plot_throughput(frame: pd.DataFrame, path: Path, roof: dict) -> Path | None:
    """GFLOP/s against L at the (B, D, N, G) with the most lengths, one line per impl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if frame.empty:
        return None
    keys = ["B", "D", "N", "G"]
    sizes = frame.groupby(keys).L.nunique()
    key = sizes.idxmax()
    sub = frame[(frame[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)]
    modes = list(dict.fromkeys(sub["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        part = sub[sub["mode"] == mode]
        for impl, rows in part.groupby("impl", sort=False):
            rows = rows.sort_values("L")
            ax.plot(rows.L, rows.gflops, marker="o", label=impl)
        ax.axhline(roof["gemm_gflops"], ls="--", c="k", lw=1,
                   label=f"FLOP roofline {roof['gemm_gflops']:.0f} GFLOP/s")
        ax.set(xscale="log", yscale="log", xlabel="sequence length L",
               ylabel="GFLOP/s (9BDLN+BDL" + (", x3 for fwd+bwd)" if mode == "fwdbwd" else ")"),
               title=f"{mode}, B={key[0]} D={key[1]} N={key[2]} G={key[3]}")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted(part.L.unique()), [str(v) for v in sorted(part.L.unique())])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_kernel_report(frame: pd.DataFrame, meta: dict, spec: KernelSweepSpec,
                        suite_name: str, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    roof, env = meta["rooflines"], meta["env"]
    plot = plot_throughput(frame, out_dir / "throughput_vs_length.png", roof)
    lines = [
        f"# {suite_name}: selective-scan kernels",
        "",
        f"Generated by `python run_bench.py suites/{suite_name}.yaml` (regenerates everything "
        "here). float32, VMamba initialisation (A = -[1..N], dt ~ logU[1e-3, 0.1]), softplus "
        "on, with D and delta_bias.",
        "",
        f"Machine: {env.get('cpu')}, {env.get('threads')} threads, torch {env.get('torch')}, "
        f"commit {env.get('git_commit')}. Rooflines measured in this run: copy bandwidth "
        f"**{roof['bandwidth_gbs']:.1f} GB/s**, SGEMM **{roof['gemm_gflops']:.0f} GFLOP/s**, "
        f"torch.exp **{roof['exp_gexps']:.2f} Gexp/s** (the spec's quiet-machine values: "
        "33.5 GB/s, 171 GFLOP/s, 2.0 Gexp/s). Timings on a shared machine are noisy (about "
        "+-15% on a quiet one, much more under load).",
        "",
        *(["**This run was on a loaded machine** (measured bandwidth or SGEMM rate under half "
            "of the quiet-machine values): the absolute numbers are inflated; rerun on a quiet "
            "machine for figures to quote.", ""]
          if roof["bandwidth_gbs"] < 0.5 * 33.5 or roof["gemm_gflops"] < 0.5 * 171 else []),
        "## Headline checks",
        "",
        *(headline(frame, spec) or ["- (target shapes not in this sweep)"]),
        "",
        "Columns: `x roof` = time / max(bytes / bandwidth, FLOPs / SGEMM rate); `x BW` = time / "
        "(bytes / bandwidth); `x exp` = time / (B*D*L*N exps (x2 for fwd+bwd) at torch.exp's "
        "rate); `vs ref` = speed-up over `ref`; `err` = max |x - ref| / max(1, |ref|) over the "
        "output (and every gradient for fwd+bwd).",
    ]
    for mode, title in (("fwd", "Forward"), ("fwdbwd", "Forward + backward")):
        part = frame[frame["mode"] == mode]
        if part.empty:
            continue
        lines += ["", f"## {title}", "",
                  "| B | D | L | N | G | impl | ms | GB/s | GFLOP/s | x roof | x BW | x exp | "
                  "vs ref | err |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, shape_rows in part.groupby(["B", "D", "L", "N", "G"], sort=False):
            ref_ms = shape_rows[shape_rows.impl == "ref"].ms
            for _, r in shape_rows.iterrows():
                vs = f"{float(ref_ms.iloc[0]) / r.ms:.1f}x" if len(ref_ms) else "-"
                err = "-" if pd.isna(r.err_vs_ref) else f"{r.err_vs_ref:.1e}"
                lines.append(f"| {r.B} | {r.D} | {r.L} | {r.N} | {r.G} | {r.impl} | "
                             f"{r.ms:.2f} | {r.gbs:.2f} | {r.gflops:.1f} | {r.x_roof:.1f} | "
                             f"{r.x_bw:.1f} | {r.x_exp:.2f} | {vs} | {err} |")
    if plot:
        lines += ["", "## Throughput against sequence length", "",
                  f"![throughput]({plot.name})"]
    lines += ["", "Raw numbers: `results.csv`; rooflines and environment: `meta.json`.", ""]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
