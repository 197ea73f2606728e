"""`ssmbench run | validate | report | profile | profile-repro | kernels | search | list | doctor |
data`: every subcommand's options and handler are here; each handler calls one package's
entry point (docs/architecture.md).

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

    p = sub.add_parser("search", help="Optuna search over a suite's search: block")
    _add_suite_args(p)
    _add_store_args(p)
    p.add_argument("--fresh", action="store_true", help="discard stored trials and start over")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--n-trials", type=int, default=None, help="override search.n_trials")
    p.add_argument("--timeout", type=float, default=None,
                   help="override search.timeout (seconds per worker)")
    p.add_argument("--worker-index", type=int, default=0,
                   help="this machine's number among the machines sharing --storage: offsets "
                        "the sampler's seed so that machines draw different trials")
    p.add_argument("--report-only", action="store_true",
                   help="regenerate the search report from the store")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip building and running each base cell's model once before the "
                        "first trial (bench/run/preflight.py)")

    p = sub.add_parser("profile-repro", help="profile a suite twice in fresh processes and "
                                             "compare the latencies")
    _add_suite_args(p)
    p.add_argument("--runs", type=int, default=2, help="back-to-back profile processes")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="largest allowed relative difference between runs (default 0.10)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("doctor", help="print the environment, scan backends, CUDA and storage "
                                      "a result depends on (run it first when something is "
                                      "slow or fails)")
    p.add_argument("suite", nargs="?", default=None, help="suite YAML: check its storage")
    p.add_argument("--storage", default=None, help="storage URL to check instead of the default")
    p.add_argument("--runs-dir", default="runs")

    _add_data_commands(sub)
    return parser, set(sub.choices)


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="real datasets: convert downloads, check data",
                          description="Convert raw dataset downloads and check datasets "
                                      "before training.")
    commands = data.add_subparsers(dest="data_command", metavar="{convert,check}")
    commands.required = True

    convert = commands.add_parser("convert", help="raw download -> the layout the paper uses")
    convert.add_argument("name", help="dataset: mfnet, pst900, whu_opt_sar, loveda, vaihingen, "
                                      "potsdam")
    convert.add_argument("raw_dir", help="folder with the download (extracted or .zip files)")
    convert.add_argument("out_dir", help="folder to write the converted layout into")
    convert.add_argument("--option", action="append", metavar="KEY=VALUE",
                         help="converter option, e.g. split=ms2mnet or clip_size=0")
    convert.set_defaults(handler=cmd_data_convert)

    check = commands.add_parser("check", help="check every split before training")
    check.add_argument("name", help="registered dataset name")
    check.add_argument("root", help="dataset root folder")
    check.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                       help="split to check (repeatable; default: every split found)")
    check.add_argument("--layout", default="auto", help="on-disk layout (default: auto)")
    check.add_argument("--max-entries", type=int, default=None,
                       help="check only the first N samples of each split")
    check.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="dataset option, e.g. keep_background=true")
    check.set_defaults(handler=cmd_data_check)


def print_cells(suite) -> None:
    cells = suite.cells()
    print(f"{suite.name}: {len(cells)} cells (stages: {', '.join(suite.spec.stages)})")
    for cell in cells:
        print(f"  {cell['id']}  {cell['label']}")


def cmd_run(args) -> int:
    from bench.config.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    if suite.spec.kind == "kernels":
        return _run_kernels(suite, args.reports_dir, not args.no_progress)
    if args.dry_run:
        _preflight(suite, args)
        print_cells(suite)
        return 0
    from bench.run.runner import run_suite

    if args.no_tensorboard:  # read by bench/results/tracking.py here and in spawned workers
        from bench.results.tracking import ENV_SWITCH
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
    from bench.config.suite import load_suite
    from bench.profiling.latency_repro import profile_study_name
    from bench.run.runner import run_suite

    profile_only = args.set_values + ["stages=[profile]"]
    suite = load_suite(args.suite, profile_only)
    name = profile_study_name(suite, load_suite(args.suite, args.set_values))
    outcome = run_suite(suite, storage=args.storage, fresh=args.fresh, runs_dir=args.runs_dir,
                        progress=not args.no_progress, set_values=profile_only, study_name=name,
                        reports_dir=args.reports_dir)
    return _summarise(outcome)


def cmd_report(args) -> int:
    from bench.config.suite import load_suite
    from bench.reporting.suite_report import write_report
    from bench.results.store import CellStore

    suite = load_suite(args.suite, args.set_values)
    path = write_report(suite, CellStore(suite.name, args.storage, args.runs_dir),
                        Path(args.reports_dir) / suite.name)
    print(f"report: {path}")
    return 0


def _run_kernels(suite, reports_dir: str, progress: bool) -> int:
    from bench.config.schema import KernelSweepSpec
    from bench.profiling.kernel_sweep import run_kernel_sweep

    spec = KernelSweepSpec.model_validate(suite.spec.kernels)
    path = run_kernel_sweep(spec, suite.name, Path(reports_dir) / suite.name, progress=progress)
    print(f"report: {path}")
    return 0


def cmd_kernels(args) -> int:
    from bench.config.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    if suite.spec.kind != "kernels":
        print(f"{args.suite}: not a kernels suite (kind: {suite.spec.kind})", file=sys.stderr)
        return EXIT_USAGE
    return _run_kernels(suite, args.reports_dir, not args.no_progress)


def _preflight(suite, args) -> None:
    """Every model of the suite built and run once on the data's first items
    (bench/run/preflight.py)."""
    if suite.spec.kind != "train" or getattr(args, "no_preflight", False):
        return
    from bench.run.preflight import preflight

    print(preflight(suite).format())


def cmd_validate(args) -> int:
    from bench.config.suite import load_suite

    suite = load_suite(args.suite, args.set_values)
    _preflight(suite, args)
    print_cells(suite)
    if getattr(args, "no_preflight", False) and suite.spec.kind == "train":
        from bench.run.checkpoints import check_init_files  # the preflight did not open them

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


def cmd_search(args) -> int:
    from bench.config.suite import load_suite
    from bench.run.search import SearchPlan, open_study, run_search

    suite = load_suite(args.suite, args.set_values)
    if args.report_only:
        from bench.reporting.search_report import write_search_report

        plan = SearchPlan(suite)
        store = open_study(plan, suite.name, args.storage, args.runs_dir)
        path = write_search_report(plan, store, Path(args.reports_dir) / suite.name)
        print(f"report: {path}")
        return 0
    outcome = run_search(suite, storage=args.storage, fresh=args.fresh, runs_dir=args.runs_dir,
                         reports_dir=args.reports_dir, workers=args.workers,
                         progress=not args.no_progress, set_values=args.set_values,
                         n_trials=args.n_trials, timeout=args.timeout,
                         worker_index=args.worker_index, preflight=not args.no_preflight)
    if outcome.report is None and outcome.trials == 0:  # a torchrun rank > 0
        return 0
    ran = "" if outcome.ran < 0 else f"{outcome.ran} trial(s) run now, "
    print(f"{outcome.suite}: {ran}{outcome.trials} in the study")
    if outcome.report:
        print(f"report: {outcome.report}")
    return 0


def cmd_profile_repro(args) -> int:
    import time

    from bench.config.suite import load_suite
    from bench.profiling.latency_repro import (
        compare_runs,
        profile_study_name,
        run_profiles,
        write_repro,
    )

    plain = load_suite(args.suite, args.set_values)
    suite = load_suite(args.suite, args.set_values + ["stages=[profile]"])
    study = profile_study_name(suite, plain)
    work_dir = Path(args.runs_dir) / f"{suite.name}-repro"
    start = time.perf_counter()
    if args.runs < 2:
        print("error: --runs must be at least 2 (there is nothing to compare)", file=sys.stderr)
        return EXIT_USAGE
    try:
        dirs = run_profiles(args.suite, args.set_values, args.runs, work_dir,
                            progress=not args.no_progress)
    except RuntimeError as exc:
        print(f"error: {exc}; the runs so far are under {work_dir}", file=sys.stderr)
        return 1
    frame = compare_runs(study, dirs, args.tolerance)
    path = write_repro(frame, Path(args.reports_dir) / suite.name, args.suite, args.set_values,
                       args.runs, args.tolerance, time.perf_counter() - start)
    print(frame.to_string(index=False) if not frame.empty else "no latency measured")
    print(f"report: {path}")
    outside = frame[frame["within"] == "no"] if not frame.empty else frame
    if len(outside):
        print(f"{len(outside)} cell(s) differ by more than {args.tolerance * 100:.0f}% between "
              "runs: the machine is too busy for latency at this resolution; raise "
              "profile.min_time_s or profile from a quieter machine", file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args) -> int:
    from bench.diagnostics.doctor import format_checks, run_checks

    print(format_checks(run_checks(args.suite, args.storage, args.runs_dir)))
    return 0


def _data_options(pairs: list[str] | None) -> dict:
    """``--option key=value`` pairs, values parsed as YAML scalars (``keep_background=true``)."""
    import yaml

    from bench.data.io import DataError

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--option expects key=value, got {pair!r}")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else None
    return options


def cmd_data_check(args) -> int:
    from bench.data.checks import check_dataset

    try:
        report = check_dataset(args.name, args.root, args.splits, layout=args.layout,
                               max_entries=args.max_entries, **_data_options(args.option))
    except (ValueError, TypeError) as error:  # an --option the dataset does not take
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not report.ok:
        print(report.format(), file=sys.stderr)
        return EXIT_USAGE
    print(report.format())
    return 0


def cmd_data_convert(args) -> int:
    from bench.data.convert import convert_dataset

    try:
        summary = convert_dataset(args.name, args.raw_dir, args.out_dir,
                                  **_data_options(args.option))
    except ValueError as error:  # an --option value the converter does not take
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(summary.format())
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report,
            "profile": cmd_profile, "kernels": cmd_kernels, "list": cmd_list,
            "search": cmd_search, "profile-repro": cmd_profile_repro, "doctor": cmd_doctor}


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
