"""Loss terms against values computed by hand on tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    boundary_ce_loss,
    boundary_weight_map,
    combined_seg_loss,
    dice_loss,
    focal_loss,
    lovasz_grad,
    lovasz_softmax,
    lovasz_softmax_flat,
)


def test_focal_loss_by_hand():
    # one pixel of class 0 with logits (2, 0), one of class 1 with logits (0, 1)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.exp(1) / (math.exp(1) + 1)
    # upstream's alpha: 1 - 0.25 for class 0, 0.25 for the others
    by_hand = (0.75 * (1 - p0) ** 2 * -math.log(p0) + 0.25 * (1 - p1) ** 2 * -math.log(p1)) / 2
    assert focal_loss(logits, target).item() == pytest.approx(by_hand, rel=1e-6)


def test_focal_loss_without_focusing_is_cross_entropy_and_ignores_255():
    logits, target = torch.randn(2, 4, 3, 3), torch.randint(0, 4, (2, 3, 3))
    target[0, 0, 0] = 255
    ce = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, alpha=None), ce)


def test_boundary_weights_by_hand():
    """5x5 of class 0 with one class-1 pixel in the middle; zero padding makes the border an
    edge of class 0. Border ring: one class with an edge (1 + 1.5); ring around the centre:
    both classes (1 + 3); centre: none (the Sobel kernels' centre weight is 0)."""
    target = torch.zeros(1, 5, 5, dtype=torch.long)
    target[0, 2, 2] = 1
    expected = torch.full((5, 5), 2.5)
    expected[1:4, 1:4] = 4.0
    expected[2, 2] = 1.0
    torch.testing.assert_close(boundary_weight_map(target, num_classes=2)[0], expected)
    # with uniform logits every pixel's CE is log 2
    loss = boundary_ce_loss(torch.zeros(1, 2, 5, 5), target)
    assert loss.item() == pytest.approx(math.log(2) * expected.mean().item(), rel=1e-6)


def test_boundary_weights_of_a_single_class_image():
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    expected = torch.full((3, 3), 2.5)
    expected[1, 1] = 1.0
    torch.testing.assert_close(boundary_weight_map(target, num_classes=3)[0], expected)


def test_lovasz_softmax_on_a_2x2_example():
    """target [[0, 1], [1, 1]], p(class 1) = [[.2, .6], [.9, .4]]. Both classes have errors
    (.2, .4, .1, .6). Class 0: sorted fg (0, 0, 1, 0) -> grad (1/2, 1/6, 1/3, 0) -> 0.4333.
    Class 1: sorted fg (1, 1, 0, 1) -> grad (1/3, 1/3, 1/12, 1/4) -> 0.375. Mean 0.40417."""
    p1 = torch.tensor([[0.2, 0.6], [0.9, 0.4]])
    probs = torch.stack([1 - p1, p1])[None]
    target = torch.tensor([[[0, 1], [1, 1]]])
    class0 = 0.6 / 2 + 0.4 / 6 + 0.2 / 3
    class1 = 0.6 / 3 + 0.4 / 3 + 0.2 / 12 + 0.1 / 4
    assert lovasz_softmax(probs, target).item() == pytest.approx((class0 + class1) / 2, rel=1e-6)
    torch.testing.assert_close(lovasz_grad(torch.tensor([0.0, 0.0, 1.0, 0.0])),
                               torch.tensor([0.5, 1 / 6, 1 / 3, 0.0]))


def test_lovasz_present_skips_absent_classes_and_ignores_255():
    p1 = torch.tensor([[0.2, 0.6], [0.9, 0.4]])
    probs = torch.stack([1 - p1, p1, torch.zeros(2, 2)])[None]  # class 2 absent
    target = torch.tensor([[[0, 1], [1, 1]]])
    present = lovasz_softmax(probs, target)
    assert lovasz_softmax(probs, target, classes="all") < present  # absent class adds 0 error
    target_ignored = torch.tensor([[[0, 1], [1, 255]]])
    kept_probs = probs[0].permute(1, 2, 0).reshape(4, 3)[:3]
    torch.testing.assert_close(lovasz_softmax(probs, target_ignored),
                               lovasz_softmax_flat(kept_probs, torch.tensor([0, 1, 1])))


def test_dice_by_hand():
    # two pixels, two classes, probabilities (0.8, 0.2) and (0.3, 0.7), labels 0 and 1
    logits = torch.log(torch.tensor([[0.8, 0.3], [0.2, 0.7]])).reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    dice0 = (2 * 0.8 + 1) / (1.1 + 1 + 1)
    dice1 = (2 * 0.7 + 1) / (0.9 + 1 + 1)
    assert dice_loss(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)


def test_combined_loss_is_the_weighted_sum():
    logits, target = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    out = combined_seg_loss(logits, target, 0.6, 0.4, 0.2)
    torch.testing.assert_close(out["loss"], out["ce"] + 0.6 * out["focal"]
                               + 0.4 * out["boundary"] + 0.2 * out["lovasz"])
    assert set(combined_seg_loss(logits, target)) == {"ce", "loss"}
