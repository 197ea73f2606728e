"""Malformed suites that validated before the preflight and failed inside cells (or ended in a
traceback): each is refused by ``ssmbench validate`` with exit code 2, no traceback, and a
message naming the file, line and key path (issue 14). Cases run in-process through the CLI's
``main``; two run through a real subprocess to prove no traceback reaches the terminal."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main

SUITE = """\
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [add]
  datasets:
    - name: synrgbx
      size: 32
      counts: [4, 2, 2]
  seeds: [0]
train:
  iterations: 1
  batch_size: 2
eval:
  corruptions: [clean]
"""
#: (id, suite text, fragments of the message, line of the suite file it must name or None for
#: the command line, extra command-line arguments)
CASES = [
    # --- names checked against what exists: exclude / overrides keys (were KeyError tracebacks)
    ("exclude non-axis", SUITE + "exclude:\n  - {fusoin: add}\n",
     ["exclude[0].fusoin", "not a grid axis", "did you mean 'fusion'"], 16, []),
    ("exclude lr", SUITE + "exclude:\n  - {lr: 0.1}\n", ["exclude[0].lr", "grid axis"], 16, []),
    ("override match typo", SUITE + "overrides:\n  - match: {modle: dualcnn}\n"
     "    set: {train.lr: 0.1}\n", ["overrides[0].match.modle", "did you mean 'model'"], 16, []),
    ("override match dataset option", SUITE + "overrides:\n  - match: {flavour: depth}\n"
     "    set: {train.lr: 0.1}\n", ["overrides[0].match.flavour", "grid axis"], 16, []),
    # --- duplicates
    ("duplicate seed", SUITE.replace("seeds: [0]", "seeds: [0, 1, 1]"),
     ["grid.seeds[2]", "listed 2 times"], 9, []),
    ("duplicate fusion", SUITE.replace("fusions: [add]", "fusions: [add, add]"),
     ["grid.fusions[1]", "listed 2 times"], 4, []),
    ("duplicate model", SUITE.replace("models: [dualcnn]", "models: [dualcnn, dualcnn]"),
     ["grid.models[1]", "listed 2 times"], 2, []),
    ("duplicate size", SUITE.replace("sizes: [nano]", "sizes: [nano, nano]"),
     ["grid.sizes[1]", "listed 2 times"], 3, []),
    # --- report.baseline against the grid
    ("baseline not in grid", SUITE + "report:\n  baseline: {fusion: rgb_only}\n",
     ["report.baseline.fusion", "no cell of the grid has fusion 'rgb_only'"], 16, []),
    ("baseline key", SUITE + "report:\n  baseline: {fusoin: add}\n",
     ["report.baseline.fusoin", "not a report group key", "did you mean 'fusion'"], 16, []),
    ("baseline model", SUITE + "report:\n  baseline: {model: sigma}\n",
     ["report.baseline.model", "no cell of the grid has model 'sigma'"], 16, []),
    ("baseline list value", SUITE + "report:\n  baseline: {fusion: [add, x_only]}\n",
     ["report.baseline.fusion", "'x_only'"], 16, []),
    # --- search.space keys against real settings
    ("search key typo", SUITE + "search:\n  space:\n    train.lrate: {type: float, low: 0.001,"
     " high: 0.1}\n", ["search.space.train.lrate", "no setting 'lrate'"], 17, []),
    ("search eval key", SUITE + "search:\n  space:\n    eval.splitt: {type: categorical, "
     "choices: [val]}\n", ["search.space.eval.splitt", "did you mean 'split'"], 17, []),
    ("search scalar deeper", SUITE + "search:\n  space:\n    train.lr.max: {type: float, "
     "low: 0.001, high: 0.1}\n", ["search.space.train.lr.max", "single value"], 17, []),
    ("search augment option", SUITE + "search:\n  space:\n    train.augment.flipp: "
     "{type: categorical, choices: [true]}\n", ["train.augment has no option 'flipp'"], 17, []),
    # --- augment keys against the transform's options
    ("augment typo", SUITE.replace("batch_size: 2", "batch_size: 2\n  augment: {flipp: true}"),
     ["train.augment.flipp", "did you mean 'flip'"], 13, []),
    ("augment bad flip", SUITE.replace("batch_size: 2", "batch_size: 2\n  augment: {flip: up}"),
     ["train.augment", "flip must be"], 13, []),
    ("augment scale order", SUITE.replace("batch_size: 2",
                                          "batch_size: 2\n  augment: {scale: [2.0, 0.5]}"),
     ["train.augment", "lo <= hi"], 13, []),
    ("augment two scales", SUITE.replace(
        "batch_size: 2", "batch_size: 2\n  augment: {scale: [0.5, 2.0], scale_choices: [1.0]}"),
     ["train.augment", "not both"], 13, []),
    # --- fusion kinds against the model and the data's modalities
    ("text fusion on image data", SUITE.replace("fusions: [add]", "fusions: [twister]"),
     ["grid.fusions[0]", "fusion 'twister' fuses an image with text", "image data"], 4, []),
    ("text model on image data", SUITE.replace("models: [dualcnn]", "models: [remamber]")
     .replace("fusions: [add]", "fusions: [default]"),
     ["grid.models[0]", "model 'remamber' takes text", "synrgbx"], 2, []),
    ("image model on text data", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: "
                                               "[4, 2, 2]", "- name: synref"),
     ["grid.models[0]", "model 'dualcnn' takes image", "synref"], 2, []),
    # --- model options against the constructor (the preflight builds the model)
    ("model_kwargs typo", SUITE.replace("batch_size: 2", "batch_size: 2\n  model_kwargs: "
                                                          "{widht: 16}"),
     ["train.model_kwargs.widht", "takes no option 'widht'"], 13, []),
    ("fusion_kwargs typo", SUITE.replace("fusions: [add]", "fusions: [cross_attention]").replace(
        "batch_size: 2", "batch_size: 2\n  model_kwargs: {fusion_kwargs: {haeds: 2}}"),
     ["grid.fusions[0]", "haeds"], 4, []),
    # --- split names against the dataset's splits (the preflight reads them)
    ("eval split", SUITE.replace("corruptions: [clean]", "split: testing\n  corruptions: [clean]"),
     ["eval.split", "no split 'testing'"], 14, []),
    ("val split", SUITE.replace("batch_size: 2", "batch_size: 2\n  val_every: 1\n"
                                                 "  val_split: validation"),
     ["train.val_split", "no split 'validation'"], 14, []),
    ("joined split typo", SUITE.replace("corruptions: [clean]",
                                        "split: val+tst\n  corruptions: [clean]"),
     ["eval.split", "no split 'tst'"], 14, []),
    # --- roots: missing, a file, wrong layout, none (synrgbx_folder reads files)
    ("real dataset without root", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: "
                                                "[4, 2, 2]", "- name: synrgbx_folder"),
     ["grid.datasets[0]", "needs root", "ssmbench data convert"], 6, []),
    ("root missing", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: [4, 2, 2]",
                                   "- name: synrgbx_folder\n      root: no/such/folder"),
     ["grid.datasets[0].root", "does not exist", "ssmbench data convert"], 7, []),
    ("root is a file", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: [4, 2, 2]",
                                     "- name: synrgbx_folder\n      root: suite.yaml"),
     ["grid.datasets[0].root", "is a file", "layouts: sigma"], 7, []),
    ("root wrong layout", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: [4, 2, 2]",
                                        "- name: synrgbx_folder\n      root: ."),
     ["grid.datasets[0].root", "cannot recognise", "ssmbench data convert"], 7, []),
    ("mfnet root wrong layout", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: "
                                              "[4, 2, 2]", "- name: mfnet\n      root: ."),
     ["grid.datasets[0].root", "mfnet layout", "layouts: native, sigma"], 7, []),
    ("pst900 root missing", SUITE.replace("- name: synrgbx\n      size: 32\n      counts: "
                                          "[4, 2, 2]", "- name: pst900\n      root: /no/pst"),
     ["grid.datasets[0].root", "does not exist", "convert pst900"], 7, []),
    # --- --set: list items, and errors that name the command line
    ("--set into an unset number", SUITE, ["command line (--set train.lr.max=0.1)",
                                           "train.lr: Input should be a valid number"],
     None, ["--set", "train.lr.max=0.1"]),
    ("--set through a number", SUITE, ["command line (--set train.iterations.max=3)",
                                       "train.iterations is 1, not a mapping"],
     None, ["--set", "train.iterations.max=3"]),
    ("--set index out of range", SUITE, ["command line", "grid.datasets is a list of 1",
                                         "got 3"], None, ["--set", "grid.datasets.3.size=32"]),
    ("--set bad value in a list item", SUITE, ["command line (--set grid.datasets.0.size=63)",
                                               "even integer"], None,
     ["--set", "grid.datasets.0.size=63"]),
    ("--set bracket index bad value", SUITE, ["command line", "flavour 'lidar'"], None,
     ["--set", "grid.datasets[0].flavour=lidar"]),
    ("--set bad lr", SUITE, ["command line (--set train.lr=fast)", "train.lr"], None,
     ["--set", "train.lr=fast"]),
    ("--set no equals", SUITE, ["command line", "key.path=value"], None, ["--set", "train.lr"]),
    ("--set duplicate seeds", SUITE, ["command line", "listed 2 times"], None,
     ["--set", "grid.seeds=[3, 3]"]),
    # --- encodings
    ("latin-1 suite", SUITE.replace("grid:", "description: M\u00fcnchen\ngrid:"),
     ["not UTF-8", "iconv"], 1, []),
]


def _write(tmp_path, text, name):
    path = tmp_path / "suite.yaml"
    if name == "latin-1 suite":
        path.write_bytes(text.encode("latin-1"))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_suite_is_refused_before_training(case, tmp_path, capsys, monkeypatch):
    name, text, fragments, line, extra = case
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, text, name)
    code = main(["validate", str(path), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    if line is None:
        assert "command line" in err and f"{path}:" not in err, err
    else:
        assert f"{path}:{line}:" in err, err


def test_enough_cases():
    assert len(CASES) >= 40


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = SUITE.replace("seeds: [0]", "seeds: [0, 0]") + "report:\n  baseline: {fusion: x}\n"
    path = _write(tmp_path, text, "two")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "grid.seeds[1]" in err and "report.baseline" in err


def test_set_addresses_a_list_item(tmp_path, capsys):
    path = _write(tmp_path, SUITE, "ok")
    assert main(["validate", str(path), "--no-preflight", "--set", "grid.datasets.0.size=48",
                 "--set", "grid.datasets[0].flavour=thermal"]) == 0
    assert "size=48" in capsys.readouterr().out


def test_relative_root_means_the_suite_folder(tmp_path, monkeypatch):

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "data").mkdir()
    path = tmp_path / "suites" / "s.yaml"
    path.write_text(SUITE.replace("- name: synrgbx\n      size: 32\n      counts: [4, 2, 2]",
                                  "- name: toy\n      root: data"))
    from bench.config.checks import resolve_roots
    from bench.config.schema import SuiteSpec
    from bench.config.suite import Suite
    from bench.config.yaml_source import load_with_bases

    data, origins = load_with_bases(path)
    suite = Suite(SuiteSpec.model_validate(data), path, origins)
    for cwd in (tmp_path, tmp_path / "suites" / "data"):
        monkeypatch.chdir(cwd)
        suite = Suite(SuiteSpec.model_validate(data), path, origins)
        resolve_roots(suite)
        assert suite.spec.grid.datasets[0].root == str(tmp_path / "suites" / "data")


def test_runtime_only_fault_is_refused_within_seconds_and_no_cell_dir(tmp_path, capsys):
    """A fusion that does not fit the data, seen only when the model runs: a stage fusion whose
    forward fails on these inputs. validate refuses it in seconds, run never makes a cell dir."""
    plugin = tmp_path / "bad_fusion.py"
    plugin.write_text(
        "from models import register_fusion\nfrom models.fusion.base import FusionModule\n"
        "@register_fusion('needs_three_channel_x')\nclass NeedsThree(FusionModule):\n"
        "    def forward(self, i, a, b):\n"
        "        if b.shape[1] != 3 * a.shape[1]:\n"
        "            raise ValueError(f'x stream has {b.shape[1]} channels, expected 3x')\n"
        "        return a\n")
    text = "plugins: [bad_fusion.py]\n" + SUITE.replace("fusions: [add]",
                                                       "fusions: [needs_three_channel_x]")
    path = _write(tmp_path, text, "rt")
    start = time.perf_counter()
    assert main(["validate", str(path)]) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "grid.fusions[0]" in err and "expected 3x" in err and "Traceback" not in err
    assert elapsed < 30, elapsed  # seconds on 2 shared cores (measured ~1 s unloaded)
    runs = tmp_path / "runs"
    assert main(["run", str(path), "--runs-dir", str(runs), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress"]) == 2
    assert not any(runs.rglob("*")) if runs.exists() else True
    # a search over the same cells is refused the same way before its first trial
    search = text + ("search: {space: {train.lr: {type: float, low: 0.001, high: 0.1}}, "
                     "objectives: [{metric: val_mIoU}], n_trials: 2}\n")
    path = _write(tmp_path,
                  search.replace("  batch_size: 2\n", "  batch_size: 2\n  val_every: 1\n"),
                  "rt_search")
    assert main(["search", str(path), "--runs-dir", str(runs), "--reports-dir",
                 str(tmp_path / "reports"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "grid.fusions[0]" in err and "expected 3x" in err and "Traceback" not in err
    assert not any(runs.rglob("*")) if runs.exists() else True


def _subprocess(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["latin-1 suite", "exclude non-axis"])
def test_no_traceback_through_a_real_process(name, tmp_path):
    case = next(c for c in CASES if c[0] == name)
    path = _write(tmp_path, case[1], name)
    result = _subprocess(["validate", str(path), "--no-preflight"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and f"{path}:{case[3]}:" in result.stderr
