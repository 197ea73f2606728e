"""Mamba-Diffusion: the diffusion pieces against hand-computed values (cosine logSNR, DDIM time
pairs and update, sine encoding, deformable sampling), the FPN neck, the encoder's feedback
wiring, the paper configuration's parameters, and training / deterministic sampling at CPU size."""
import math
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

import models
from models import count_params, losses
from models.heads.diffusion import DiffusionMaskHead, alpha_cosine_log_snr, log_snr_to_alpha_sigma
from models.heads.diffusion_attn import (
    MultiScaleDeformableAttention,
    deformable_attention_sample,
    sine_positional_encoding,
)
from models.heads.fpn_neck import FPN
from models.zoo.mamba_diffusion import MAMBA_DIFFUSION_SIZES, MambaDiffusionBackbone
from tests.helpers.models import separable_batch


@contextmanager
def on_meta():
    """Build on the meta device; torch.linspace stays on the CPU because the builders read
    drop-path rates with ``.tolist()``."""
    real = torch.linspace

    def cpu_linspace(*args, **kwargs):
        kwargs.setdefault("device", "cpu")
        return real(*args, **kwargs)

    with mock.patch.object(torch, "linspace", cpu_linspace), torch.device("meta"):
        yield


# ----------------------------------------------------------------------------- diffusion maths


def test_cosine_log_snr_and_alpha_sigma_by_hand():
    for t in (0.0, 0.25, 0.5, 0.9):
        angle = (t + 2e-4) / (1 + 2.5e-4) * math.pi / 2
        expected = -math.log(max(math.cos(angle) ** -2 - 1, 1e-5))
        got = alpha_cosine_log_snr(torch.tensor([t], dtype=torch.float64)).item()
        assert got == pytest.approx(expected, rel=1e-12)
    log_snr = torch.tensor([-3.0, 0.0, 4.0], dtype=torch.float64)
    alpha, sigma = log_snr_to_alpha_sigma(log_snr)
    torch.testing.assert_close(alpha ** 2 + sigma ** 2, torch.ones(3, dtype=torch.float64))
    assert alpha[1].item() == pytest.approx(math.sqrt(0.5))
    # t = 0 clamps at logSNR = -log(1e-5)
    assert alpha_cosine_log_snr(torch.zeros(1)).item() == pytest.approx(-math.log(1e-5), rel=1e-5)


def test_ddim_time_pairs_and_update():
    head = DiffusionMaskHead([8], 3, channels=8, num_groups=2, num_layers=1, num_heads=2,
                             ffn_channels=16).double()
    pairs = [t for pair in head.sampling_times() for t in pair]
    assert pairs == pytest.approx([1.0, 1 / 3, 2 / 3, 0.0, 1 / 3, 0.0])
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    fixed = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    fixed[:, 2] = 1.0                                      # always predicts class 2
    seen = []

    def denoise(x_, z, log_snr):
        seen.append((z.clone(), log_snr.clone()))
        return fixed

    with mock.patch.object(head, "denoise", denoise):
        logits = head.sample(x, seed=7)
    assert logits is fixed and len(seen) == 3
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z0 = (torch.sigmoid(head.embedding_table.weight[2].double()) * 2 - 1) * 0.01
    z0 = z0.view(1, 8, 1, 1).expand_as(x)
    for step, (t_now, t_next) in enumerate(head.sampling_times()):
        torch.testing.assert_close(seen[step][0], z)
        log_snr = alpha_cosine_log_snr(torch.tensor([t_now], dtype=torch.float64))
        torch.testing.assert_close(seen[step][1], log_snr)
        a, s = log_snr_to_alpha_sigma(log_snr)
        a2, s2 = log_snr_to_alpha_sigma(alpha_cosine_log_snr(
            torch.tensor([t_next], dtype=torch.float64)))
        z = a2 * z0 + s2 * (z - a * z0) / s


def test_training_target_is_the_bit_embedding_with_ignore_as_extra_class():
    head = DiffusionMaskHead([8], 3, channels=8, num_groups=2, num_layers=1, num_heads=2,
                             ffn_channels=16)
    labels = torch.tensor([[[0, 3]]])                      # 3 = K: the ignore row
    z0 = head.encode_labels(labels)
    expected = (torch.sigmoid(head.embedding_table.weight[[0, 3]]) * 2 - 1) * 0.01
    torch.testing.assert_close(z0[0, :, 0].T, expected)
    assert z0.abs().max() <= 0.01
    target = torch.full((1, 8, 8), 255)
    target[0, :4] = 1
    out = head.loss(torch.randn(1, 8, 2, 2), target)
    assert torch.isfinite(out["loss_decode"]) and out["logits"].shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="labels must lie"):
        head.loss(torch.randn(1, 8, 2, 2), torch.full((1, 8, 8), 7))


def test_sine_positional_encoding_by_hand():
    pos = sine_positional_encoding(1, 2, 3, num_feats=4)
    assert pos.shape == (1, 8, 2, 3)
    i, j = 1, 2                                            # row 1 of 2, column 2 of 3
    y = (i + 1 - 0.5) / (2 + 1e-6) * 2 * math.pi
    x = (j + 1 - 0.5) / (3 + 1e-6) * 2 * math.pi
    dim_t = [10000 ** (2 * (k // 2) / 4) for k in range(4)]
    expected = [math.sin(y / dim_t[0]), math.cos(y / dim_t[1]), math.sin(y / dim_t[2]),
                math.cos(y / dim_t[3]), math.sin(x / dim_t[0]), math.cos(x / dim_t[1]),
                math.sin(x / dim_t[2]), math.cos(x / dim_t[3])]
    torch.testing.assert_close(pos[0, :, i, j], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_deformable_sampling_is_bilinear_with_zero_padding():
    value_map = torch.arange(12.0).view(3, 4)              # H 3, W 4, one head, one channel
    value = value_map.reshape(1, 12, 1, 1)
    centre = torch.tensor([(1 + 0.5) / 4, (2 + 0.5) / 3])    # pixel (row 2, col 1)
    between = torch.tensor([(2.0) / 4, (0.5) / 3])           # between cols 1 and 2 of row 0
    outside = torch.tensor([-1.0, -1.0])
    locs = torch.stack([centre, between, outside]).view(1, 3, 1, 1, 1, 2)
    weights = torch.ones(1, 3, 1, 1, 1)
    out = deformable_attention_sample(value, [(3, 4)], locs, weights)
    torch.testing.assert_close(out.view(3), torch.tensor([9.0, 1.5, 0.0]))


def test_deformable_attention_initial_offsets_point_along_head_directions():
    attn = MultiScaleDeformableAttention(16, num_heads=4, num_points=2)
    bias = attn.sampling_offsets.bias.view(4, 1, 2, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    torch.testing.assert_close(bias[1, 0], torch.tensor([[0.0, 1.0], [0.0, 2.0]]), atol=1e-6,
                               rtol=0)
    assert attn.attention_weights.weight.abs().sum() == 0


def test_fpn_top_down_is_nearest_and_sums_into_the_finer_level():
    fpn = FPN([2, 3], out_channels=4, num_groups=2)
    f1, f2 = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    lat1, lat2 = fpn.lateral_convs[0](f1), fpn.lateral_convs[1](f2)
    expected = fpn.fpn_convs[0](lat1 + lat2.repeat_interleave(2, 2).repeat_interleave(2, 3))
    torch.testing.assert_close(fpn([f1, f2])[0], expected)


# ----------------------------------------------------------------------------- paper size

# Regression pins: exact parameter counts this code produced at commit c5e703d, not an
# independent reference (upstream publishes none; the 410.3M above is upstream's, rounded).
REGRESSION_PIN_BACKBONE_PARAMS = 410_319_296
REGRESSION_PIN_HEAD_PARAMS = 11_566_671
REGRESSION_PIN_AUX_HEAD_PARAMS = 592_135


def test_paper_configuration_backbone_parameters():
    """Backbone ~410.3M (two v2-B streams + DCF + DS-S4 + the stage norms; the streams, 87.45M
    each, exclude their patch embeddings): figures computed from upstream's classes
    (docs/models.md, "Mamba-Diffusion"), checked to 1% / 0.1%. The exact integers are regression
    pins (REGRESSION_PIN_*)."""
    with on_meta():
        model = models.create_model("mamba_diffusion", size="base", num_classes=7)
    assert model.modalities == ("rgb", "x") and model.encoder_a.in_chans == 4
    backbone = model.backbone_parameters()
    assert backbone == REGRESSION_PIN_BACKBONE_PARAMS
    published = models.get_published("Mamba-Diffusion backbone")
    assert abs(backbone / 1e6 / published.params_m - 1) < 0.01
    blocks_a = count_params(model.encoder_a) - count_params(model.encoder_a.patch_embed)
    assert abs(blocks_a / 1e6 / published.extra["params_parts_m"]["stream_a_blocks"] - 1) < 1e-3
    assert count_params(model.encoder_b) - count_params(model.encoder_b.patch_embed) == blocks_a
    assert not hasattr(model.encoder_a, "outnorm0")           # the fusion owns the stage norms
    assert count_params(model.head) == REGRESSION_PIN_HEAD_PARAMS
    assert count_params(model.aux_head) == REGRESSION_PIN_AUX_HEAD_PARAMS
    assert [len(stage) for stage in model.fusion.blocks] == [4, 4, 6, 4]
    assert count_params(MambaDiffusionBackbone(model)) == backbone          # the zoo report's row


# ----------------------------------------------------------------------------- CPU size


@pytest.fixture()
def nano():
    torch.manual_seed(0)
    return models.create_model("mamba_diffusion", size="nano", num_classes=4)


def test_encoder_feeds_the_fusion_back_into_both_streams(nano):
    inputs, _ = separable_batch(1, 16, 4)
    nano.eval()
    with torch.no_grad():
        a, b = nano.encoder_a.embed(inputs["rgb"]), nano.encoder_b.embed(inputs["x"])
        expected = []
        for i in range(4):
            oa, ob = nano.encoder_a.run_stage(i, a), nano.encoder_b.run_stage(i, b)
            fa, fb = oa, ob
            for block in nano.fusion.blocks[i]:
                fa, fb = block(fa, fb)
            oa, ob = oa + fa, ob + fb
            expected.append(nano.fusion.outnorm_a[i](oa) + nano.fusion.outnorm_b[i](ob))
            a, b = nano.encoder_a.downsample(i, oa), nano.encoder_b.downsample(i, ob)
        for got, want in zip(nano.extract(inputs), expected):
            torch.testing.assert_close(got, want.permute(0, 3, 1, 2))


def test_nano_trains_and_samples_deterministically(nano):
    inputs, target = separable_batch(2, 16, 4)
    out = nano.forward_train(inputs, target)
    assert set(out) == {"loss", "loss_decode", "loss_aux"}
    torch.testing.assert_close(out["loss"], out["loss_decode"] + 0.4 * out["loss_aux"])
    out["loss"].backward()
    nano.eval()
    with torch.no_grad():
        first, second = nano(inputs), nano(inputs)
        other_seed = nano.head.sample(nano.head.neck(nano.extract(inputs)), seed=1)
    assert first.shape == (2, 4, 16, 16)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert other_seed.shape == (2, 4, 4, 4)


@pytest.mark.parametrize("fusion", ["add", "rgb_only"])
def test_nano_with_other_fusions(fusion):
    model = models.create_model("mamba_diffusion", size="nano", fusion=fusion, num_classes=4)
    assert not model.feeds_back and hasattr(model.encoder_a, "outnorm0")
    inputs, target = separable_batch(2, 16, 4)
    model.forward_train(inputs, target)["loss"].backward()
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (2, 4, 16, 16)


def test_cpu_sizes_are_registered_and_small():
    assert models.get_family("mamba_diffusion").default_fusion == "dcf+ds_s4"
    assert set(models.list_sizes("mamba_diffusion")) == set(MAMBA_DIFFUSION_SIZES)
    micro = models.create_model("mamba_diffusion", size="micro", num_classes=4)
    nano = models.create_model("mamba_diffusion", size="nano", num_classes=4)
    assert count_params(nano) < count_params(micro) < 12e6              # vs 422M at the paper size


@pytest.mark.slow
def test_nano_loss_decreases_over_50_iterations(nano):
    inputs, target = separable_batch(2, 16, 4)
    opt = torch.optim.Adam(nano.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = nano.forward_train(inputs, target)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    nano.eval()
    with torch.no_grad():
        accuracy = (nano(inputs).argmax(1) == target).float().mean()
    assert accuracy > 0.5


def test_ce_averages_over_all_pixels_as_mmseg_avg_non_ignore_false():
    """mmseg's CrossEntropyLoss (avg_non_ignore=False): per-pixel CE, ignored pixels 0, mean
    over all pixels. Case by hand: 7 classes, all logits equal, so every valid pixel's CE is
    ln 7; 8 of 64 pixels (12.5%) ignored: upstream 0.875 ln 7, the valid-pixel mean ln 7 (the
    ratio of the measured 1.791072 / 2.046939 = 0.875)."""
    logits = torch.zeros(1, 7, 8, 8)
    target = torch.arange(64).remainder(7).view(1, 8, 8)
    target[0, 0] = 255
    assert (target == 255).float().mean().item() == 0.125
    upstream = losses.cross_entropy(logits, target, avg_non_ignore=False)
    valid = losses.cross_entropy(logits, target, avg_non_ignore=True)
    assert upstream.item() == pytest.approx(0.875 * math.log(7), rel=1e-6)
    assert valid.item() == pytest.approx(math.log(7), rel=1e-6)
    # random logits: F.cross_entropy(reduction="sum") / number of pixels
    logits = torch.randn(2, 7, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 7, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    target[:, ::2, ::4] = 255
    want = F.cross_entropy(logits, target, ignore_index=255, reduction="sum") / target.numel()
    torch.testing.assert_close(losses.cross_entropy(logits, target, avg_non_ignore=False), want)


def test_decode_and_aux_losses_are_upstreams_by_default(nano):
    """Both losses of the model: sum over pixels / all pixels (ignored ones included)."""
    assert nano.avg_non_ignore is False and nano.head.avg_non_ignore is False
    nano.eval()  # the auxiliary head's dropout: the same logits twice
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, nano.head.channels, 4, 4, generator=g)
    target = torch.randint(0, 4, (2, 16, 16), generator=g)
    target[:, :2] = 255  # 12.5% ignored
    out = nano.head.loss(x, target)
    want = F.cross_entropy(out["logits"], target, ignore_index=255, reduction="sum") / 512
    torch.testing.assert_close(out["loss_decode"], want)
    aux_logits = F.interpolate(nano.aux_head([x]), size=(16, 16), mode="bilinear",
                               align_corners=False)
    want = F.cross_entropy(aux_logits, target, ignore_index=255, reduction="sum") / 512
    torch.testing.assert_close(nano._aux_loss(x, target), want)
    variant = models.create_model("mamba_diffusion", size="nano", num_classes=4,
                                  avg_non_ignore=True)
    assert variant.head.avg_non_ignore is True and variant.avg_non_ignore is True
