"""Worker processes of ``run_bench.py`` sharing one suite, and checks on the cells they ran
(used by the journal-file and the PostgreSQL worker tests)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.results.store import CellStore
from tests.helpers.suites import TOY_SUITE

REPO = Path(__file__).resolve().parents[2]

#: 4 cells, no profiling (timing is not what these tests are about)
SUITE = TOY_SUITE.replace("seeds: [0]", "seeds: [0, 1]").replace(
    "train: {", "stages: [train, eval]\ntrain: {")
#: the same cells at 40 iterations, checkpoints every 5: long enough to be killed mid-cell
LONG_SUITE = SUITE.replace("iterations: 12", "iterations: 40").replace(
    "checkpoint_every: 4", "checkpoint_every: 5")


def start_worker(suite: Path, tmp_path: Path, storage: str | None = None,
                 host: str | None = None) -> subprocess.Popen:
    """One `run_bench.py SUITE` process, as a user would start on each machine."""
    cmd = [sys.executable, str(REPO / "run_bench.py"), str(suite), "--runs-dir",
           str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), "--no-progress"]
    if storage:
        cmd += ["--storage", storage]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SSMBENCH_HEARTBEAT_S": "1",
           "SSMBENCH_GRACE_S": "4", "OMP_NUM_THREADS": "1"}
    if host:
        env["SSMBENCH_WORKER_HOST"] = host  # as if each worker ran on its own machine
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out + err


def trials_by_label(store: CellStore) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in sorted(store.trials(), key=lambda t: t.number):
        out.setdefault(t.user_attrs["label"], []).append(t)
    return out


def check_each_cell_once(store: CellStore, cells: int) -> dict[str, list]:
    by_label = trials_by_label(store)
    assert len(by_label) == cells
    for label, trials in by_label.items():
        assert [t.state.name for t in trials].count("COMPLETE") == 1, (label, trials)
    return by_label


def check_no_failed_trials(store: CellStore) -> None:
    """Workers starting together leave no FAIL trial behind (not even hidden duplicates, which
    optuna-dashboard would show as failures)."""
    failed = [(t.number, t.user_attrs.get("error") or t.user_attrs.get("duplicate_of"))
              for t in store.study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
    assert failed == []


def kill_mid_cell(procs: list[subprocess.Popen], store_of, runs: Path, deadline_s: float = 150):
    """SIGKILL the worker running a cell that has written a checkpoint; returns (killed
    process, the label of its cell)."""
    by_pid = {p.pid: p for p in procs}
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        store = store_of()
        for t in store.running() if store else []:
            pid = (t.user_attrs.get("worker") or {}).get("pid")
            ckpt = runs / "cells" / t.user_attrs.get("cell_id", "-") / "checkpoint.pt"
            if pid in by_pid and ckpt.is_file() and by_pid[pid].poll() is None:
                os.killpg(pid, signal.SIGKILL)
                by_pid[pid].wait()
                return by_pid[pid], t.user_attrs["label"]
        time.sleep(0.3)
    raise AssertionError("no worker could be killed mid-cell")


def kill_one_and_finish_the_other(procs: list[subprocess.Popen], store_of, runs: Path):
    """SIGKILL the worker running a cell mid-way, let the other finish the suite; returns
    (killed, survivor, label of the killed cell). Every worker is gone afterwards."""
    try:
        killed, label = kill_mid_cell(procs, store_of, runs)
        survivor = next(p for p in procs if p is not killed)
        rc, output = finish(survivor)
        assert rc == 0, output
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    return killed, survivor, label


def check_killed_cell_finished(store: CellStore, label: str, killed_pid: int,
                               survivor_pid: int) -> None:
    trials = trials_by_label(store)[label]
    states = [t.state.name for t in trials]
    assert "FAIL" in states and states[-1] == "COMPLETE", states
    dead = trials[states.index("FAIL")]
    assert dead.user_attrs["worker"]["pid"] == killed_pid
    assert "worker stopped" in dead.user_attrs["error"]
    done = trials[-1]
    assert done.user_attrs["worker"]["pid"] == survivor_pid       # the other worker took it
    assert done.user_attrs["resumed_from"] > 0                     # from the killed checkpoint
    assert done.system_attrs["failed_trial"] == dead.number
