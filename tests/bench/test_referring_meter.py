"""ReferringMeter against hand-computed values (LAVT / ReMamber definitions): oIoU = sum I / sum U,
mIoU = mean per-expression IoU (empty union -> 0), P@t = share of expressions with IoU >= t."""
from __future__ import annotations

import pytest
import torch

from bench.evaluation.metrics import ReferringMeter


def masks(pairs):
    """(intersection, union) per expression -> pred, target (B, 2, 5) with exactly those."""
    pred = torch.zeros(len(pairs), 10, dtype=torch.bool)
    target = torch.zeros(len(pairs), 10, dtype=torch.bool)
    for row, (inter, union) in enumerate(pairs):
        pred[row, :inter] = True              # shared pixels
        target[row, :inter] = True
        extra = union - inter                 # split the rest between pred-only and gt-only
        pred[row, inter:inter + extra // 2] = True
        target[row, inter + extra // 2:union] = True
    return pred.view(-1, 2, 5), target.view(-1, 2, 5)


def test_hand_computed_over_two_updates():
    meter = ReferringMeter()
    # IoUs 2/6, 3/5 = 0.6, 4/5 = 0.8 | 9/10 = 0.9, 7/10 = 0.7, empty (0 by LAVT's convention)
    meter.update(*masks([(2, 6), (3, 5), (4, 5)]))
    meter.update(*masks([(9, 10), (7, 10), (0, 0)]))
    m = meter.compute()
    assert m["oIoU"] == pytest.approx(100 * 25 / 36)
    assert m["mIoU"] == pytest.approx(100 * (2 / 6 + 0.6 + 0.8 + 0.9 + 0.7 + 0) / 6)
    # thresholds are inclusive: 0.6, 0.7, 0.8 and 0.9 each count at their own threshold
    assert m["P@0.5"] == pytest.approx(100 * 4 / 6)
    assert m["P@0.6"] == pytest.approx(100 * 4 / 6)
    assert m["P@0.7"] == pytest.approx(100 * 3 / 6)
    assert m["P@0.8"] == pytest.approx(100 * 2 / 6)
    assert m["P@0.9"] == pytest.approx(100 * 1 / 6)
    assert set(m) == {"oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"}


def test_logit_threshold_is_sigmoid_half():
    """The harness predicts ``logits > 0``, which is ReMamber's ``sigmoid(logits) > 0.5``."""
    logits = torch.tensor([[[-2.0, -1e-4, 0.0, 1e-4, 3.0]]])
    assert torch.equal(logits > 0, logits.sigmoid() > 0.5)
    meter = ReferringMeter()
    meter.update(logits > 0, torch.tensor([[[0, 0, 1, 1, 1]]]))
    m = meter.compute()
    assert m["mIoU"] == pytest.approx(100 * 2 / 3) and m["oIoU"] == pytest.approx(100 * 2 / 3)


def test_nothing_seen_is_nan():
    m = ReferringMeter().compute()
    assert all(v != v for v in m.values())  # NaN, not a misleading 0
