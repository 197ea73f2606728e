"""`ssmbench run | validate | report | profile | profile-repro | kernels | search | list | data`.

Every expected problem (a bad suite, a changed suite, bad data, an unknown name) is printed as
one message naming the file, key or path, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="set_values", action="append", default=[],
                   metavar="KEY.PATH=VALUE", help="override a suite key (repeatable)")


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (postgresql://..., sqlite:///...) or a journal file;"
                        " default: runs/<suite>/study.journal")
    p.add_argument("--runs-dir", default="runs", help="where stores and checkpoints live")
    p.add_argument("--reports-dir", default="reports", help="where reports are written")


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser and the names of its subcommands."""
    from bench.data.cli import add_data_commands
    from bench.doctor import add_doctor_command
    from bench.latency_repro import add_repro_command
    from bench.search import add_search_command

    parser = argparse.ArgumentParser(prog="ssmbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train, evaluate and profile every cell of a suite")
    _add_suite_args(p)
    _add_store_args(p)
    p.add_argument("--fresh", action="store_true", help="discard stored results and start over")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--dry-run", action="store_true",
                   help="check the suite (with the preflight), print the cells and exit")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip building and running every model on the data's first items")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="no TensorBoard events under runs/<suite>/tensorboard/")

    p = sub.add_parser("validate", help="check a suite (names, data, a forward and backward "
                                        "pass of every model) and print its cells")
    _add_suite_args(p)
    p.add_argument("--no-preflight", action="store_true",
                   help="check names only; do not build the models or read the data")

    p = sub.add_parser("report", help="regenerate a suite's report from its store")
    _add_suite_args(p)
    _add_store_args(p)

    p = sub.add_parser("profile", help="profile a suite's cells without training")
    _add_suite_args(p)
    _add_store_args(p)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("kernels", help="run a scan-kernel sweep suite (kind: kernels)")
    _add_suite_args(p)
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("list", help="list registered models, fusions, datasets or backends")
    p.add_argument("what", choices=["models", "fusions", "datasets", "backends"])

    add_search_command(sub, _add_suite_args, _add_store_args)
    add_doctor_command(sub)
    add_repro_command(sub, _add_suite_args)
    add_data_commands(sub)
    return parser, set(sub.choices)


def print_cells(suite) -> None:
    cells = suite.cells()
    print(f"{suite.name}: {len(cells)} cells (stages: {', '.join(suite.spec.stages)})")
    for cell in cells:
        print(f"  {cell['id']}  {cell['label']}")


def cmd_run(args) -> int:
    from bench.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    if suite.spec.kind == "kernels":
        return _run_kernels(suite, args.reports_dir, not args.no_progress)
    if args.dry_run:
        _preflight(suite, args)
        print_cells(suite)
        return 0
    from bench.runner import run_suite

    if args.no_tensorboard:  # read by bench/tracking.py here and in spawned workers
        from bench.tracking import ENV_SWITCH
        os.environ[ENV_SWITCH] = "0"
    outcome = run_suite(suite, storage=args.storage, fresh=args.fresh, runs_dir=args.runs_dir,
                        workers=args.workers, progress=not args.no_progress,
                        set_values=args.set_values, write_report=not args.no_report,
                        reports_dir=args.reports_dir, preflight=not args.no_preflight)
    return _summarise(outcome)


def _summarise(outcome) -> int:
    print(f"{outcome.suite}: {outcome.completed} cell(s) run now, "
          f"{outcome.sync.done} already finished, {len(outcome.failed)} failed"
          + (f"; {outcome.sync.outside} stored cell(s) outside the grid kept, not reported"
             if outcome.sync.outside else ""))
    for label, message in outcome.failed:
        print(f"  FAILED {label}: {message}", file=sys.stderr)
    if outcome.report:
        print(f"report: {outcome.report}")
    return 1 if outcome.failed else 0


def cmd_profile(args) -> int:
    from bench.runner import run_suite
    from bench.suite import load_suite

    from bench.latency_repro import profile_study_name

    profile_only = args.set_values + ["stages=[profile]"]
    suite = load_suite(args.suite, profile_only)
    name = profile_study_name(suite, load_suite(args.suite, args.set_values))
    outcome = run_suite(suite, storage=args.storage, fresh=args.fresh, runs_dir=args.runs_dir,
                        progress=not args.no_progress, set_values=profile_only, study_name=name,
                        reports_dir=args.reports_dir)
    return _summarise(outcome)


def cmd_report(args) -> int:
    from bench.report import write_report
    from bench.store import CellStore
    from bench.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    path = write_report(suite, CellStore(suite.name, args.storage, args.runs_dir),
                        Path(args.reports_dir) / suite.name)
    print(f"report: {path}")
    return 0


def _run_kernels(suite, reports_dir: str, progress: bool) -> int:
    from bench.kernel_sweep import KernelSweepSpec, run_kernel_sweep

    spec = KernelSweepSpec.model_validate(suite.spec.kernels)
    path = run_kernel_sweep(spec, suite.name, Path(reports_dir) / suite.name, progress=progress)
    print(f"report: {path}")
    return 0


def cmd_kernels(args) -> int:
    from bench.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    if suite.spec.kind != "kernels":
        print(f"{args.suite}: not a kernels suite (kind: {suite.spec.kind})", file=sys.stderr)
        return EXIT_USAGE
    return _run_kernels(suite, args.reports_dir, not args.no_progress)


def _preflight(suite, args) -> None:
    """Every model of the suite built and run once on the data's first items (bench/preflight.py)."""
    if suite.spec.kind != "train" or getattr(args, "no_preflight", False):
        return
    from bench.preflight import preflight

    print(preflight(suite).format())


def cmd_validate(args) -> int:
    from bench.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    _preflight(suite, args)
    print_cells(suite)
    if getattr(args, "no_preflight", False) and suite.spec.kind == "train":
        from bench.checkpoints import check_init_files  # the preflight did not open them

        for line in check_init_files(suite, suite.cells()):
            print(f"  {line}")
    return 0


def cmd_list(args) -> int:
    import kernels
    import models
    from bench.data import get_dataset_class, list_datasets

    if args.what == "models":
        for name in models.list_models():
            family = models.get_family(name)
            print(f"{name:18s} sizes: {', '.join(family.sizes)}; default fusion: "
                  f"{family.default_fusion}")
    elif args.what == "fusions":
        for name in models.list_fusions():
            cls = models.FUSIONS.get(name)
            print(f"{name:16s} {cls.kind:7s} with {cls.pairs_with:5s}  {cls.summary}")
    elif args.what == "datasets":
        for name in list_datasets():
            info = getattr(get_dataset_class(name), "info", None)
            detail = f"{dict(info.modalities)} {info.num_classes} classes" if info else ""
            print(f"{name:14s} {detail}")
    else:
        for name in kernels.list_backends():
            backend = kernels.get_backend(name)
            ok, why = backend.available()
            print(f"{name:8s} devices: {', '.join(backend.devices):16s} "
                  f"{'available' if ok else 'unavailable: ' + why}")
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report,
            "profile": cmd_profile, "kernels": cmd_kernels, "list": cmd_list}


def main(argv: list[str] | None = None, default_command: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    if default_command and argv and argv[0] not in commands and not argv[0].startswith("-"):
        argv.insert(0, default_command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    from models.errors import UserError

    try:
        return handler(args)
    except UserError as exc:  # every expected problem, whatever layer found it
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished cells are kept, run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ssmbench validate SUITE | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silences the flush at exit)
        return 0


if __name__ == "__main__":
    sys.exit(main())
