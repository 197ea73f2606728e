"""Report tables from hand-made result frames: Δ against one baseline or the best of several,
the summary lines (best cell, margins, class-group ranking), the Pareto front."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.config.schema import ReportSpec
from bench.reporting.plots import pareto_front
from bench.reporting.suite_report import baseline_keys, main_table, summary_lines

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
    assert lines[0].startswith("- Best on the clean test split: **joint**, mIoU 82.0 ± 2.8 "
                               "(95% CI 56.6–107.4, 2 seeds)")
    # against the better baseline (rgb, 31): +51, paired over seeds 0 and 1
    assert "; +51.0 against rgb (Δ 95% CI [" in lines[0] and "paired t, 2 seeds" in lines[0]
    assert lines[-1] == ("- XOR pair IoU (clean, mean over seeds), best first: joint 92.0, "
                         "late 32.0, rgb 11.0, x 6.0.")


@pytest.mark.parametrize("points, front", [
    ([(1, 10), (2, 5), (3, 20), (0.5, 1)], [3, 0, 2]),
    ([(1, 10), (1, 12), (2, 12)], [1]),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front


# --- statistics over seeds, cost, chance level, tables that render --------------------------

def seeded(groups: dict[str, list[float]], cost: dict[str, float] | None = None):
    """One row per (fusion, seed) with the given clean mIoU values, seeds 0..n-1."""
    rows = []
    for fusion, values in groups.items():
        for seed, miou in enumerate(values):
            rows.append({"model": "m", "size": "s", "fusion": fusion, "dataset": "d",
                         "seed": seed, "batch_size": 8, "clean/mIoU": miou,
                         "gmacs_published": (cost or {}).get(fusion, 1.0),
                         "gmacs_full": (cost or {}).get(fusion, 1.0),
                         "params_m": 0.1, "latency_ms_median": (cost or {}).get(fusion, 1.0)})
    return pd.DataFrame(rows)


# seed effects shared by every fusion (same data order per seed): +0.0, +1.0, -1.0, +0.5
SEED_EFFECT = [0.0, 1.0, -1.0, 0.5]
SEEDED = seeded({
    "base": [50 + e for e in SEED_EFFECT],
    "big": [80 + e + n for e, n in zip(SEED_EFFECT, [0.1, -0.1, 0.0, 0.05])],
    "twin": [79.9 + e + n for e, n in zip(SEED_EFFECT, [-0.2, 0.3, 0.1, -0.1])],
    "small": [70 + e for e in SEED_EFFECT]}, cost={"base": 1, "big": 10, "twin": 3, "small": 2})


def test_table_has_ci_and_holm_columns_and_marks_the_tied_cells():
    table = main_table(SEEDED, spec(baseline={"fusion": "base"})).set_index("fusion")
    assert table.loc["big", "Δ mIoU"] == "+30.0"
    assert table.loc["big", "p (Holm)"] == "<0.001"   # +30 on every seed, noise 0.1
    low, high = (float(v) for v in table.loc["big", "Δ 95% CI"].strip("[]").split(", "))
    assert low < 30.0 < high and high - low < 1.0
    assert table.loc["big", "vs best"] == "best"
    assert table.loc["twin", "vs best"].startswith("tied")     # -0.1 within the noise
    assert table.loc["small", "vs best"].startswith("below")   # -10 on every seed
    assert table.loc["base", "Δ 95% CI"] == "–"


def test_summary_states_ties_power_pareto_and_the_cheapest_within_the_best_ci():
    text = "\n".join(summary_lines(SEEDED, spec(baseline={"fusion": "base"})))
    assert "Best on the clean test split: **big**" in text
    assert "10.0 GMACs published / 10.0 full, 0.100 M parameters, 10 ms latency" in text
    assert "Tied with the best" in text and "twin (-0.1" in text and "small (" not in text
    assert "Closest gap: twin" in text and "80% power" in text
    assert "vs GMACs (full): base, small, twin, big" in text
    assert "within the best's 95% CI" in text and "**twin**" in text


def test_one_seed_says_significance_cannot_be_assessed():
    one = seeded({"base": [50.0], "big": [80.0]})
    text = "\n".join(summary_lines(one, spec(baseline={"fusion": "base"})))
    assert "Significance cannot be assessed" in text
    table = main_table(one, spec(baseline={"fusion": "base"})).set_index("fusion")
    assert table.loc["big", "p (Holm)"] == "–" and table.loc["big", "Δ 95% CI"] == "–"


def test_a_cell_predicting_one_class_is_flagged_at_chance_level():
    done = seeded({"base": [50.0, 51.0], "broken": [7.8, 60.0]})
    done["clean/IoU/background"] = 70.0
    done["clean/IoU/car"] = 20.0
    one_class = [[70, 0], [30, 0]]    # every pixel predicted background
    done["clean/confusion"] = [[[60, 10], [5, 25]]] * len(done)
    done.at[2, "clean/confusion"] = one_class
    text = "\n".join(summary_lines(done, spec(baseline={"fusion": "base"})))
    assert "At chance level: broken seed 0 predicts only *background*" in text
    table = main_table(done, spec(baseline={"fusion": "base"})).set_index("fusion")
    assert table.loc["broken", "note"] == "⚠ 1 of 2 seed(s) predict one class"


def test_generated_tables_render_with_pipes_in_class_names():
    from bench.reporting.markdown import markdown_table
    from bench.reporting.suite_report import per_class_table
    from tests.helpers.markdown_tables import table_problems

    done = DONE.rename(columns={"clean/IoU/b": "clean/IoU/yellow_low|cyan_high"})
    text = markdown_table(per_class_table(done))
    assert "yellow_low\\|cyan_high" in text
    assert table_problems(text) == []
    # the same table unescaped is what the issue saw: header 2 cells wider, 0 tables parsed
    assert table_problems(per_class_table(done).to_markdown(index=False))


def test_robustness_values_of_single_class_predictions_are_marked():
    from bench.reporting.suite_report import corruption_table

    done = seeded({"rgb": [50.0, 51.0]})
    done["x_missing/mIoU"] = [7.8, 7.8]
    done["x_missing/confusion"] = [[[70, 0], [30, 0]], [[70, 0], [30, 0]]]
    table = corruption_table(done, ["clean", "x_missing"]).set_index("fusion")
    assert table.loc["rgb", "x_missing"] == "7.8 ± 0.0 †2"
    assert table.loc["rgb", "clean"] == "50.5 ± 0.7"


def test_curves_are_drawn_per_loss_composition_and_a_one_point_curve_shows(tmp_path,
                                                                           monkeypatch):
    from bench.reporting.plots import loss_composition, plot_curves

    def history(terms, n):
        return {"iteration": list(range(10, 10 * n + 1, 10)), "loss": [1.0 / i for i in
                                                                      range(1, n + 1)],
                "loss_terms": terms}

    done = seeded({"a": [50.0], "b": [60.0], "c": [55.0]})
    done["history"] = [history([], 5), history(["loss_decode", "loss_aux"], 5), history([], 1)]
    assert [loss_composition(r) for _, r in done.iterrows()] == [
        "single-term loss", "loss = decode + aux", "single-term loss"]
    old = done.assign(history=[{"iteration": [10], "loss": [1.0]}] * 3)
    assert loss_composition(old.iloc[0]) == "loss of m"   # stores from before loss_terms
    import matplotlib.pyplot as plt
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["axes"] = list(fig.axes)
        captured["lines"] = {ax.get_title(): [(len(line.get_xdata()), line.get_marker())
                                              for line in ax.get_lines()] for ax in fig.axes}
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    assert plot_curves(done, ["model", "size", "fusion", "dataset"], tmp_path / "c.png")
    assert len(captured["axes"]) == 2
    assert captured["lines"]["single-term loss"] == [(5, "o"), (1, "o")]
    assert captured["lines"]["loss = decode + aux"] == [(5, "o")]
