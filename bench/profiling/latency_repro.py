"""`ssmbench profile-repro SUITE`: is a latency figure reproducible on this machine?

Runs ``ssmbench profile SUITE`` two (``--runs``) times back to back, each in a fresh process
with its own store, and writes ``reports/<suite>/latency_repro.md`` (and ``.csv``): per cell the
latency median of every run, the largest difference between runs, how much slower the machine
was outside its quietest window (drift), and the profiler's median against
``torch.utils.benchmark.Timer`` on the same call where the suite sets ``profile.timer_check``.
Exit code 1 when a cell's runs differ by more than ``--tolerance`` (default 10%, the issue's
bound), so a lab can gate a latency table on it.
"""
from __future__ import annotations

import datetime as _dt
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.profiling.machine import cpu_model, git_commit
from bench.results.store import CellStore


def profile_study_name(suite, plain_suite) -> str:
    """The store name ``ssmbench profile`` uses: the suite's own when it is profile-only,
    otherwise ``<suite>-profile`` so a profile never mixes with trained cells."""
    return suite.name if plain_suite.spec.stages == ["profile"] else f"{suite.name}-profile"


def run_profiles(suite_path: str, set_values: list[str], runs: int, work_dir: Path,
                 progress: bool = True) -> list[Path]:
    """``runs`` fresh ``ssmbench profile`` processes, one after the other; their run dirs."""
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    dirs = []
    for index in range(1, runs + 1):
        runs_dir = work_dir / f"run{index}"
        command = [sys.executable, "-m", "bench.cli", "profile", suite_path,
                   "--runs-dir", str(runs_dir), "--reports-dir", str(work_dir / f"reports{index}"),
                   "--no-progress"]
        for value in set_values:
            command += ["--set", value]
        if progress:
            print(f"profile run {index}/{runs}: {' '.join(command[2:])}", flush=True)
        done = subprocess.run(command, capture_output=not progress, text=True)
        if done.returncode != 0:
            detail = (done.stderr or "").strip().splitlines()[-1:] if not progress else []
            raise RuntimeError(f"profile run {index} exited with {done.returncode}"
                               + (f": {detail[0]}" if detail else ""))
        dirs.append(runs_dir)
    return dirs


def _profiles(study: str, runs_dir: Path) -> dict[str, dict]:
    return {t.user_attrs["label"]: t.user_attrs.get("profile") or {}
            for t in CellStore(study, None, runs_dir).latest_results()}


def compare_runs(study: str, runs_dirs: list[Path], tolerance: float) -> pd.DataFrame:
    """One row per cell: each run's median, the spread between runs and the Timer check."""
    runs = [_profiles(study, d) for d in runs_dirs]
    rows = []
    for label in runs[0]:
        profiles = [r.get(label, {}) for r in runs]
        medians = [p.get("latency_ms_median") for p in profiles]
        if any(m is None for m in medians):
            continue
        spread = max(medians) / min(medians) - 1.0
        row = {"cell": label}
        for index, (p, m) in enumerate(zip(profiles, medians), start=1):
            row[f"run {index} ms"] = round(m, 3)
            row[f"run {index} all-call ms"] = round(p.get("latency_ms_median_all", m), 3)
        row["difference %"] = round(spread * 100, 1)
        row["windows"] = "/".join(str(p.get("latency_windows", 1)) for p in profiles)
        row["quiet"] = "/".join({True: "yes", False: "no"}.get(p.get("latency_quiet"), "–")
                                for p in profiles)
        row["samples"] = profiles[0].get("latency_samples")
        checks = [p["timer_check"]["ratio"] for p in profiles if p.get("timer_check")]
        if checks:
            row["ours / Timer"] = " / ".join(f"{c:.3f}" for c in checks)
            row["Timer ms (run 1)"] = round(profiles[0]["timer_check"]["timer_ms"], 3) \
                if profiles[0].get("timer_check") else None
        row["within"] = "yes" if spread <= tolerance else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def write_repro(frame: pd.DataFrame, out_dir: Path, suite_path: str, set_values: list[str],
                runs: int, tolerance: float, wall_s: float) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = "".join(f" --set {v}" for v in set_values)
    lines = [
        "# Latency reproducibility", "",
        f"Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `ssmbench profile-repro "
        f"{suite_path}{sets}`: {runs} back-to-back `ssmbench profile` processes, each with a "
        f"fresh store, {wall_s:.0f} s in all. Do not edit by hand.", "",
        f"- cpu: {cpu_model()}; git: {git_commit()}",
        f"- tolerance: {tolerance * 100:.0f}% (largest / smallest median - 1); "
        f"{int((frame['within'] == 'yes').sum()) if not frame.empty else 0} of {len(frame)} "
        "cells within it", "",
        "*run N ms*: the latency median that run reports (the quietest of its timing windows of "
        "*samples* consecutive calls; with `profile.processes` > 1, of its median process, whose "
        "windows and quiet flag are shown); *all-call ms*: the median over every timed call of "
        "that run, which moves with how busy the machine was; *quiet*: whether that run found a "
        "window whose median was within `profile.quiet_ratio` of its fastest call (no: the host "
        "was busy for all of `profile.max_time_s`); *ours / Timer*: that median over "
        "`torch.utils.benchmark.Timer.timeit` on the same call (the quietest of as many "
        "windows), one ratio per run.", "",
        frame.to_markdown(index=False) if not frame.empty else "No cell reported a latency.", ""]
    path = out_dir / "latency_repro.md"
    path.write_text("\n".join(lines))
    frame.to_csv(out_dir / "latency_repro.csv", index=False)
    return path
