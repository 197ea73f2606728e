"""bench/reporting/stats.py against scipy's own tests and intervals, a hand-computed Holm example,
and published sample sizes for the t-test (Cohen 1988 / G*Power); synthetic per-seed values with a
known answer: a clear difference is significant, a null difference is not."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.reporting import stats

SEEDS = range(5)
# per-seed values: seed effects shared by both cells (same data order), small noise
BASE = {s: 70.0 + v for s, v in zip(SEEDS, [0.8, -1.1, 0.3, 1.6, -0.9])}
BETTER = {s: BASE[s] + 3.0 + e for s, e in zip(SEEDS, [0.2, -0.3, 0.1, 0.25, -0.15])}
SAME = {s: BASE[s] + e for s, e in zip(SEEDS, [0.2, -0.3, 0.1, 0.25, -0.15])}


def test_paired_comparison_is_scipy_ttest_rel_and_its_interval():
    a, b = [BETTER[s] for s in SEEDS], [BASE[s] for s in SEEDS]
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    got = stats.compare(BETTER, BASE, paired=True)
    assert got.test == "paired t, 5 seeds"
    assert got.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert got.delta == pytest.approx(np.mean(a) - np.mean(b))


def test_welch_comparison_is_scipy_ttest_ind_unequal_var():
    a = {0: 80.1, 1: 79.2, 2: 81.0, 3: 80.4}
    b = {10: 75.3, 11: 77.9, 12: 74.1}
    ref = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    ci = ref.confidence_interval(0.95)
    got = stats.compare(a, b, paired=True)  # no seed in common: Welch
    assert got.test == "Welch t"
    assert got.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_clear_difference_is_significant_and_null_difference_is_not():
    clear = stats.compare(BETTER, BASE)
    null = stats.compare(SAME, BASE)
    assert clear.p < 0.001 and clear.low > 0            # +3 on every seed, noise 0.3
    assert null.p > 0.5 and null.low < 0 < null.high    # noise only
    # unpaired, the seed effects (sd ~1.1) hide nothing this large, but widen the interval
    welch = stats.compare(BETTER, BASE, paired=False)
    assert welch.p < 0.01 and welch.high - welch.low > clear.high - clear.low


def test_fewer_than_two_seeds_cannot_be_assessed():
    assert stats.compare({0: 1.0}, {0: 2.0}) is None
    assert stats.compare({0: 1.0, 1: 2.0}, {5: 2.0}) is None
    assert math.isnan(stats.mean_ci([3.0])[1])


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, float("nan"), 0.6]) == pytest.approx([1.0, float("nan"), 1.0],
                                                                 nan_ok=True)
    assert stats.holm([]) == []


def test_mean_ci_is_the_student_t_interval():
    x = [79.6, 80.0, 79.8]
    low, high = sps.t.interval(0.95, 2, loc=np.mean(x), scale=sps.sem(x))
    assert stats.mean_ci(x)[1:] == pytest.approx((low, high))


@pytest.mark.parametrize("effect, paired, n", [
    (1.0, True, 10),    # one-sample / paired t, d = 1: 10 (G*Power)
    (0.5, True, 34),    # d = 0.5: 34
    (0.5, False, 64),   # two independent samples, d = 0.5: 64 per group (Cohen 1988)
])
def test_seeds_for_power_matches_published_sample_sizes(effect, paired, n):
    assert stats.seeds_for_power(effect, 1.0, paired=paired) == n
    assert stats.t_test_power(effect, n, paired) >= 0.8 > stats.t_test_power(effect, n - 1,
                                                                              paired)


def test_seeds_for_power_without_spread():
    assert stats.seeds_for_power(1.0, 0.0) is None
    assert stats.seeds_for_power(0.0, 1.0) is None
