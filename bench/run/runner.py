"""Run a suite: queue its cells in the store, drain them, record every outcome.

Any number of workers (processes here, or on other machines sharing the storage) run the same
loop: claim a cell, run it, record COMPLETE or FAIL with the error. A cell that raises is
recorded as failed and the loop goes on. A worker with nothing left to claim waits while other
workers' cells run, and re-queues any whose worker died (bench/results/store.py ``fail_stale``),
so a killed worker's cell is finished by another one, resuming from its checkpoint. Under torchrun,
rank 0 claims and records and the other ranks train the same cell (bench/run/distributed.py).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench.config.suite import Suite, load_suite
from bench.results.store import CellStore, StoreError, SyncSummary, heartbeat_interval
from bench.run import distributed

log = logging.getLogger("ssmbench")


@dataclass
class RunOutcome:
    suite: str
    sync: SyncSummary
    completed: int
    failed: list[tuple[str, str]]
    report: Path | None = None


def main_metric(result: dict) -> float | None:
    metrics = result.get("metrics") or {}
    clean = metrics.get("clean") or next(iter(metrics.values()), None) or {}
    return clean.get("mIoU")


def short_error(exc: BaseException) -> str:
    tail = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in tail)
    return f"{type(exc).__name__}: {exc}" + (f" [{where}]" if where else "")


def run_one(store: CellStore, claim, progress: bool, on_validation=None,
            values=None) -> tuple[bool, str]:
    """Run a claimed cell to COMPLETE/FAIL/PRUNED. Returns (succeeded, error message).
    ``values(result)`` gives the trial's objective value(s) (default: clean mIoU) or raises
    ``ValueError`` to fail the cell."""
    from bench.run.train import Pruned, run_cell

    config = claim.config
    workdir = store.cell_dir(config["id"])
    if distributed.active():
        distributed.broadcast_object((config, str(workdir)))
    if on_validation is None:  # a grid cell: live validation values for optuna-dashboard
        from bench.results.tracking import trial_reporter
        on_validation = trial_reporter(claim)
    try:
        result = run_cell(config, workdir, on_validation=on_validation, progress=progress)
    except Pruned as exc:
        store.prune(claim, {"error": str(exc)})
        return False, str(exc)
    except KeyboardInterrupt:
        store.fail(claim, "interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # noqa: BLE001 - any cell failure is recorded, the suite goes on
        message = short_error(exc)
        store.fail(claim, message)
        return False, message
    if "error" in result:
        message = result.pop("error")
        store.fail(claim, message, result)
        return False, message
    try:
        value = (values or main_metric)(result)
    except ValueError as exc:
        store.fail(claim, str(exc), result)
        return False, str(exc)
    store.complete(claim, result, value)
    return True, ""


def next_claim(store: CellStore, ask=None, wait: bool = True):
    """The next cell for this worker: a queued one, else a new one from ``ask()`` (a search),
    else, while other workers' cells run, wait and re-queue those whose worker died. None when
    the suite is drained."""
    while True:
        claim = store.claim()
        if claim is None and ask is not None:
            claim = ask()
        if claim is not None:
            return claim
        if store.fail_stale():
            continue
        if not (wait and store.running()):
            return None
        time.sleep(min(5.0, max(0.5, heartbeat_interval() / 2)))


def follow() -> None:
    """Ranks > 0 under torchrun: train every cell rank 0 broadcasts, until it sends None."""
    from bench.run.train import Pruned, run_cell

    while (job := distributed.broadcast_object(None)) is not None:
        config, workdir = job
        try:
            run_cell(config, Path(workdir), progress=False)
        except Pruned:
            pass
        except Exception:  # noqa: BLE001 - rank 0 records the failure of the same cell
            log.warning("rank %d: cell %s failed", distributed.rank(), config["label"],
                        exc_info=True)


def drain(store: CellStore, progress: bool = True, bar: tqdm | None = None, ask=None,
          on_claim=None, wait: bool = True) -> tuple[int, list]:
    """Claim and run cells until none is left. ``ask`` makes new cells (a search);
    ``on_claim(claim)`` returns run_one's keyword arguments (pruning hook, objectives)."""
    completed, failed = 0, []
    while (claim := next_claim(store, ask, wait)) is not None:
        label = claim.config["label"]
        if bar is not None:
            bar.set_postfix_str(label)
        ok, message = run_one(store, claim, progress, **(on_claim(claim) if on_claim else {}))
        if ok:
            completed += 1
        elif message.startswith("pruned"):
            failed.append((label, message))
            log.info("cell %s %s", label, message)
        else:
            failed.append((label, message))
            if bar is not None:
                bar.write(f"FAILED {label}: {message}")
            else:
                log.warning("cell %s failed: %s", label, message)
        if bar is not None:
            bar.update(1)
    return completed, failed


def _worker(suite_path: str, set_values: list[str], storage: str | None, runs_dir: str,
            study_name: str) -> None:
    """Entry point of an extra worker process (spawned): the same loop, no progress bars."""
    logging.basicConfig(level=logging.WARNING)
    load_suite(suite_path, set_values, check_names=False)  # imports the suite's plugins
    store = CellStore(study_name, storage, runs_dir)
    drain(store, progress=False)


def check_real_data(cells: list[dict]) -> None:
    """``ssmbench data check`` on every real dataset of the suite before anything trains: a
    missing or broken file stops the run with the checker's report (DataCheckError)."""
    from bench.data.checks import require_ok

    seen = set()
    for cell in cells:
        ds = cell["dataset"]
        if "root" not in ds:
            continue
        splits = [cell["eval"]["split"]]
        if "train" in cell["stages"]:
            splits.insert(0, "train")
        options = {k: v for k, v in ds.items() if k not in ("name", "root")}
        key = (ds["name"], ds["root"], tuple(splits), repr(sorted(options.items())))
        if key not in seen:
            seen.add(key)
            require_ok(ds["name"], ds["root"], splits, **options)


def run_suite(suite: Suite, storage: str | None = None, fresh: bool = False,
              runs_dir: str | Path = "runs", workers: int = 1, progress: bool = True,
              set_values: list[str] | None = None, study_name: str | None = None,
              write_report: bool = True, reports_dir: str | Path = "reports",
              preflight: bool = True) -> RunOutcome:
    name = study_name or suite.name
    if preflight and distributed.is_main():  # every model once on the data, before any cell
        from bench.run.preflight import preflight as run_preflight

        print(run_preflight(suite).format(), flush=True)
    if distributed.init(suite.spec.train.device) and not distributed.is_main():
        rank = distributed.rank()
        try:
            follow()
        finally:
            distributed.shutdown()
        return RunOutcome(f"{name} [rank {rank}: trained rank 0's cells]",
                          SyncSummary(), 0, [], None)
    try:
        return _run_suite(suite, name, storage, fresh, runs_dir, workers, progress, set_values,
                          write_report, reports_dir, checked_init=preflight)
    finally:
        if distributed.active():
            distributed.broadcast_object(None)  # releases the other ranks' follow()
        distributed.shutdown()


def _run_suite(suite: Suite, name: str, storage, fresh, runs_dir, workers, progress, set_values,
               write_report, reports_dir, checked_init: bool = False) -> RunOutcome:
    if distributed.active() and workers > 1:
        raise StoreError("--workers and torchrun do not combine: torchrun already starts one "
                         "process per rank")
    store = CellStore(name, storage, runs_dir)
    cells = suite.cells()
    if any("train" in c["stages"] or "eval" in c["stages"] for c in cells):
        check_real_data(cells)
    if not checked_init:  # the preflight opened them already
        from bench.run.checkpoints import check_init_files  # init files: exist, real weights, keys

        check_init_files(suite, cells)
    summary = store.sync(cells, fresh=fresh)
    bar = tqdm(total=summary.total, initial=summary.done, desc=f"{name}: cells",
               disable=not progress, dynamic_ncols=True)
    if summary.done:
        bar.write(f"{summary.done} of {summary.total} cells already finished; "
                  f"{summary.queued} to run" + (f" ({summary.retried} retried)"
                                                if summary.retried else ""))
    if workers <= 1:
        completed, failed = drain(store, progress, bar if progress else None)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(str(suite.path), set_values or [], storage,
                                                   str(runs_dir), name), daemon=False)
                 for _ in range(workers)]
        for p in procs:
            p.start()
        seen = summary.done
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            finished = sum(1 for t in store.latest_results(cells) if t.state.is_finished())
            bar.update(max(0, finished - seen))
            seen = max(seen, finished)
        completed = sum(1 for t in store.latest_results(cells)
                        if t.state.name == "COMPLETE") - summary.done
        failed = [(t.user_attrs["label"], t.user_attrs.get("error", "")) for t in
                  store.latest_results(cells) if t.state.name == "FAIL"]
    bar.close()
    report = None
    if write_report:
        from bench.reporting.suite_report import write_report as _write

        report = _write(suite, store, Path(reports_dir) / name)
    return RunOutcome(name, summary, completed, failed, report)
