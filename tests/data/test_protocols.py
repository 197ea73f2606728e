"""Evaluation protocols against toy models whose logits are known functions of position."""
import math

import pytest
import torch

from bench.evaluation.protocols import ProtocolError, describe, infer, resolve


class WindowPosition(torch.nn.Module):
    """Logits: channel 0 = column index inside the window it sees, channel 1 = row index.
    Also checks that every image modality arrives with the same window and that text passes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, inputs):
        rgb = inputs["rgb"]
        assert torch.equal(inputs["x"], rgb * 2), "rgb and x must go through the same window"
        if "text" in inputs:
            assert inputs["text"].tolist() == [[7, 8]]
        b, _, h, w = rgb.shape
        self.sizes.append((h, w))
        cols = torch.arange(w, dtype=torch.float32).expand(b, h, w)
        rows = torch.arange(h, dtype=torch.float32)[:, None].expand(b, h, w)
        return torch.stack([cols, rows], dim=1)


def inputs_of(height, width):
    rgb = torch.rand(1, 3, height, width)
    return {"rgb": rgb, "x": rgb * 2, "text": torch.tensor([[7, 8]])}


def columns(scores):
    return scores[0, 0, 0].tolist()


def test_whole_is_one_pass():
    model = WindowPosition()
    scores = infer(model, inputs_of(5, 6), 2, {"mode": "whole"})
    assert columns(scores) == [0, 1, 2, 3, 4, 5] and model.sizes == [(5, 6)]


def test_ssrs_windows_repeat_the_edge_window():
    # width 6, crop 4, stride 2: starts 0, 2, 4 -> 4 is past 6 - 4, replaced by 2: [0, 2, 2]
    # column c sums (c - 0) over [0, 3] and 2 x (c - 2) over [2, 5]; height 4 gives row starts
    # 0, 2 -> [0, 0]: every column window is counted twice more.
    protocol = {"mode": "slide", "crop": [4, 4], "stride": [2, 2], "windows": "ssrs",
                "score": "logits", "average": False}
    scores = infer(WindowPosition(), inputs_of(4, 6), 2, protocol)
    assert columns(scores) == [2 * v for v in [0, 1, 2, 5, 4, 6]]


def test_mmseg_windows_average_overlaps():
    # max(6 - 4 + 2 - 1, 0) // 2 + 1 = 2 windows: starts 0 and 2; average over coverage
    protocol = {"mode": "slide", "crop": [4, 4], "stride": [2, 2], "windows": "mmseg"}
    scores = infer(WindowPosition(), inputs_of(4, 6), 2, protocol)
    assert columns(scores) == [0, 1, 1, 2, 2, 3]


def test_mmseg_window_shrinks_when_image_is_smaller_than_crop():
    model = WindowPosition()
    protocol = {"mode": "slide", "crop": [8, 8], "stride": [4, 4], "windows": "mmseg"}
    scores = infer(model, inputs_of(3, 5), 2, protocol)
    assert model.sizes == [(3, 5)] and columns(scores) == [0, 1, 2, 3, 4]


def test_sigma_windows_flip_then_exp_then_sum():
    # stride ceil(4 * 0.5) = 2; ceil((6 - 4) / 2) + 1 = 2 windows per row: starts 0 and 2.
    # Logits + flipped logits = c + (3 - c) = 3 in every window -> exp(3) per covering window.
    protocol = {"mode": "slide", "crop": [4, 4], "stride_rate": 0.5, "flip": True}
    scores = infer(WindowPosition(), inputs_of(5, 6), 2, protocol)
    coverage = [1, 1, 2, 2, 1, 1]
    expected = [n * math.exp(3) for n in coverage]
    assert columns(scores) == pytest.approx(expected, rel=1e-6)
    # rows: height 5, starts 0 and min(2 + 4, 5) - 4 = 1; rows + flipped rows = r + r (no v-flip)
    rows = scores[0, 1, :, 0].tolist()
    assert rows == pytest.approx([math.exp(0), math.exp(2) + math.exp(0), math.exp(4) + math.exp(2),
                                  math.exp(6) + math.exp(4), math.exp(6)], rel=1e-6)


def test_sigma_pads_small_images_centred_and_crops_back():
    # 3x3 image, 4x6 crop: pad rows 0 top / 1 bottom, columns 1 left / 2 right; one pass
    model = WindowPosition()
    protocol = {"mode": "slide", "crop": [4, 6], "stride_rate": 2 / 3, "score": "logits"}
    scores = infer(model, inputs_of(3, 3), 2, protocol)
    assert model.sizes == [(4, 6)]
    assert columns(scores) == [1, 2, 3] and scores[0, 1, :, 0].tolist() == [0, 1, 2]


def test_sigma_grid_counts_on_both_axes():
    # 7x9 image, crop 4x5, rate 0.5 -> stride (2, 3); row starts [0, 2, 3], column starts
    # [0, 3, 4] (the last moved back inside); with sum of logits each pixel collects
    # sum over covering windows of (c - start).
    protocol = {"mode": "slide", "crop": [4, 5], "stride_rate": 0.5, "score": "logits"}
    model = WindowPosition()
    scores = infer(model, inputs_of(7, 9), 2, protocol)
    assert len(model.sizes) == 9 and set(model.sizes) == {(4, 5)}
    starts = [0, 3, 4]
    expected = [sum(c - s for s in starts if s <= c < s + 5) for c in range(9)]
    row_coverage = [sum(1 for s in (0, 2, 3) if s <= r < s + 4) for r in range(7)]
    assert scores[0, 0, 0].tolist() == [v * row_coverage[0] for v in expected]
    assert expected == [0, 1, 2, 3, 5, 3, 5, 7, 4]


def test_multi_scale_sizes_and_sum():
    model = WindowPosition()

    def constant(inputs):
        logits = model(inputs)
        return torch.ones_like(logits)

    scores = infer(constant, inputs_of(8, 10), 2, {"mode": "whole", "scales": [0.75, 1, 1.25]})
    # cv2.resize(fx=s) rounds: 7.5 -> 8 columns, 12.5 -> 13 columns
    assert model.sizes == [(6, 8), (8, 10), (10, 13)]
    assert torch.allclose(scores, torch.full_like(scores, 3.0))


def test_resize_keep_ratio_and_back():
    model = WindowPosition()
    scores = infer(model, inputs_of(4, 6), 2, {"mode": "whole", "resize": [12, 12]})
    assert model.sizes == [(8, 12)] and scores.shape == (1, 2, 4, 6)
    model.sizes.clear()
    infer(model, inputs_of(4, 6), 2, {"mode": "whole", "resize": [5, 5], "keep_ratio": False})
    assert model.sizes == [(5, 5)]


def test_contract_violations_are_clear():
    with pytest.raises(ProtocolError, match="unknown protocol key.*strid"):
        resolve({"mode": "slide", "crop": [4, 4], "strid": 2})
    with pytest.raises(ProtocolError, match="needs stride"):
        resolve({"mode": "slide", "crop": [4, 4]})
    with pytest.raises(ProtocolError, match="at input size"):
        infer(lambda i: torch.zeros(1, 2, 2, 2), inputs_of(4, 4), 2, {"mode": "whole"})
    with pytest.raises(ProtocolError, match="3 channels for 2 classes"):
        infer(lambda i: torch.zeros(1, 3, 4, 4), inputs_of(4, 4), 2, {"mode": "whole"})


def test_describe_names():
    sigma = {"mode": "slide", "crop": [480, 640], "stride_rate": 2 / 3, "windows": "sigma"}
    assert describe({"mode": "whole"}) == "whole"
    assert describe(sigma) == "slide 480×640/320×427"
    assert describe(dict(sigma, scales=[0.75, 1.0, 1.25], flip=True)) == \
        "ms(0.75,1,1.25)+flip slide 480×640/320×427"
    assert describe({"mode": "slide", "crop": [256, 256], "stride": [32, 32], "windows": "ssrs"}) \
        == "slide 256×256/32 (ssrs)"
    assert describe({"mode": "whole", "resize": [512, 512]}) == "resize≤512×512 whole"
    assert describe({"mode": "whole", "resize": [480, 480], "keep_ratio": False}) == \
        "resize 480×480 whole"
    assert describe({"mode": "whole", "resize": [480, 480], "keep_ratio": False,
                     "resize_back": "nearest"}) == "resize 480×480 (nearest back) whole"
    assert describe({"mode": "slide", "crop": [512, 512], "stride": [341, 341],
                     "windows": "mmseg", "score": "softmax"}) == \
        "slide 512×512/341 (mmseg) [softmax mean]"


def test_every_dataset_protocol_resolves():
    import bench.data as data
    for name in data.list_datasets():
        protocol = data.get_dataset_class(name).info.protocol
        assert describe(protocol)


def test_resize_back_nearest_copies_the_nearest_score():
    """ReMamber's evaluation: logits at the working size, resized to the label with nearest.
    A 2x2 score map brought back to 4x4 repeats each value over a 2x2 block (by hand)."""
    scores = torch.tensor([[1.0, -2.0], [3.0, -4.0]]).view(1, 1, 2, 2)
    inputs = {"rgb": torch.zeros(1, 3, 4, 4)}
    protocol = {"mode": "whole", "resize": [2, 2], "keep_ratio": False,
                "resize_back": "nearest"}
    out = infer(lambda i: scores.clone(), inputs, 2, protocol)
    want = scores.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    bilinear = infer(lambda i: scores.clone(), inputs, 2, dict(protocol, resize_back="bilinear"))
    assert not torch.equal(bilinear, want)
    with pytest.raises(ProtocolError, match="resize_back must be bilinear or nearest"):
        infer(lambda i: scores, inputs, 2, dict(protocol, resize_back="bicubic"))


def test_referring_datasets_resize_back_with_nearest_as_remamber():
    import bench.data as data
    protocol = data.get_dataset_class("refcoco").info.protocol
    assert protocol["resize_back"] == "nearest"
