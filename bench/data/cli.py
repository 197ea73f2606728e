"""``ssmbench data convert`` and ``ssmbench data check``.

``bench/cli.py`` calls ``add_data_commands(subparsers)``; each parser sets ``handler`` to
``handler(args) -> int`` returning the exit code: 0 when all is well, 2 on a failed check or bad
options, with the message on stderr and no traceback (bad data, a ``DataError``, is a
``UserError`` that ``bench/cli.py`` reports the same way).

    ssmbench data convert NAME RAW_DIR OUT_DIR [--option key=value ...]
    ssmbench data check NAME ROOT [--split train --split test] [--layout L] [--max-entries N]
                                  [--option key=value ...]

``--option`` values are parsed as YAML scalars (``keep_background=true``, ``clip_size=0``).
"""
from __future__ import annotations

import argparse
import sys

import yaml

from bench.data.io import DataError


def _parse_options(pairs: list[str] | None) -> dict:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--option expects key=value, got {pair!r}")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else None
    return options


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="real datasets: convert downloads, check data",
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
    convert.set_defaults(handler=run_convert)

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
    check.set_defaults(handler=run_check)
    return data


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def run_check(args) -> int:
    from bench.data.checks import check_dataset
    try:
        report = check_dataset(args.name, args.root, args.splits, layout=args.layout,
                               max_entries=args.max_entries, **_parse_options(args.option))
    except (ValueError, TypeError) as error:  # an --option the dataset does not take
        return _fail(f"error: {error}")
    if not report.ok:
        return _fail(report.format())
    print(report.format())
    return 0


def run_convert(args) -> int:
    from bench.data.convert import convert_dataset
    try:
        summary = convert_dataset(args.name, args.raw_dir, args.out_dir,
                                  **_parse_options(args.option))
    except ValueError as error:  # an --option value the converter does not take
        return _fail(f"error: {error}")
    print(summary.format())
    return 0
