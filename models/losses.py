"""Segmentation loss terms, generic over models: focal, boundary-weighted CE, Lovasz-softmax,
soft Dice, and their weighted sum (MS2MNet's ``CombinedLoss``).

Every function takes logits (B, K, H, W) (Lovasz takes probabilities) and integer labels
(B, H, W); pixels equal to ``ignore_index`` take no part, and means are over the valid pixels
(upstream MS2MNet has no ignore label; with none in the batch the values are upstream's).
Definitions follow DrWuHonglin/MS2MNet ``models/utils.py`` (``FocalLoss2d``,
``BoundaryAwareLoss``, ``lovasz_softmax``, ``CombinedLoss``) and Berman et al. 2018 (Lovasz).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``valid`` pixels; 0 (with a graph) when there are none."""
    if not bool(valid.any()):
        return values.sum() * 0.0
    return values[valid].mean()


def cross_entropy(logits, target, weight=None, ignore_index: int = 255,
                  avg_non_ignore: bool = True) -> torch.Tensor:
    """Cross-entropy; ``avg_non_ignore`` (mmseg ``CrossEntropyLoss``'s name): True averages
    over the valid pixels (PyTorch's ``mean``), False over all pixels with the ignored ones
    counting zero (mmseg's default, ``avg_non_ignore=False``; with a fraction f of pixels
    ignored the value is (1 - f) times the valid-pixel mean)."""
    if avg_non_ignore:
        return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                           reduction="none").mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: float | None = 0.25, weight=None, ignore_index: int = 255) -> torch.Tensor:
    """Focal loss -(1 - p_t)^gamma log p_t, mean over valid pixels.

    ``alpha`` is applied as upstream's ``FocalLoss2d`` does for many classes: alpha for pixels
    of class > 0 and 1 - alpha for class 0 (a binary-style balance, not per class)."""
    ce = F.cross_entropy(logits, target, weight=weight, reduction="none",
                         ignore_index=ignore_index)
    pt = torch.exp(-ce)
    loss = (1.0 - pt) ** gamma * ce
    if alpha is not None and alpha > 0:
        loss = loss * torch.where(target > 0, alpha, 1.0 - alpha)
    return masked_mean(loss, target != ignore_index)


def one_hot_labels(target: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """(B, H, W) labels -> (B, K, H, W) float one-hot; ignored pixels are all zeros."""
    valid = target != ignore_index
    hot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).float()
    return hot * valid.unsqueeze(1)


def boundary_weight_map(target: torch.Tensor, num_classes: int, boundary_weight: float = 1.5,
                        threshold: float = 0.1, ignore_index: int = 255) -> torch.Tensor:
    """Upstream ``BoundaryAwareLoss``'s weights: 1 + boundary_weight x (number of classes whose
    one-hot mask has a Sobel gradient magnitude above ``threshold`` at the pixel). The Sobel
    filters see zero padding, as upstream, so the image border is an edge of every class that
    touches it."""
    hot = one_hot_labels(target, num_classes, ignore_index)
    kx = hot.new_tensor(SOBEL_X).view(1, 1, 3, 3).repeat(num_classes, 1, 1, 1)
    ky = hot.new_tensor(SOBEL_Y).view(1, 1, 3, 3).repeat(num_classes, 1, 1, 1)
    gx = F.conv2d(hot, kx, padding=1, groups=num_classes)
    gy = F.conv2d(hot, ky, padding=1, groups=num_classes)
    edges = (torch.sqrt(gx ** 2 + gy ** 2) > threshold).float()
    return 1.0 + boundary_weight * edges.sum(dim=1)


def boundary_ce_loss(logits: torch.Tensor, target: torch.Tensor, boundary_weight: float = 1.5,
                     threshold: float = 0.1, weight=None, ignore_index: int = 255):
    """Cross-entropy weighted per pixel by ``boundary_weight_map``, mean over valid pixels."""
    ce = F.cross_entropy(logits, target, weight=weight, reduction="none",
                         ignore_index=ignore_index)
    weights = boundary_weight_map(target, logits.shape[1], boundary_weight, threshold,
                                  ignore_index)
    return masked_mean(ce * weights, target != ignore_index)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors
    (Berman et al. 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor,
                        classes: str | list[int] = "present") -> torch.Tensor:
    """Lovasz-softmax on flat probabilities (P, K) and labels (P,): the mean over classes of
    <sorted |fg - p_c|, lovasz_grad(fg sorted the same way)>. ``classes``: "present" (classes
    in the labels; upstream's default), "all", or a list of class indices."""
    if probs.numel() == 0:
        return probs.sum() * 0.0
    num_classes = probs.shape[1]
    chosen = range(num_classes) if classes in ("all", "present") else classes
    losses = []
    for c in chosen:
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[order])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor, classes="present",
                   per_image: bool = False, ignore_index: int = 255) -> torch.Tensor:
    """Lovasz-softmax loss on probabilities (B, K, H, W) (apply softmax first)."""

    def flat(p, t):
        p = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])
        t = t.reshape(-1)
        valid = t != ignore_index
        return p[valid], t[valid]

    if per_image:
        return torch.stack([lovasz_softmax_flat(*flat(p[None], t[None]), classes=classes)
                            for p, t in zip(probs, target)]).mean()
    return lovasz_softmax_flat(*flat(probs, target), classes=classes)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
              ignore_index: int = 255) -> torch.Tensor:
    """Soft Dice: 1 - mean over classes of (2 sum p y + s) / (sum p + sum y + s), valid pixels."""
    probs = logits.softmax(dim=1) * (target != ignore_index).unsqueeze(1)
    hot = one_hot_labels(target, logits.shape[1], ignore_index)
    dims = (0, 2, 3)
    dice = (2 * (probs * hot).sum(dims) + smooth) / (probs.sum(dims) + hot.sum(dims) + smooth)
    return 1.0 - dice.mean()


def combined_seg_loss(logits: torch.Tensor, target: torch.Tensor, alpha_focal: float = 0.0,
                      alpha_boundary: float = 0.0, alpha_lovasz: float = 0.0, weight=None,
                      ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """MS2MNet's ``CombinedLoss``: CE + a_f Focal(gamma 2, alpha 0.25) + a_b BoundaryCE
    + a_l Lovasz-softmax; terms with a zero weight are not computed. Returns every computed
    term and their weighted sum under "loss"."""
    terms = {"ce": cross_entropy(logits, target, weight, ignore_index)}
    total = terms["ce"]
    if alpha_focal > 0:
        terms["focal"] = focal_loss(logits, target, weight=weight, ignore_index=ignore_index)
        total = total + alpha_focal * terms["focal"]
    if alpha_boundary > 0:
        terms["boundary"] = boundary_ce_loss(logits, target, weight=weight,
                                             ignore_index=ignore_index)
        total = total + alpha_boundary * terms["boundary"]
    if alpha_lovasz > 0:
        terms["lovasz"] = lovasz_softmax(logits.softmax(dim=1), target, ignore_index=ignore_index)
        total = total + alpha_lovasz * terms["lovasz"]
    terms["loss"] = total
    return terms
