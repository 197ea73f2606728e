"""Metrics against hand-computed confusion matrices (mmseg IoUMetric definitions)."""
import math

import numpy as np
import pytest
import torch

from bench.evaluation.metrics import (
    ConfusionMeter,
    ReferringMeter,
    confusion_matrix,
    segmentation_metrics,
)


def test_confusion_matrix_counts_and_ignore():
    label = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(pred, label, num_classes=3, ignore_index=255)
    # rows = label, cols = prediction; the ignored pixel (pred 2) is dropped
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_label_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="label value 7 outside 0..2"):
        confusion_matrix(torch.zeros(4), torch.tensor([0, 1, 7, 2]), 3)


def test_prediction_out_of_range_is_an_error_not_clamped():
    with pytest.raises(ValueError, match="predicted class 3 outside 0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="predicted class -1"):
        confusion_matrix(torch.tensor([-1, 0]), torch.tensor([0, 1]), 3)


def mmseg_fscore_summary(cm: np.ndarray) -> tuple[float, float]:
    """(mFscore, mDice) in percent from mmseg's IoUMetric definitions (total_area_to_metrics):
    precision = I / pred area, recall = I / label area, f = (1 + b^2) P R / (b^2 P + R) with
    b = 1, dice = 2 I / (pred + label); summaries are nan-means."""
    inter = np.diag(cm).astype(np.float64)
    pred, label = cm.sum(0).astype(np.float64), cm.sum(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, r = inter / pred, inter / label
        f = [(1 + 1) * (pi * ri) / (1 * pi + ri) for pi, ri in zip(p, r)]
        dice = 2 * inter / (pred + label)
    return float(np.nanmean(f) * 100), float(np.nanmean(dice) * 100)


def test_mfscore_is_not_mdice_issue_case():
    """Five classes, two of them labelled and predicted but never hit: their Fscore is 0/0
    (left out), their Dice 0. Classes 0-2: I = 1281, pred = label = 2000, so P = R = F = Dice
    = 0.6405. By hand: mFscore = 64.05, mDice = 3 * 64.05 / 5 = 38.43 (the numbers of the
    report that found "mF1" to be mDice)."""
    cm = np.zeros((5, 5), dtype=np.int64)
    for c in range(3):
        cm[c, c] = 1281
        cm[c, 3] = 719          # labelled c, predicted 3
        cm[4, c] = 719          # labelled 4, predicted c
    cm[3, 4] = 500              # labelled 3, predicted 4
    m = segmentation_metrics(cm)
    assert round(m["mFscore"], 2) == 64.05 and m["mF1"] == m["mFscore"]
    assert round(m["mDice"], 2) == 38.43
    assert (m["mFscore"], m["mDice"]) == pytest.approx(mmseg_fscore_summary(cm), rel=1e-12)
    assert math.isnan(m["Fscore"]["3"]) and m["Dice"]["3"] == 0.0


def test_metrics_hand_computed():
    # class 0: I=3, label 4, pred 5 -> IoU 3/6, Acc 3/4, F1 6/9
    # class 1: I=2, label 3, pred 2 -> IoU 2/3, Acc 2/3, F1 4/5
    # class 2: I=0, label 1, pred 1 -> IoU 0, Acc 0, Dice 0, Fscore 2*0*0/(0+0) = NaN
    cm = np.array([[3, 0, 1], [1, 2, 0], [1, 0, 0]])
    m = segmentation_metrics(cm, class_names=["a", "b", "c"])
    assert m["IoU"]["a"] == pytest.approx(50.0)
    assert m["IoU"]["b"] == pytest.approx(200 / 3)
    assert m["IoU"]["c"] == pytest.approx(0.0)
    assert m["mIoU"] == pytest.approx((50 + 200 / 3 + 0) / 3)
    assert m["mAcc"] == pytest.approx((75 + 200 / 3 + 0) / 3)
    assert m["mDice"] == pytest.approx((600 / 9 + 80 + 0) / 3)
    # P = 3/5, R = 3/4 -> F = 2/3; P = 1, R = 2/3 -> F = 4/5; class c is NaN, left out
    assert math.isnan(m["Fscore"]["c"])
    assert m["mFscore"] == m["mF1"] == pytest.approx((200 / 3 + 80) / 2)
    assert m["mPrecision"] == pytest.approx((60 + 100 + 0) / 3)
    assert m["mRecall"] == pytest.approx((75 + 200 / 3 + 0) / 3)
    assert m["aAcc"] == pytest.approx(5 / 8 * 100)
    # kappa: p_o = 5/8, p_e = (4*5 + 3*2 + 1*1) / 64 = 27/64
    p_o, p_e = 5 / 8, 27 / 64
    assert m["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e) * 100)


def test_absent_class_is_nan_and_skipped():
    # class 2 never labelled and never predicted -> NaN, not 0, and left out of the means
    cm = np.array([[2, 0, 0], [0, 2, 0], [0, 0, 0]])
    m = segmentation_metrics(cm)
    assert math.isnan(m["IoU"]["2"]) and math.isnan(m["Acc"]["2"]) and math.isnan(m["F1"]["2"])
    assert m["mIoU"] == pytest.approx(100.0)


def test_labelled_but_never_predicted_class_scores_zero_not_nan():
    cm = np.array([[2, 0], [1, 0]])
    m = segmentation_metrics(cm)
    assert m["IoU"]["1"] == 0.0 and m["Dice"]["1"] == 0.0
    assert math.isnan(m["Precision"]["1"]) and math.isnan(m["Fscore"]["1"])  # 0/0 predictions
    assert m["mIoU"] == pytest.approx((2 / 3 * 100 + 0) / 2)


def test_eval_classes_subset():
    cm = np.array([[3, 0, 1], [1, 2, 0], [1, 0, 0]])
    m = segmentation_metrics(cm, eval_classes=[0, 1])
    assert m["mIoU"] == pytest.approx((50 + 200 / 3) / 2)


def test_meter_accumulates_globally_not_per_image():
    meter = ConfusionMeter(2)
    meter.update(torch.tensor([[1, 1]]), torch.tensor([[1, 1]]))          # image 1: perfect
    meter.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))
    # global: class 1 I=2, U=3; per-image mean would differ
    assert meter.compute()["IoU"]["1"] == pytest.approx(200 / 3)


def test_referring_metrics_hand_computed():
    meter = ReferringMeter()
    pred = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    gt = torch.tensor([[[1, 1], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    meter.update(pred, gt)
    m = meter.compute()
    # IoUs: 1.0, 0.25, empty union -> 0 (LAVT's convention)
    assert m["mIoU"] == pytest.approx((1 + 0.25 + 0) / 3 * 100)
    assert m["oIoU"] == pytest.approx((2 + 1) / (2 + 4) * 100)
    assert m["P@0.5"] == pytest.approx(100 / 3)
    assert m["P@0.9"] == pytest.approx(100 / 3)
