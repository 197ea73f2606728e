"""The run registry: a suite run is an Optuna study, every cell an enqueued trial.

A trial's user attributes hold the cell id, its label and resolved configuration, and, once it
has run, its metrics, profile, artifact paths and the environment fingerprint. Storage is any
Optuna storage: by default a journal file under ``runs/<suite>/`` (embedded, no server), or
``--storage postgresql://...`` / ``sqlite:///...`` (RDBStorage) so that many workers on many
machines drain one suite.

Claiming a cell is Optuna's own atomic step: a WAITING trial is moved to RUNNING with
``storage.set_trial_state_values``, which succeeds for exactly one worker (this is how
``Study.ask`` pops enqueued trials). A worker that dies leaves a RUNNING trial behind; it is
failed and re-queued by the next ``sync``: on an RDB storage through Optuna's heartbeats
(``fail_stale_trials`` + ``RetryFailedTrialCallback``), on a journal file (one machine) when the
worker's process no longer exists.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 120


class StoreError(Exception):
    """A store problem to report without a traceback (changed suite, bad storage URL)."""


@dataclass
class SyncSummary:
    total: int = 0
    done: int = 0
    queued: int = 0
    retried: int = 0
    stale: int = 0
    running: int = 0


@dataclass
class Claim:
    """A cell this worker is running: its trial and configuration."""
    store: "CellStore"
    trial_id: int
    number: int
    config: dict
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def trial(self) -> optuna.trial.Trial:
        """The live Optuna trial (``report``/``should_prune`` for search pruning)."""
        return optuna.trial.Trial(self.store.study, self.trial_id)

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_storage(url: str | None, suite_dir: Path):
    if url is None:
        suite_dir.mkdir(parents=True, exist_ok=True)
        path = str(suite_dir / "study.journal")
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if "://" in url:
        try:
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                              grace_period=GRACE_PERIOD_S,
                              failed_trial_callback=RetryFailedTrialCallback(max_retry=3))
        except Exception as exc:  # bad URL, driver missing, server down
            raise StoreError(f"cannot open storage {url!r}: {exc}") from None
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


class CellStore:
    def __init__(self, suite_name: str, storage_url: str | None = None,
                 runs_dir: str | Path = "runs"):
        self.suite_name = suite_name
        self.dir = Path(runs_dir) / suite_name
        self.storage_url = storage_url
        self.storage = open_storage(storage_url, self.dir)
        self.study = optuna.create_study(study_name=suite_name, storage=self.storage,
                                         direction="maximize", load_if_exists=True)
        self.host = socket.gethostname()

    # ------------------------------------------------------------------ reading

    def trials(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if "cell_id" in t.user_attrs]

    def by_cell(self) -> dict[str, list[FrozenTrial]]:
        out: dict[str, list[FrozenTrial]] = {}
        for t in self.trials():
            out.setdefault(t.user_attrs["cell_id"], []).append(t)
        return out

    def cell_dir(self, cell_id: str) -> Path:
        return self.dir / "cells" / cell_id

    # ------------------------------------------------------------------ queueing

    def reset(self) -> None:
        """``--fresh``: forget every trial and artifact of this suite."""
        optuna.delete_study(study_name=self.suite_name, storage=self.storage)
        shutil.rmtree(self.dir / "cells", ignore_errors=True)
        self.study = optuna.create_study(study_name=self.suite_name, storage=self.storage,
                                         direction="maximize")

    def fail_stale(self) -> int:
        """Fail RUNNING trials whose worker is gone; returns how many."""
        count = 0
        if isinstance(self.storage, RDBStorage):
            before = {t.number for t in self.trials() if t.state == TrialState.RUNNING}
            optuna.storages.fail_stale_trials(self.study)
            after = {t.number for t in self.trials() if t.state == TrialState.RUNNING}
            count += len(before - after)
        for t in self.trials():
            if t.state != TrialState.RUNNING:
                continue
            worker = t.user_attrs.get("worker") or {}
            beat = t.user_attrs.get("heartbeat", 0)
            dead = worker.get("host") == self.host and not _pid_alive(int(worker.get("pid", 0)))
            silent = not isinstance(self.storage, RDBStorage) and beat and \
                time.time() - beat > GRACE_PERIOD_S
            if dead or silent:
                self.storage.set_trial_user_attr(t._trial_id, "error",
                                                 "worker stopped while running this cell")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                count += 1
        return count

    def check_unchanged(self, cells: list[dict]) -> None:
        stored = {t.user_attrs["label"]: t.user_attrs["cell_id"] for t in self.trials()}
        changed = [c["label"] for c in cells if c["label"] in stored and stored[c["label"]] != c["id"]]
        if changed:
            listing = "\n  ".join(changed[:5]) + ("\n  ..." if len(changed) > 5 else "")
            raise StoreError(
                f"suite {self.suite_name!r} changed since it last ran: {len(changed)} cell(s) "
                f"now have a different configuration under the same name:\n  {listing}\n"
                f"Re-run with --fresh to discard the stored results ({self.dir}), or give the "
                f"suite a new name.")

    def sync(self, cells: list[dict], fresh: bool = False) -> SyncSummary:
        """Enqueue every cell that is not finished, queued or running; retry failed ones."""
        if fresh:
            self.reset()
        summary = SyncSummary(total=len(cells))
        self.check_unchanged(cells)
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
            try:
                won = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                won = False
            if not won:
                continue
            claim = Claim(self, t._trial_id, t.number, t.user_attrs["config"])
            claim.set("worker", {"host": self.host, "pid": os.getpid()})
            claim.set("heartbeat", time.time())
            self._start_heartbeat(claim)
            return claim
        return None

    def _start_heartbeat(self, claim: Claim) -> None:
        def beat():
            while not claim._stop.wait(HEARTBEAT_INTERVAL_S):
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

    def complete(self, claim: Claim, result: dict, value: float | None) -> None:
        self._stop(claim)
        for key, item in result.items():
            claim.set(key, item)
        finite = value is not None and value == value
        self.storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE,
                                            values=[float(value) if finite else 0.0])

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

    def latest_results(self) -> list[FrozenTrial]:
        """For each cell, its COMPLETE trial if any, else its latest trial."""
        out = []
        for trials in self.by_cell().values():
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            out.append(done[-1] if done else max(trials, key=lambda t: t.number))
        return sorted(out, key=lambda t: t.number)
