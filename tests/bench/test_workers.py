"""Several worker processes drain one suite through the default journal-file store: each cell
runs exactly once (and no FAIL trial is left by workers starting together), and a worker killed
with SIGKILL mid-cell has its cell finished (resumed from its checkpoint) by another worker. The
PostgreSQL variants are in test_postgres.py."""
from bench.results.store import CellStore
from tests.helpers.workers import (
    LONG_SUITE,
    SUITE,
    check_each_cell_once,
    check_killed_cell_finished,
    check_no_failed_trials,
    finish,
    kill_one_and_finish_the_other,
    start_worker,
)


def test_three_worker_processes_run_each_cell_once(write_suite, tmp_path):
    path = write_suite(SUITE)
    procs = [start_worker(path, tmp_path) for _ in range(3)]
    results = [finish(p) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    store = CellStore("toy", None, tmp_path / "runs")
    by_label = check_each_cell_once(store, 4)
    check_no_failed_trials(store)
    pids = {t.user_attrs["worker"]["pid"] for ts in by_label.values() for t in ts
            if t.state.name == "COMPLETE"}
    assert pids <= {p.pid for p in procs}
    report = (tmp_path / "reports" / "toy" / "README.md").read_text()
    for label in by_label:
        model, size, fusion, _, seed = label.split("/")
        assert f"| {model} | {size}   | {fusion}" in report


def test_sigkilled_worker_cell_is_finished_by_the_other(write_suite, tmp_path):
    path = write_suite(LONG_SUITE)
    procs = [start_worker(path, tmp_path) for _ in range(2)]
    runs = tmp_path / "runs" / "toy"

    def store_of():
        return CellStore("toy", None, tmp_path / "runs") if (runs / "study.journal").exists() \
            else None

    killed, survivor, label = kill_one_and_finish_the_other(procs, store_of, runs)
    store = store_of()
    check_each_cell_once(store, 4)
    check_killed_cell_finished(store, label, killed.pid, survivor.pid)
