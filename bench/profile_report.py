"""The profile section of a suite report: FLOPs in both conventions, latency, throughput,
memory and where the time goes, one row per profiled cell, with the settings each was measured
under (bench/report.py inserts it; the numbers come from ``profile_model`` via the store)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.profile_breakdown import CATEGORIES


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _mem(profile: dict, phase: str) -> str:
    """The process's (or allocator's) peak, and in brackets what the call added to it."""
    peak = profile.get(f"peak_mem_mb_{phase}")
    if peak is None:
        return "–"
    return f"{_num(peak, 4)} (+{_num(profile.get(f'delta_mem_mb_{phase}'), 3)})"


def _cell_name(cfg: dict) -> str:
    return f"{cfg['model']}/{cfg['size']}/{cfg['fusion']}"


def _inputs(profile: dict) -> str:
    shapes = profile.get("input_shapes") or {}
    return " + ".join(f"{k} {'×'.join(map(str, s))}" for k, s in shapes.items()) or "–"


def profiled_cells(store) -> list[tuple[dict, dict, str]]:
    """(config, profile, state) of every cell with a profile, in the store's order."""
    out = []
    for trial in store.latest_results():
        profile = trial.user_attrs.get("profile") or {}
        if profile:
            out.append((trial.user_attrs["config"], profile, trial.state.name))
    return out


def summary_table(cells) -> pd.DataFrame:
    rows = []
    for cfg, p, state in cells:
        pub, full = p.get("gmacs_published"), p.get("gmacs_full")
        latency = p.get("latency_ms_median")
        rows.append({
            "cell": _cell_name(cfg), "inputs": _inputs(p), "state": state,
            "Params (M)": _num(p.get("params_m"), 4),
            "GMACs published": _num(pub, 4), "GMACs full": _num(full, 4),
            "scan +%": _num((full - pub) / pub * 100, 3) if pub and full is not None else "–",
            "no handle": sum((p.get("unsupported_ops") or {}).values()),
            "latency ms (IQR, p90)": (f"{_num(latency)} ({_num(p.get('latency_ms_iqr'), 2)}, "
                                      f"{_num(p.get('latency_ms_p90'))})" if latency else "–"),
            "samples": (f"{p.get('latency_samples')}×{p['latency_windows']}"
                        + (f", {p['latency_processes']} proc" if p.get("latency_processes")
                           else "")
                        if p.get("latency_windows") else p.get("latency_samples", "–")),
            "drift %": _num(p["latency_drift"] * 100, 2) if "latency_drift" in p else "–",
            "quiet": {True: "yes", False: "no"}.get(p.get("latency_quiet"), "–"),
            "img/s (batch)": (f"{_num(p['throughput_samples_per_s'])} "
                              f"({p.get('throughput_batch_size')})"
                              if p.get("throughput_samples_per_s") else "–"),
            "peak MB infer (+call)": _mem(p, "infer"),
            "peak MB train (+call)": _mem(p, "train"),
            "train step ms": _num(p.get("train_step_ms_median")),
        })
    return pd.DataFrame(rows)


def breakdown_table(cells) -> pd.DataFrame | None:
    rows = []
    for cfg, p, _ in cells:
        for phase, shares in (p.get("breakdown") or {}).items():
            row = {"cell": _cell_name(cfg), "call": phase,
                   "profiled ms": _num(shares.get("total_ms"))}
            for name in CATEGORIES:
                row[name.replace("_", "-")] = f"{shares.get(f'{name}_share', 0) * 100:.1f}%"
            row["time basis"] = shares.get("time_basis", "–")
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def cross_check_table(cells) -> pd.DataFrame | None:
    rows = []
    for cfg, p, _ in cells:
        check = p.get("flop_cross_check")
        if check:
            rows.append({"cell": _cell_name(cfg),
                         "fvcore GMACs (matmul+conv)": _num(check["fvcore_gmacs"], 5),
                         "FlopCounterMode GFLOPs": _num(check["flop_counter_gflops"], 5),
                         "FlopCounterMode GMACs (÷2)": _num(check["flop_counter_gmacs"], 5),
                         "ratio": _num(check["ratio"], 5)})
    return pd.DataFrame(rows) if rows else None


def module_table(cells, depth: int = 1) -> pd.DataFrame | None:
    rows = []
    for cfg, p, _ in cells:
        by_module = (p.get("flops") or {}).get("by_module") or {}
        for name, values in by_module.items():
            if name and name.count(".") < depth:
                rows.append({"cell": _cell_name(cfg), "module": name,
                             **{f"GMACs {k}": _num(v, 4) for k, v in values.items()}})
    return pd.DataFrame(rows) if rows else None


def throughput_table(cells) -> pd.DataFrame | None:
    rows = []
    for cfg, p, _ in cells:
        for r in p.get("throughput") or []:
            if r.get("batch_size_requested") == 1 and len(p["throughput"]) == 1:
                continue
            rows.append({"cell": _cell_name(cfg), "batch asked": r["batch_size_requested"],
                         "batch run": r.get("batch_size"),
                         "OOM at": ", ".join(map(str, r.get("oom_batch_sizes") or [])) or "–",
                         "step ms": _num(r.get("step_ms_median")),
                         "img/s": _num(r.get("samples_per_s")), "precision": r.get("precision"),
                         "threads": r.get("threads")})
    return pd.DataFrame(rows) if rows else None


def settings_lines(cells) -> list[str]:
    seen: dict[str, set] = {}
    notes = []
    for cfg, p, _ in cells:
        for key, value in (p.get("env") or {}).items():
            seen.setdefault(key, set()).add(str(value))
        if p.get("memory_method"):
            seen.setdefault("memory", set()).add(p["memory_method"])
        for key in ("latency_ms_note", "compile_error", "latency_processes_error"):
            if p.get(key):
                notes.append(f"- {_cell_name(cfg)}: {key.split('_')[0]} {p[key]}")
        backend = (p.get("flops") or {}).get("scan_backend")
        if backend:
            seen.setdefault("FLOP-count scan backend", set()).add(backend)
    lines = [f"- {key}: {', '.join(sorted(values))}" for key, values in seen.items()]
    return lines + notes


def profile_section(store, max_depth: int = 1, out_dir=None) -> list[str]:
    """Markdown lines of the profile section ([] when no cell has a profile); links
    ``latency_repro.md`` when ``ssmbench profile-repro`` wrote one into ``out_dir``."""
    cells = profiled_cells(store)
    if not cells:
        return []
    lines = ["## Profile", "",
             "FLOPs as fvcore GMACs (one multiply-add = one FLOP): *published* skips the "
             "selective scan and element-wise ops (the seed repositories' counting), *full* "
             "adds the scan as 9·B·L·D·N + B·D·L; *scan +%* is what the scan adds. Latency: "
             "batch 1, after warm-up, the median (IQR, p90) of the quietest of the timing "
             "windows (*samples*: calls × windows; with *N proc*, the median of N fresh "
             "processes, each timed so); *drift %*: how much slower the median over "
             "every timed call was, i.e. how busy the machine was; *quiet*: whether a window's "
             "median came within `profile.quiet_ratio` of the fastest call (no: the host was "
             "busy throughout and the figure is an upper bound). Peak memory: the "
             "peak during one call (method below), in brackets what the call added above the "
             "memory held before it.",
             "", summary_table(cells).to_markdown(index=False), ""]
    cross = [(cfg, p["timer_check"]) for cfg, p, _ in cells if p.get("timer_check")]
    if cross:
        lines += ["### Latency against torch.utils.benchmark.Timer", "",
                  "The same call timed by `Timer.timeit(samples)` over as many windows (its "
                  "quietest window's mean per call).", "",
                  pd.DataFrame([{"cell": _cell_name(cfg), "ours ms": _num(c["profiler_ms"]),
                                 "Timer ms": _num(c["timer_ms"]),
                                 "ours / Timer": f"{c['ratio']:.3f}"}
                                for cfg, c in cross]).to_markdown(index=False), ""]
    if out_dir is not None and (Path(out_dir) / "latency_repro.md").exists():
        lines += ["Back-to-back runs of this suite compared: [latency_repro.md]"
                  "(latency_repro.md) (`ssmbench profile-repro`).", ""]
    table = breakdown_table(cells)
    if table is not None:
        lines += ["### Where the time goes", "",
                  "torch.profiler self time per op, each op given to its nearest enclosing scan "
                  "(SelectiveScanFn), cross-scan/merge or convolution node; the rest is *other*.",
                  "", table.to_markdown(index=False), ""]
    table = throughput_table(cells)
    if table is not None:
        lines += ["### Throughput", "", table.to_markdown(index=False), ""]
    table = cross_check_table(cells)
    if table is not None:
        lines += ["### FLOP cross-check", "",
                  "fvcore (trace, MACs) against torch.utils.flop_counter.FlopCounterMode "
                  "(dispatch, 2 FLOPs per MAC) on the ops both count: matmuls and convolutions.",
                  "", table.to_markdown(index=False), ""]
    table = module_table(cells, max_depth)
    if table is not None:
        lines += ["### FLOPs by module", "", table.to_markdown(index=False), ""]
    lines += ["### Profile settings", "", *settings_lines(cells), ""]
    return lines
