"""Kill a run mid-cell (its whole process tree) and read back what the store kept, for the
tests that a resumed run ends exactly where an uninterrupted one does."""
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.results.store import CellStore

REPO = Path(__file__).resolve().parents[2]

#: environment of the ``run_bench.py`` subprocesses: this checkout's code, one thread, and a
#: short heartbeat so a killed worker's cell is noticed within seconds
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                  "SSMBENCH_HEARTBEAT_S": "1", "SSMBENCH_GRACE_S": "4"}


def store_if_exists(runs: Path, name: str) -> CellStore | None:
    return CellStore(name, None, runs) if (runs / name / "study.journal").exists() else None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc): torchrun starts its ranks in sessions of their
    own, out of reach of a process-group kill."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def kill_when_mid_cell(cmd: list[str], runs: Path, name: str, after: float,
                       timeout: float = 240) -> None:
    """Start ``cmd`` and SIGKILL it and every process it started once a running cell has
    written a checkpoint later than ``after`` (a time stamp), i.e. mid-training."""
    proc = subprocess.Popen(cmd, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            store = store_if_exists(runs, name)
            for t in store.running() if store else []:
                ckpt = runs / name / "cells" / t.user_attrs.get("cell_id", "-") / "checkpoint.pt"
                if ckpt.is_file() and ckpt.stat().st_mtime > after:
                    kill_tree(proc)
                    return
            time.sleep(0.1)
        raise AssertionError(f"{cmd[1:3]} finished (rc {proc.poll()}) before it could be killed")
    finally:
        if proc.poll() is None:
            kill_tree(proc)


def stored_results(runs: Path, name: str) -> dict[str, dict]:
    """label -> what the store keeps of its COMPLETE trial that a rerun must reproduce."""
    out = {}
    for t in CellStore(name, None, runs).latest_results():
        assert t.state.name == "COMPLETE", (t.user_attrs["label"], t.user_attrs.get("error"))
        out[t.user_attrs["label"]] = {"metrics": t.user_attrs.get("metrics"),
                                      "history": t.user_attrs["history"], "values": t.values,
                                      "intermediate": t.intermediate_values}
    return out


def resumed_from(runs: Path, name: str) -> list[int]:
    return [t.user_attrs["resumed_from"] for t in CellStore(name, None, runs).trials()
            if t.state.name == "COMPLETE"]
