"""Segmentation and referring metrics from a global confusion matrix.

Definitions follow mmsegmentation's ``IoUMetric`` (mmseg/evaluation/metrics/iou_metric.py):
areas are summed over the whole dataset before dividing (not a mean of per-image scores), pixels
labelled ``ignore_index`` are excluded, and a class absent from both prediction and label has
IoU 0/0 = NaN and is skipped by the ``nanmean`` of the summary.

    aAcc  = sum_k I_k / sum_k label_k
    IoU_k = I_k / (pred_k + label_k - I_k)      Acc_k = I_k / label_k
    Precision_k = I_k / pred_k                  Recall_k = I_k / label_k
    Fscore_k = 2 P_k R_k / (P_k + R_k)          (mmseg's ``mFscore``, beta 1: NaN when P or R is
                                                 0/0 or both are 0, i.e. a class that is never
                                                 predicted or never hit, so the nan-mean leaves it
                                                 out)
    Dice_k = 2 I_k / (pred_k + label_k)         (mmseg's ``mDice``: 0 for a class labelled or
                                                 predicted but never hit)
    kappa = (p_o - p_e) / (1 - p_e)             Cohen's kappa over the same matrix
"mF1" and the per-class "F1" are the F-score (mFscore), the figure ISPRS papers (MS2MNet, Samba)
publish as mF1 from mmseg's ``mFscore``; they differ from mDice exactly where a class has no
intersection (tests/bench/test_metrics.py).
Means are over ``eval_classes`` when given (ISPRS papers leave clutter out), else all classes.
Summary values are percentages, as mmseg prints them.
"""
from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(K, K) int64 matrix, rows = label, columns = prediction; ignored pixels dropped."""
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long()
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        bad = label[(label < 0) | (label >= num_classes)][0].item()
        raise ValueError(f"label value {bad} outside 0..{num_classes - 1} and not the ignore "
                         f"index {ignore_index}")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)][0].item()
        raise ValueError(f"predicted class {bad} outside 0..{num_classes - 1}: the model's "
                         f"output has more channels than the dataset's {num_classes} classes")
    index = label * num_classes + pred
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


class ConfusionMeter:
    """Accumulates a confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred.cpu(), label.cpu(), self.num_classes,
                                        self.ignore_index)

    def compute(self, eval_classes: list[int] | None = None,
                class_names: list[str] | None = None) -> dict:
        return segmentation_metrics(self.matrix.numpy(), eval_classes, class_names)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def segmentation_metrics(matrix: np.ndarray, eval_classes: list[int] | None = None,
                         class_names: list[str] | None = None) -> dict:
    """aAcc, mIoU, mAcc, mFscore (= mF1), mPrecision, mRecall, mDice, kappa (percent) and the
    per-class IoU / Acc / Fscore (= F1) / Precision / Recall / Dice (percent, NaN where
    undefined) from a (K, K) confusion matrix (rows = label)."""
    cm = np.asarray(matrix, dtype=np.float64)
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    intersect = np.diag(cm)
    area_label = cm.sum(axis=1)
    area_pred = cm.sum(axis=0)
    union = area_pred + area_label - intersect
    iou = _divide(intersect, union)
    acc = _divide(intersect, area_label)
    precision = _divide(intersect, area_pred)
    recall = acc
    fscore = _divide(2 * precision * recall, precision + recall)
    dice = _divide(2 * intersect, area_pred + area_label)
    total = cm.sum()
    subset = list(range(k)) if eval_classes is None else list(eval_classes)

    def mean(values: np.ndarray) -> float:
        chosen = values[subset]
        return float(np.nanmean(chosen) * 100) if np.isfinite(chosen).any() else float("nan")

    def per_class(values: np.ndarray) -> dict:
        return {n: float(v * 100) for n, v in zip(names, values)}

    p_o = intersect.sum() / total if total else float("nan")
    p_e = (area_label * area_pred).sum() / total ** 2 if total else float("nan")
    kappa = (p_o - p_e) / (1 - p_e) if total and p_e != 1 else float("nan")
    return {
        "aAcc": float(p_o * 100),
        "mIoU": mean(iou),
        "mAcc": mean(acc),
        "mFscore": mean(fscore),
        "mF1": mean(fscore),
        "mPrecision": mean(precision),
        "mRecall": mean(recall),
        "mDice": mean(dice),
        "kappa": float(kappa * 100),
        "IoU": per_class(iou),
        "Acc": per_class(acc),
        "Fscore": per_class(fscore),
        "F1": per_class(fscore),
        "Precision": per_class(precision),
        "Recall": per_class(recall),
        "Dice": per_class(dice),
    }


class ReferringMeter:
    """Referring-segmentation metrics as LAVT / ReMamber report them: overall IoU (sum of
    intersections over sum of unions), mean per-expression IoU, and precision at IoU
    thresholds 0.5..0.9 (an expression counts when its IoU >= the threshold)."""

    THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

    def __init__(self):
        self.intersections: list[int] = []
        self.unions: list[int] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, H, W) binary masks."""
        pred = pred.reshape(pred.shape[0], -1).bool()
        target = target.reshape(target.shape[0], -1).bool()
        self.intersections += (pred & target).sum(1).tolist()
        self.unions += (pred | target).sum(1).tolist()

    def compute(self) -> dict:
        inter = np.asarray(self.intersections, dtype=np.float64)
        union = np.asarray(self.unions, dtype=np.float64)
        # LAVT counts an expression with an empty union as IoU 0.
        ious = np.where(union > 0, _divide(inter, np.maximum(union, 1)), 0.0)
        out = {
            "oIoU": float(inter.sum() / union.sum() * 100) if union.sum() else float("nan"),
            "mIoU": float(ious.mean() * 100) if len(ious) else float("nan"),
        }
        for t in self.THRESHOLDS:
            out[f"P@{t}"] = float((ious >= t).mean() * 100) if len(ious) else float("nan")
        return out
