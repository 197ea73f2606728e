"""The run registry: a suite run is an Optuna study, every cell an enqueued trial.

A trial's user attributes hold the cell id, its label and resolved configuration, and, once it
has run, its metrics, profile, artifact paths and the environment fingerprint. Storage is any
Optuna storage: by default a journal file under ``runs/<suite>/`` (embedded, no server), or
``--storage postgresql://...`` / ``sqlite:///...`` (RDBStorage) so that many workers on many
machines drain one suite.

Claiming a cell is Optuna's own atomic step: a WAITING trial is moved to RUNNING with
``storage.set_trial_state_values``, which succeeds for exactly one worker (this is how
``Study.ask`` pops enqueued trials). A worker that dies leaves a RUNNING trial behind; it is
failed and re-queued (a WAITING copy with the same parameters, configuration and checkpoint
directory, so it resumes) by the next ``sync`` or by any worker that runs out of queued cells:
on an RDB storage (PostgreSQL) when Optuna's heartbeat (recorded every interval by the worker's
heartbeat thread) is older than the grace period, the rule of ``fail_stale_trials``; on any
storage when the worker ran on this host and its process no longer exists; on a journal file
when the worker's own heartbeat attribute is older than the grace period. The retry copies the
trial as Optuna's ``RetryHeartbeatStaleTrialCallback`` does, and the failed trial keeps an
``error`` naming the worker. Queueing (``sync``) holds a lock shared by every worker of the
study (``sync_lock``: a PostgreSQL advisory lock, else a file lock beside the store), so workers
starting together queue each cell once and no duplicate is ever claimed; should one exist
anyway (a storage the lock cannot cover), ``_twin`` drops it.

A cell's id leaves out the settings that cannot change its result (bench/config/suite.py
``NOT_IN_CELL_ID``): a rerun after any other change queues only the cells whose id is new and
keeps the others; stored cells that left the grid stay in the store (a later run may want them
again) and reports leave them out and count them (``outside``).

``SSMBENCH_HEARTBEAT_S`` / ``SSMBENCH_GRACE_S`` set the heartbeat interval and grace period
(default 20 s / 120 s); ``SSMBENCH_WORKER_HOST`` names the worker's host (default: hostname).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from models.errors import UserError

HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 120
#: a cell is retried this many times after its worker died (then left FAIL for the next run)
MAX_STALE_RETRIES = 3


def heartbeat_interval() -> int:
    return int(os.environ.get("SSMBENCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S))


def grace_period() -> int:
    return int(os.environ.get("SSMBENCH_GRACE_S", GRACE_PERIOD_S))


def worker_host() -> str:
    return os.environ.get("SSMBENCH_WORKER_HOST") or socket.gethostname()


class StoreError(UserError):
    """A store problem to report without a traceback (bad storage URL, other directions)."""


@dataclass
class SyncSummary:
    total: int = 0
    done: int = 0
    queued: int = 0
    retried: int = 0
    stale: int = 0
    running: int = 0
    #: stored cells not in the suite's grid (kept, left out of reports)
    outside: int = 0


@dataclass
class Claim:
    """A cell this worker is running: its trial and configuration."""
    store: "CellStore"
    trial_id: int
    number: int
    config: dict
    #: the live trial when ``Study.ask`` handed it out (a search); else made on first use
    live: optuna.trial.Trial | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def trial(self) -> optuna.trial.Trial:
        """The live Optuna trial (``report``/``should_prune`` for search pruning)."""
        if self.live is None:
            self.live = _live_trial(self.store.study, self.trial_id)
        return self.live

    def set(self, key: str, value: Any) -> None:
        self.store.storage.set_trial_user_attr(self.trial_id, key, _jsonable(value))


def _jsonable(value: Any) -> Any:
    """User attributes must be JSON: NaN/inf become None, tuples lists, paths strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _jsonable(value.item())
    return str(value)


# The two functions below reach past Optuna's public API, which has no call for what they do.
# Optuna's major version is pinned in pyproject.toml; tests/bench/test_postgres.py (stale
# workers) and test_tracking.py (values reported to a grid cell's trial) exercise them.

def _heartbeat_stale_numbers(storage: RDBStorage, study_id: int) -> set[int] | None:
    """Numbers of the RUNNING trials whose Optuna heartbeat is older than the grace period (the
    database's clock, so the workers' clocks do not matter), or None if this Optuna lacks the
    call. The public ``optuna.storages.fail_stale_trials`` applies the same rule but fails the
    trials itself, and a finished trial takes no user attribute: the failed trial could not
    record which worker stopped and why (``error``)."""
    stale_ids = getattr(storage, "_get_stale_trial_ids", None)
    if stale_ids is None:  # pragma: no cover - a renamed private method
        return None
    return {storage.get_trial(trial_id).number for trial_id in stale_ids(study_id)}


def _live_trial(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
    """The live ``Trial`` of a claimed grid cell, to report intermediate values to. Optuna hands
    live trials out only from ``Study.ask``, which takes the oldest queued trial (and creates a
    new one when none is queued); a claimed cell is one particular trial, so its ``Trial`` is
    made from its id as ``Study.ask`` makes it."""
    return optuna.trial.Trial(study, trial_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the ``postgres`` extra
    installs psycopg2, so name it when psycopg 3 is absent."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and \
                importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_storage(url: str | None, suite_dir: Path):
    if url is None:
        suite_dir.mkdir(parents=True, exist_ok=True)
        path = str(suite_dir / "study.journal")
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if "://" in url:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_STALE_RETRIES,
                                                             inherit_intermediate_values=True)
                    return RDBStorage(_with_driver(url), heartbeat_interval=heartbeat_interval(),
                                      grace_period=grace_period(),
                                      heartbeat_stale_trial_callback=retry)
            except Exception as exc:  # bad URL, driver missing, server down
                # workers starting together race to create Optuna's tables: try again
                if "UniqueViolation" in repr(exc) or "already exists" in str(exc):
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise StoreError(f"cannot open storage {url!r}: {exc}") from None
        raise StoreError(f"cannot open storage {url!r}: its tables could not be created")
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


class CellStore:
    def __init__(self, suite_name: str, storage_url: str | None = None,
                 runs_dir: str | Path = "runs", directions: list[str] | None = None):
        self.suite_name = suite_name
        self.dir = Path(runs_dir) / suite_name
        self.storage_url = storage_url
        self.directions = list(directions or ["maximize"])
        self.storage = open_storage(storage_url, self.dir)
        # Optuna's INFO lines (a study created, a trial pruned) are not the harness's output
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(study_name=suite_name, storage=self.storage,
                                         directions=self.directions, load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(suite_name)
        if [d.name.lower() for d in self.study.directions] != self.directions:
            raise StoreError(
                f"study {suite_name!r} in {storage_url or self.dir} optimises "
                f"{[d.name.lower() for d in self.study.directions]}, not {self.directions}; "
                f"re-run with --fresh or give the suite a new name")
        self.host = worker_host()

    # ------------------------------------------------------------------ reading

    def trials(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False)
                if "cell_id" in t.user_attrs and "duplicate_of" not in t.user_attrs]

    def by_cell(self) -> dict[str, list[FrozenTrial]]:
        out: dict[str, list[FrozenTrial]] = {}
        for t in self.trials():
            out.setdefault(t.user_attrs["cell_id"], []).append(t)
        return out

    def cell_dir(self, cell_id: str) -> Path:
        return self.dir / "cells" / cell_id

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (storage calls take ids; trials show numbers)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    # ------------------------------------------------------------------ queueing

    def reset(self) -> None:
        """``--fresh``: forget every trial and artifact of this suite."""
        optuna.delete_study(study_name=self.suite_name, storage=self.storage)
        shutil.rmtree(self.dir / "cells", ignore_errors=True)
        self.study = optuna.create_study(study_name=self.suite_name, storage=self.storage,
                                         directions=self.directions)
        self.study_id = self.storage.get_study_id_from_name(self.suite_name)

    def fail_stale(self) -> int:
        """Fail RUNNING trials whose worker is gone and queue a retry of each (same parameters,
        configuration and cell directory: the retry resumes from the checkpoint). Returns how
        many were failed."""
        count = 0
        rdb_stale: set[int] = set()
        if isinstance(self.storage, RDBStorage):
            stale = _heartbeat_stale_numbers(self.storage, self.study_id)  # Optuna's rule
            if stale is None:  # pragma: no cover - the public form: fails, re-queues, no message
                before = {t.number for t in self.running()}
                optuna.storages.fail_stale_trials(self.study)
                count += len(before - {t.number for t in self.running()})
            else:
                rdb_stale = stale
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker") or {}
            beat = t.user_attrs.get("heartbeat", 0)
            dead = worker.get("host") == self.host and not _pid_alive(int(worker.get("pid", 0)))
            silent = not isinstance(self.storage, RDBStorage) and beat and \
                time.time() - beat > grace_period()
            if not (dead or silent or t.number in rdb_stale):
                continue
            why = "its process is gone" if dead else \
                f"no heartbeat for over {grace_period()} s"
            trial_id = self.trial_id(t.number)
            try:
                self.storage.set_trial_user_attr(
                    trial_id, "error", f"worker stopped while running this cell "
                    f"({worker.get('host')} pid {worker.get('pid')}: {why})")
                won = self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                won = False
            if not won:  # another worker failed it first and queued the retry
                continue
            self.requeue(t, stale=True)
            count += 1
        return count

    def requeue(self, trial: FrozenTrial, stale: bool = False) -> bool:
        """Queue a WAITING copy of ``trial`` (parameters, distributions, user attributes, the
        intermediate values when its worker died) as Optuna's retry callback does; False when
        the retry limit is reached."""
        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        if stale and len(history) > MAX_STALE_RETRIES:
            return False
        attrs = {k: v for k, v in trial.user_attrs.items()
                 if k not in ("worker", "heartbeat", "error")}
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=attrs,
            system_attrs={**trial.system_attrs, "failed_trial": history[0],
                          "retry_history": history},
            intermediate_values=trial.intermediate_values if stale else None))
        return True

    def running(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def outside(self, cells: list[dict]) -> int:
        """How many stored cells are not among ``cells`` (they left the grid, or a setting in
        their id changed): kept in the store, left out of reports."""
        ids = {c["id"] for c in cells}
        return sum(1 for cell_id in self.by_cell() if cell_id not in ids)

    @contextlib.contextmanager
    def sync_lock(self, timeout: float = 300):
        """Held while a worker queues cells, by every worker of this study: a PostgreSQL
        advisory lock (keyed by the study name) on a PostgreSQL storage, else a file lock in
        the suite's run directory (journal and SQLite stores live on this file system)."""
        if isinstance(self.storage, RDBStorage) and \
                self.storage.engine.dialect.name == "postgresql":
            import sqlalchemy

            key = int.from_bytes(hashlib.sha1(self.suite_name.encode()).digest()[:8], "big",
                                 signed=True)
            with self.storage.engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.dir / "sync.lock"), timeout=timeout):
            yield

    def sync(self, cells: list[dict], fresh: bool = False) -> SyncSummary:
        """Enqueue every cell that is not finished, queued or running; retry failed ones."""
        if fresh:
            self.reset()
        with self.sync_lock():
            return self._sync(cells)

    def _sync(self, cells: list[dict]) -> SyncSummary:
        summary = SyncSummary(total=len(cells), outside=self.outside(cells))
        summary.stale = self.fail_stale()
        existing = self.by_cell()
        for cell in cells:
            states = {t.state for t in existing.get(cell["id"], [])}
            if TrialState.COMPLETE in states:
                summary.done += 1
            elif TrialState.RUNNING in states:
                summary.running += 1
            elif TrialState.WAITING in states:
                summary.queued += 1
            else:
                summary.retried += TrialState.FAIL in states
                summary.queued += 1
                self.study.enqueue_trial({}, user_attrs={
                    "cell_id": cell["id"], "label": cell["label"], "config": _jsonable(cell)})
        return summary

    # ------------------------------------------------------------------ working

    def claim(self) -> Claim | None:
        """Atomically take the oldest WAITING cell, or None when none is left."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        for t in sorted(waiting, key=lambda t: t.number):
            if "cell_id" not in t.user_attrs:
                continue
            trial_id = self.trial_id(t.number)
            try:
                won = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                won = False
            if not won:
                continue
            twin = self._twin(t)
            if twin is not None:
                self.storage.set_trial_user_attr(trial_id, "duplicate_of", twin.number)
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                continue
            return self.hold(trial_id, t.number, t.user_attrs["config"])
        return None

    def _twin(self, trial: FrozenTrial) -> FrozenTrial | None:
        """Two workers syncing at once may both queue a cell. Of its queued or running copies
        the lowest-numbered one runs; a claimed copy with a finished or lower-numbered live twin
        is dropped (marked ``duplicate_of``), so every cell runs once."""
        for other in self.trials():
            if other.user_attrs["cell_id"] != trial.user_attrs["cell_id"] or \
                    other.number == trial.number:
                continue
            if other.state == TrialState.COMPLETE or (
                    other.number < trial.number and
                    other.state in (TrialState.WAITING, TrialState.RUNNING)):
                return other
        return None

    def hold(self, trial_id: int, number: int, config: dict,
             live: optuna.trial.Trial | None = None) -> Claim:
        """Mark a RUNNING trial as this worker's (host, pid, heartbeat) and keep it alive;
        ``live`` is its ``Trial`` when ``Study.ask`` handed it out."""
        claim = Claim(self, trial_id, number, config, live)
        claim.set("worker", {"host": self.host, "pid": os.getpid()})
        claim.set("heartbeat", time.time())
        self._start_heartbeat(claim)
        return claim

    def _start_heartbeat(self, claim: Claim) -> None:
        def beat():
            while not claim._stop.wait(heartbeat_interval()):
                try:
                    if isinstance(self.storage, RDBStorage):
                        self.storage.record_heartbeat(claim.trial_id)
                    claim.set("heartbeat", time.time())
                except Exception:  # a missed beat is retried; never kill the cell for it
                    pass

        if isinstance(self.storage, RDBStorage):
            self.storage.record_heartbeat(claim.trial_id)
        claim._thread = threading.Thread(target=beat, daemon=True)
        claim._thread.start()

    def _stop(self, claim: Claim) -> None:
        claim._stop.set()
        if claim._thread is not None:
            claim._thread.join(timeout=5)

    def complete(self, claim: Claim, result: dict, value: float | list[float] | None) -> None:
        """COMPLETE with the objective value(s); a missing or NaN value is stored as 0 (grid
        cells: the metrics in the user attributes are what reports read)."""
        self._stop(claim)
        for key, item in result.items():
            claim.set(key, item)
        values = value if isinstance(value, (list, tuple)) else [value]
        values = [float(v) if v is not None and v == v else 0.0 for v in values]
        self.storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, values=values)

    def fail(self, claim: Claim, error: str, result: dict | None = None) -> None:
        self._stop(claim)
        for key, item in (result or {}).items():
            claim.set(key, item)
        claim.set("error", error)
        self.storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)

    def prune(self, claim: Claim, result: dict | None = None) -> None:
        self._stop(claim)
        for key, item in (result or {}).items():
            claim.set(key, item)
        self.storage.set_trial_state_values(claim.trial_id, TrialState.PRUNED)

    # ------------------------------------------------------------------ results

    def latest_results(self, cells: list[dict] | None = None) -> list[FrozenTrial]:
        """For each cell (of ``cells`` only, when given), its COMPLETE trial if any, else its
        latest trial."""
        out = []
        ids = None if cells is None else {c["id"] for c in cells}
        for cell_id, trials in self.by_cell().items():
            if ids is not None and cell_id not in ids:
                continue
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            out.append(done[-1] if done else max(trials, key=lambda t: t.number))
        return sorted(out, key=lambda t: t.number)
