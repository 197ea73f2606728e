"""Workers on "several machines" share one suite through a real PostgreSQL server on loopback
(Debian's postgresql: initdb + pg_ctl into a temporary folder). Three worker processes run each
cell exactly once, leaving no FAIL trial, and the report, read back from the server, lists them
all; a worker killed with SIGKILL mid-cell stops its heartbeat and the other worker retries the
cell from its checkpoint. Each worker names its own host (SSMBENCH_WORKER_HOST), so only
Optuna's heartbeat, not the same-host process check, can notice the dead one."""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.cli import main
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
    trials_by_label,
)

pytestmark = pytest.mark.postgres

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed "
                                                  "(pip install 'ssmbench[postgres]')")


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return str(Path(found[-1]).parent) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql)")
    # the server refuses to run as root: run it as the 'postgres' system user then
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to drop to the 'postgres' user")
        as_user = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="ssmbench-pg-"))
    data = base / "data"
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*cmd):
        return subprocess.run(as_user + list(cmd), check=True, capture_output=True, text=True,
                              timeout=120)

    try:
        run(f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "-t",
            "60", "-o", f"-c listen_addresses=127.0.0.1 -p {port} "
                        f"-c unix_socket_directories={base} -c fsync=off", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr}")
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE ssmbench")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/ssmbench"
    finally:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate",
                                  "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _suite(write_suite, text: str, name: str):
    return write_suite(text.replace("name: toy\n", f"name: {name}\n", 1), f"{name}.yaml")


def test_three_workers_on_postgres_run_each_cell_once(write_suite, tmp_path, postgres_url):
    path = _suite(write_suite, SUITE, "pg_once")
    procs = [start_worker(path, tmp_path, postgres_url, host=f"machine-{i}") for i in range(3)]
    results = [finish(p) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    store = CellStore("pg_once", postgres_url, tmp_path / "runs")
    by_label = check_each_cell_once(store, 4)
    check_no_failed_trials(store)
    hosts = {t.user_attrs["worker"]["host"] for ts in by_label.values() for t in ts}
    assert hosts <= {"machine-0", "machine-1", "machine-2"}
    # the report is regenerated from the shared storage alone
    report_dir = tmp_path / "other_machine"
    assert main(["report", str(path), "--storage", postgres_url, "--runs-dir",
                 str(tmp_path / "elsewhere"), "--reports-dir", str(report_dir)]) == 0
    report = (report_dir / "pg_once" / "README.md").read_text()
    for label in by_label:
        model, size, fusion, _, _ = label.split("/")
        assert f"| {model} | {size}   | {fusion}" in report
    assert report.count("| dualcnn |") >= 2


def test_sigkilled_worker_cell_is_retried_through_heartbeats(write_suite, tmp_path,
                                                             postgres_url):
    path = _suite(write_suite, LONG_SUITE, "pg_kill")
    procs = [start_worker(path, tmp_path, postgres_url, host=f"machine-{i}") for i in range(2)]
    runs = tmp_path / "runs" / "pg_kill"
    stores = []

    def store_of():
        if not stores:
            try:
                stores.append(CellStore("pg_kill", postgres_url, tmp_path / "runs"))
            except Exception:  # the workers have not created the study yet
                return None
        return stores[0]

    killed, survivor, label = kill_one_and_finish_the_other(procs, store_of, runs)
    store = CellStore("pg_kill", postgres_url, tmp_path / "runs")
    check_each_cell_once(store, 4)
    check_killed_cell_finished(store, label, killed.pid, survivor.pid)
    assert trials_by_label(store)[label][-1].user_attrs["worker"]["host"] != \
        next(t for t in trials_by_label(store)[label]
             if t.state.name == "FAIL").user_attrs["worker"]["host"]
