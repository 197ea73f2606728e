"""Report tables from hand-made result frames: Δ against one baseline or the best of several,
the summary lines (best cell, margins, class-group ranking), the Pareto front."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.report import baseline_keys, main_table, summary_lines
from bench.report_plots import pareto_front
from bench.suite import ReportSpec

CLASSES = ["bg", "a", "b"]


def frame(rows):
    """rows: (fusion, seed, mIoU, IoU of class b)."""
    out = []
    for fusion, seed, miou, iou_b in rows:
        out.append({"model": "m", "size": "s", "fusion": fusion, "dataset": "d", "seed": seed,
                    "clean/mIoU": miou, "clean/IoU/bg": 90.0, "clean/IoU/a": 50.0,
                    "clean/IoU/b": iou_b})
    return pd.DataFrame(out)


def spec(**report):
    return SimpleNamespace(report=ReportSpec(metrics=["mIoU"], **report))


DONE = frame([("rgb", 0, 30.0, 10.0), ("rgb", 1, 32.0, 12.0), ("x", 0, 20.0, 5.0),
              ("x", 1, 22.0, 7.0), ("late", 0, 60.0, 30.0), ("late", 1, 62.0, 34.0),
              ("joint", 0, 80.0, 90.0), ("joint", 1, 84.0, 94.0)])


def test_delta_against_one_baseline():
    table = main_table(DONE, spec(baseline={"fusion": "rgb"})).set_index("fusion")
    assert table.loc["rgb", "Δ mIoU"] == "(baseline)"
    assert table.loc["joint", "Δ mIoU"] == "+51.0"     # 82 - 31
    assert table.loc["x", "Δ mIoU"] == "-10.0"
    assert table.loc["joint", "mIoU"] == f"82.0 ± {math.sqrt(8):.1f}"
    assert table.loc["joint", "seeds"] == 2


def test_delta_against_the_best_of_several_baselines():
    table = main_table(DONE, spec(baseline={"fusion": ["rgb", "x"]},
                                  class_groups={"pair": [2]})).set_index("fusion")
    assert table.loc["rgb", "Δ mIoU"] == table.loc["x", "Δ mIoU"] == "(baseline)"
    assert table.loc["late", "Δ mIoU"] == "+30.0"      # 61 - max(31, 21)
    assert table.loc["joint", "pair IoU"] == "92.0 ± 2.8"


def test_baseline_keys_keep_the_other_grid_keys():
    index = [("m", "s", f, d) for f in ("rgb", "x", "joint") for d in ("d1", "d2")]
    keys = baseline_keys(("m", "s", "joint", "d2"), {"fusion": ["rgb", "x"]}, index)
    assert keys == [("m", "s", "rgb", "d2"), ("m", "s", "x", "d2")]
    assert baseline_keys(("m", "s", "joint", "d2"), None, index) == []


def test_summary_names_the_best_cell_its_margins_and_the_group_ranking():
    lines = summary_lines(DONE, spec(baseline={"fusion": ["rgb", "x"]},
                                     class_groups={"XOR pair": [2]}))
    assert lines[0].startswith("- Best on the clean test split: **joint**, mIoU 82.0 ± 2.8")
    assert "ahead of rgb by +51.0, x by +61.0" in lines[0]
    assert lines[1] == ("- XOR pair IoU (clean, mean over seeds), best first: joint 92.0, "
                        "late 32.0, rgb 11.0, x 6.0.")


@pytest.mark.parametrize("points, front", [
    ([(1, 10), (2, 5), (3, 20), (0.5, 1)], [3, 0, 2]),
    ([(1, 10), (1, 12), (2, 12)], [1]),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front
