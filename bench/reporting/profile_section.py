"""The profile section of a suite report: FLOPs in both conventions, latency, throughput,
memory and where the time goes, one row per profiled cell, with the settings each was measured
under (bench/reporting/suite_report.py inserts it; the numbers come from ``profile_model`` via
the store)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.profiling.breakdown import CATEGORIES
from bench.reporting.markdown import markdown_table
from bench.reporting.markdown import significant as _num


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


def profiled_cells(store, ids: set[str] | None = None) -> list[tuple[dict, dict, str]]:
    """(config, profile, state) of every cell with a profile, in the store's order; only the
    cells whose id is in ``ids`` when given (the suite's grid: cells that left it stay stored)."""
    out = []
    for trial in store.latest_results():
        profile = trial.user_attrs.get("profile") or {}
        if ids is not None and trial.user_attrs.get("cell_id") not in ids:
            continue
        if profile:
            out.append((trial.user_attrs["config"], profile, trial.state.name))
    return out


def grouped(cells) -> list[tuple[dict, list[dict], list[str]]]:
    """Cells that differ only by seed, together: (first config, profiles, states) per
    model/size/fusion and input shapes. FLOPs and parameters do not depend on the seed; the
    latency's spread over seeds is a measure of its reproducibility."""
    groups: dict[tuple, tuple[dict, list, list]] = {}
    for cfg, p, state in cells:
        key = (_cell_name(cfg), _inputs(p))
        entry = groups.setdefault(key, (cfg, [], []))
        entry[1].append(p)
        entry[2].append(state)
    return list(groups.values())


def _median(profiles: list[dict], key: str) -> float | None:
    values = [p[key] for p in profiles if p.get(key) is not None]
    return float(pd.Series(values).median()) if values else None


def _latency(profiles: list[dict]) -> str:
    """Median over seeds of each cell's latency median, with the range over seeds."""
    values = [p["latency_ms_median"] for p in profiles if p.get("latency_ms_median")]
    if not values:
        return "–"
    text = _num(float(pd.Series(values).median()))
    return text + (f" ({_num(min(values))}–{_num(max(values))})" if len(values) > 1 else "")


def _samples(profiles: list[dict]) -> str:
    p = profiles[0]
    if not p.get("latency_windows"):
        return str(p.get("latency_samples", "–"))
    windows = sorted({q.get("latency_windows") for q in profiles if q.get("latency_windows")})
    span = f"{windows[0]}" if len(windows) == 1 else f"{windows[0]}–{windows[-1]}"
    return (f"{p.get('latency_samples')}×{span}"
            + (f", {p['latency_processes']} proc" if p.get("latency_processes") else ""))


def _flops_text(profiles: list[dict], key: str) -> str:
    values = {p.get(key) for p in profiles}
    text = _num(profiles[0].get(key), 4)
    return text if len(values) == 1 else text + " (differs across seeds!)"


def summary_table(cells) -> pd.DataFrame:
    rows = []
    for cfg, profiles, states in grouped(cells):
        p = profiles[0]
        pub, full = p.get("gmacs_published"), p.get("gmacs_full")
        quiet = [q.get("latency_quiet") for q in profiles if q.get("latency_quiet") is not None]
        iqr, p90 = _median(profiles, "latency_ms_iqr"), _median(profiles, "latency_ms_p90")
        drift = _median(profiles, "latency_drift")
        throughput = _median(profiles, "throughput_samples_per_s")
        rows.append({
            "cell": _cell_name(cfg), "inputs": _inputs(p),
            "state": ", ".join(f"{n}× {s}" if len(profiles) > 1 else s
                               for s, n in pd.Series(states).value_counts(sort=False).items()),
            "seeds": len(profiles),
            "Params (M)": _num(p.get("params_m"), 4),
            "GMACs published": _flops_text(profiles, "gmacs_published"),
            "GMACs full": _flops_text(profiles, "gmacs_full"),
            "scan +%": _num((full - pub) / pub * 100, 3) if pub and full is not None else "–",
            "no handle": sum((p.get("unsupported_ops") or {}).values()),
            "latency ms (range over seeds)": _latency(profiles),
            "IQR ms": _num(iqr, 2), "p90 ms": _num(p90),
            "samples": _samples(profiles),
            "drift %": _num(drift * 100, 2) if drift is not None else "–",
            "quiet": f"{sum(quiet)}/{len(quiet)}" if quiet else "–",
            "img/s (batch)": (f"{_num(throughput)} ({p.get('throughput_batch_size')})"
                              if throughput else "–"),
            "peak MB infer (+call)": _mem(p, "infer"),
            "peak MB train (+call)": _mem(p, "train"),
            "train step ms": _num(_median(profiles, "train_step_ms_median")),
        })
    return pd.DataFrame(rows)


def breakdown_table(cells) -> pd.DataFrame | None:
    """Each op category's share of the profiled time, mean over seeds."""
    rows = []
    for cfg, profiles, _ in grouped(cells):
        phases = dict.fromkeys(ph for p in profiles for ph in (p.get("breakdown") or {}))
        for phase in phases:
            shares = [p["breakdown"][phase] for p in profiles if phase in
                      (p.get("breakdown") or {})]
            row = {"cell": _cell_name(cfg), "call": phase, "seeds": len(shares),
                   "profiled ms": _num(float(pd.Series([s.get("total_ms") for s in shares])
                                             .median()))}
            for name in CATEGORIES:
                share = sum(s.get(f"{name}_share", 0) for s in shares) / len(shares)
                row[name.replace("_", "-")] = f"{share * 100:.1f}%"
            row["time basis"] = shares[0].get("time_basis", "–")
            rows.append(row)
    return pd.DataFrame(rows) if rows else None


def cross_check_table(cells) -> pd.DataFrame | None:
    rows = []
    for cfg, profiles, _ in grouped(cells):
        check = profiles[0].get("flop_cross_check")
        if check:
            rows.append({"cell": _cell_name(cfg),
                         "fvcore GMACs (matmul+conv)": _num(check["fvcore_gmacs"], 5),
                         "FlopCounterMode GFLOPs": _num(check["flop_counter_gflops"], 5),
                         "FlopCounterMode GMACs (÷2)": _num(check["flop_counter_gmacs"], 5),
                         "ratio": _num(check["ratio"], 5)})
    return pd.DataFrame(rows) if rows else None


def module_table(cells, depth: int = 1) -> pd.DataFrame | None:
    """FLOPs per top-level module, once per model/size/fusion (they do not depend on the seed)."""
    rows = []
    for cfg, profiles, _ in grouped(cells):
        by_module = (profiles[0].get("flops") or {}).get("by_module") or {}
        for name, values in by_module.items():
            if name and name.count(".") < depth:
                rows.append({"cell": _cell_name(cfg), "module": name,
                             **{f"GMACs {k}": _num(v, 4) for k, v in values.items()}})
    return pd.DataFrame(rows) if rows else None


def throughput_table(cells) -> pd.DataFrame | None:
    rows = []
    for cfg, profiles, _ in grouped(cells):
        p = profiles[0]
        for index, r in enumerate(p.get("throughput") or []):
            if r.get("batch_size_requested") == 1 and len(p["throughput"]) == 1:
                continue
            same = [q["throughput"][index] for q in profiles
                    if len(q.get("throughput") or []) > index]
            rows.append({"cell": _cell_name(cfg), "seeds": len(same),
                         "batch asked": r["batch_size_requested"],
                         "batch run": r.get("batch_size"),
                         "OOM at": ", ".join(map(str, r.get("oom_batch_sizes") or [])) or "–",
                         "step ms": _num(_median(same, "step_ms_median")),
                         "img/s": _num(_median(same, "samples_per_s")),
                         "precision": r.get("precision"), "threads": r.get("threads")})
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
    return lines + list(dict.fromkeys(notes))


def profile_section(store, max_depth: int = 1, out_dir=None,
                    ids: set[str] | None = None) -> list[str]:
    """Markdown lines of the profile section ([] when no cell has a profile) over the cells in
    ``ids`` (all stored cells when None); links ``latency_repro.md`` when
    ``ssmbench profile-repro`` wrote one into ``out_dir``."""
    cells = profiled_cells(store, ids)
    if not cells:
        return []
    lines = ["## Profile", "",
             "One row per model/size/fusion: FLOPs and parameters do not depend on the seed; "
             "latency is the median over seeds of each cell's median, with its range over "
             "seeds, and IQR, p90, drift and memory are medians over seeds. "
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
             "", markdown_table(summary_table(cells)), ""]
    cross = [(cfg, p["timer_check"]) for cfg, p, _ in cells if p.get("timer_check")]
    if cross:
        lines += ["### Latency against torch.utils.benchmark.Timer", "",
                  "The same call timed by `Timer.timeit(samples)` over as many windows (its "
                  "quietest window's mean per call).", "",
                  markdown_table(pd.DataFrame([
                      {"cell": _cell_name(cfg), "seed": cfg.get("seed", "–"),
                       "ours ms": _num(c["profiler_ms"]), "Timer ms": _num(c["timer_ms"]),
                       "ours / Timer": f"{c['ratio']:.3f}"} for cfg, c in cross])), ""]
    if out_dir is not None and (Path(out_dir) / "latency_repro.md").exists():
        lines += ["Back-to-back runs of this suite compared: [latency_repro.md]"
                  "(latency_repro.md) (`ssmbench profile-repro`).", ""]
    table = breakdown_table(cells)
    if table is not None:
        lines += ["### Where the time goes", "",
                  "torch.profiler self time per op, each op given to its nearest enclosing scan "
                  "(SelectiveScanFn), cross-scan/merge or convolution node; the rest is *other*.",
                  "", markdown_table(table), ""]
    table = throughput_table(cells)
    if table is not None:
        lines += ["### Throughput", "", markdown_table(table), ""]
    table = cross_check_table(cells)
    if table is not None:
        lines += ["### FLOP cross-check", "",
                  "fvcore (trace, MACs) against torch.utils.flop_counter.FlopCounterMode "
                  "(dispatch, 2 FLOPs per MAC) on the ops both count: matmuls and convolutions.",
                  "", markdown_table(table), ""]
    table = module_table(cells, max_depth)
    if table is not None:
        lines += ["### FLOPs by module", "", markdown_table(table), ""]
    lines += ["### Profile settings", "", *settings_lines(cells), ""]
    return lines
