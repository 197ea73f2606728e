"""Malformed suites that would otherwise fail every cell at run time, after training: unknown
robustness sets, dataset option typos and bad option values. Each gives one message naming the
file, key path and line, exit code 2, no traceback (the basic cases are in test_suite.py)."""
import pytest

from bench.cli import main

SYN = """\
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [rgb_only, add]
  datasets:
    - name: synrgbx
      flavour: depth
      counts: [8, 4, 4]
  seeds: [0]
train:
  iterations: 2
eval:
  corruptions: [clean, x_missing, night]
"""

MALFORMED = [
    ("corruption typo", SYN.replace("night]", "nigth]"),
     ["eval.corruptions[2]", "unknown corruption 'nigth'", "did you mean 'night'"], 13),
    ("corruption without its number", SYN.replace("night]", "misreg]"),
     ["eval.corruptions[2]", "needs a number", "misreg:S"], 13),
    ("corruption with a bad number", SYN.replace("night]", "'misreg_affine:-2']"),
     ["eval.corruptions[2]", "S must be >= 0"], 13),
    ("dataset option typo", SYN.replace("flavour: depth", "flavor: depth"),
     ["grid.datasets[0].flavor", "synrgbx", "no option 'flavor'", "did you mean 'flavour'"], 7),
    ("bad dataset option value", SYN.replace("flavour: depth", "flavour: lidar"),
     ["grid.datasets[0]", "flavour 'lidar' is unknown", "depth, thermal, sar, dsm"], 6),
    ("bad counts", SYN.replace("counts: [8, 4, 4]", "counts: [8, 4]"),
     ["grid.datasets[0]", "counts: give [train, val, test]"], 6),
    ("odd image size", SYN.replace("counts: [8, 4, 4]", "size: 63"),
     ["grid.datasets[0]", "size must be an even integer"], 6),
    ("zero batch", SYN.replace("iterations: 2", "iterations: 2\n  batch_size: 0"),
     ["train.batch_size", "greater than or equal to 1"], 12),
    ("seeds not integers", SYN.replace("seeds: [0]", "seeds: [zero]"),
     ["grid.seeds[0]", "valid integer"], 9),
    ("corruptions empty", SYN.replace("[clean, x_missing, night]", "[]"),
     ["eval.corruptions", "at least 1"], 13),
    ("unknown report plot", SYN + "report:\n  plots: [pareto, radar]\n",
     ["report.plots[1]", "'pareto'"], 15),
    ("override of an unknown key", SYN + "overrides:\n  - match: {fusion: add}\n"
     "    set: {train.lrate: 0.1}\n", ["overrides[0].set", "train.lrate", "not permitted"], 16),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_suite_message_and_exit_code(case, write_suite, capsys):
    name, text, fragments, line = case
    path = write_suite(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert f"{path}:{line}:" in err, err


def test_the_well_formed_suite_validates(write_suite, capsys):
    assert main(["validate", str(write_suite(SYN))]) == 0
    assert "2 cells" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "report"])
def test_every_suite_command_refuses_with_exit_code_2(command, write_suite, tmp_path, capsys):
    path = write_suite(SYN.replace("night]", "nigth]"))
    code = main([command, str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir",
                 str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown corruption 'nigth'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
