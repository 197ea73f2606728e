"""MS2MNet: ResNet streams and the DSM stem initialisation, WASE / VFE / ASAF as fusions of any
encoder, DFE, the HFP decoder, the staged loss and its curriculum, and training at CPU size."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

import models
from models import count_params
from models.backbones.resnet import ResNetEncoder
from models.encdec import FusionSegmenter
from models.fusion.wase import MSSM, VFE, WASE
from models.losses import boundary_ce_loss, cross_entropy, focal_loss, lovasz_softmax
from models.zoo.ms2mnet import DSMGradientEnhancement, loss_weights_for_epoch
from tests.helpers.models import separable_batch


class TinyEncoder(nn.Module):
    """A 4-stage strided-conv encoder: any encoder with ``out_channels`` must do."""

    def __init__(self, in_chans=3, widths=(8, 16, 24, 32)):
        super().__init__()
        self.in_chans, self.out_channels = in_chans, list(widths)
        chans = [in_chans, *widths]
        self.stages = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1)
                                    for i in range(4))

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


# ----------------------------------------------------------------------------- encoder


def test_resnet_matches_torchvision_resnet50():
    """Four layers + a 2048 -> 1000 fc hold torchvision resnet50's 25,557,032 parameters under
    its names; the encoder proper stops after layer3 (64/256/512/1024 at strides 2..16)."""
    full = ResNetEncoder(layers=(3, 4, 6, 3))
    assert count_params(full) + 2048 * 1000 + 1000 == 25_557_032
    keys = full.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer3.5.conv3.weight",
                "layer4.2.bn3.bias"):
        assert key in keys, key
    enc = models.ENCODERS.create("resnet50_l3", in_chans=3)
    assert enc.out_channels == [64, 256, 512, 1024] and "hfp" in models.HEADS.names()
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (256, 16, 16), (512, 8, 8),
                                                   (1024, 4, 4)]


def test_dsm_stem_is_the_mean_of_the_pretrained_rgb_kernel(tmp_path):
    """A torchvision-format checkpoint (layer4 and fc included) of the nano-width ResNet loads
    into both streams; the DSM stem gets the channel mean of the RGB kernel."""
    torch.manual_seed(0)
    imagenet = ResNetEncoder(size="nano", layers=(1, 1, 1, 1)).state_dict()
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.randn(10, 256), torch.zeros(10)
    torch.save(imagenet, tmp_path / "resnet.pth")
    model = models.create_model("ms2mnet", size="nano", pretrained_backbone=tmp_path / "resnet.pth")
    torch.testing.assert_close(model.encoder_b.conv1.weight,
                               imagenet["conv1.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(model.encoder_a.conv1.weight, imagenet["conv1.weight"])
    torch.testing.assert_close(model.encoder_b.layer3[0].conv3.weight,
                               imagenet["layer3.0.conv3.weight"])


# ----------------------------------------------------------------------------- fusions


@pytest.mark.parametrize("fusion", ["wase", "wase+vfe", "asaf"])
def test_fusions_work_with_any_encoder(fusion):
    from models.heads.upernet import FCNHead
    seg = FusionSegmenter(lambda c: TinyEncoder(c), lambda chs: FCNHead(chs, 4, in_index=0,
                                                                        channels=8), fusion, 4)
    assert seg.fusion.kind == "stage" and len(seg.fusion.channels) == 4
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "x": torch.randn(2, 1, 32, 32)}
    logits = seg(inputs)
    assert logits.shape == (2, 4, 32, 32)
    logits.sum().backward()
    assert seg.encoder_a.stages[0].weight.grad.abs().sum() > 0
    assert seg.encoder_b.stages[0].weight.grad.abs().sum() > 0


def test_wase_is_the_normalised_gated_sum():
    wase = WASE(32)
    with torch.no_grad():
        wase.weight_a.fill_(1.0)
        wase.weight_b.fill_(-3.0)                          # |w| is used
    a, b = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    expected = 0.25 * wase.gate_a(a) * a + 0.75 * wase.gate_b(b) * b
    torch.testing.assert_close(wase(a, b), expected)
    assert wase.gate_a[1].out_channels == 2                  # C / 16


def test_mssm_follows_the_hsmssd_equations():
    torch.manual_seed(0)
    mssm = MSSM(dim=8, state_dim=3)
    x = torch.randn(2, 8, 3, 5)
    y, h = mssm(x)
    tokens = x.flatten(2)
    p = mssm.BCdt_proj.weight[:, :, 0] @ tokens
    p = p.view(2, 9, 3, 5)
    g = torch.sigmoid(mssm.dw_gate)
    p = (g * F.conv2d(p, mssm.dw3.weight, padding=1, groups=9)
         + (1 - g) * F.conv2d(p, mssm.dw5.weight, padding=2, groups=9)).flatten(2)
    B, C, dt = p[:, :3], p[:, 3:6], p[:, 6:]
    A = torch.softmax(dt + mssm.A[None, :, None], dim=-1)
    state = mssm.state_attn(tokens @ (A * B).transpose(1, 2))
    hz = mssm.hz_proj.weight[:, :, 0] @ state
    state = mssm.out_proj.weight[:, :, 0] @ (hz[:, :8] * F.silu(hz[:, 8:]) + mssm.D * hz[:, :8])
    torch.testing.assert_close(h, state)
    torch.testing.assert_close(y, (state @ C).view(2, 8, 3, 5))
    assert 1 <= mssm.A.min() and mssm.A.max() <= 16


def test_vfe_returns_a_residual_map_and_the_state():
    vfe = VFE(16, state_dim=4)
    x = torch.randn(2, 16, 6, 6)
    out, h = vfe(x)
    assert out.shape == x.shape and h.shape == (2, 16, 4)


def test_dfe_starts_as_identity_and_sees_sobel_gradients():
    dfe = DSMGradientEnhancement()
    ramp = torch.arange(6.0).repeat(6, 1)[None, None]      # slope 1 along x
    torch.testing.assert_close(dfe(ramp), ramp)
    grads = dfe.gradients(ramp)
    assert torch.all(grads[0, 0, :, 1:-1] == 8) and torch.all(grads[0, 1] == 0)


# ----------------------------------------------------------------------------- paper size


@pytest.fixture(scope="module")
def ms2mnet_base():
    torch.manual_seed(0)
    return models.create_model("ms2mnet", size="base")


REGRESSION_PIN_TRAINING_PARAMS = 52_846_024
REGRESSION_PIN_INFERENCE_PARAMS = 51_662_268


def test_ms2mnet_base_builds_at_paper_configuration(ms2mnet_base):
    """No published figure (upstream counts with thop, prints none), so the counts are regression
    pins: values this code produced at commit c5e703d (documented in models/zoo/ms2mnet.py:
    52.85M in training, 51.66M without the two auxiliary heads)."""
    m = ms2mnet_base
    assert m.encoder_a.out_channels == [64, 256, 512, 1024] and m.encoder_b.in_chans == 1
    assert count_params(m) == REGRESSION_PIN_TRAINING_PARAMS
    aux = count_params(m.head.aux_head3) + count_params(m.head.aux_head2)
    assert count_params(m) - aux == REGRESSION_PIN_INFERENCE_PARAMS
    assert [v.mixer.state_dim for v in m.fusion.vfe] == [16, 24, 28, 32]
    m.eval()
    with torch.no_grad():
        logits = m({"rgb": torch.randn(1, 3, 64, 64), "x": torch.rand(1, 1, 64, 64)})
    assert logits.shape == (1, 6, 64, 64)


@pytest.mark.slow
def test_ms2mnet_base_flops_at_256(ms2mnet_base):
    """fvcore MACs, RGB 1x3x256^2 + DSM 1x1x256^2; no selective scan, so both conventions
    agree: 36.81G (documented)."""

    class Inputs(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, rgb, dsm):
            return self.model({"rgb": rgb, "x": dsm})

    ms2mnet_base.eval()
    with torch.no_grad():
        fa = FlopCountAnalysis(Inputs(ms2mnet_base),
                               (torch.zeros(1, 3, 256, 256), torch.zeros(1, 1, 256, 256)))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        assert abs(fa.total() / 36.81e9 - 1) < 0.01


# ----------------------------------------------------------------------------- loss


def test_curriculum_weights_per_epoch():
    assert loss_weights_for_epoch(None, 0.6, 0.4) == (0.6, 0.0, 0.0)
    assert loss_weights_for_epoch(1, 0.6, 0.4) == (0.6, 0.0, 0.0)
    assert loss_weights_for_epoch(30, 0.6, 0.4) == (0.6, 0.0, 0.0)
    assert loss_weights_for_epoch(31, 0.6, 0.4) == pytest.approx((0.48, 0.4, 0.0))
    assert loss_weights_for_epoch(60, 0.7, 0.3) == pytest.approx((0.56, 0.3, 0.0))
    assert loss_weights_for_epoch(61, 0.7, 0.3) == pytest.approx((0.42, 0.3, 0.2))
    potsdam = models.create_model("ms2mnet", size="nano", loss_preset="potsdam")
    assert (potsdam.alpha_focal, potsdam.alpha_boundary, potsdam.aux_weights) == (0.7, 0.3,
                                                                                  (0.4, 0.2))


def test_staged_loss_combines_main_and_auxiliary_terms():
    model = models.create_model("ms2mnet", size="nano")          # Vaihingen weights
    inputs, target = separable_batch(2, 32, 6, seed=1)
    torch.manual_seed(0)
    out = model.forward_train(inputs, target, {"epoch": 61})
    main, aux = out["main"], (out["aux0"], out["aux1"])
    expected_main = out["ce"] + 0.36 * out["focal"] + 0.4 * out["boundary"] + 0.2 * out["lovasz"]
    torch.testing.assert_close(main, expected_main)
    torch.testing.assert_close(out["loss"], main + 0.3 * aux[0] + 0.2 * aux[1])
    # the auxiliary terms are 0.5 CE + 0.5 focal of the (resized) auxiliary logits
    torch.manual_seed(0)
    feats = model.extract(inputs)
    _, aux_logits = model.head.forward_with_aux(feats)
    logits = F.interpolate(aux_logits[0], size=(32, 32), mode="bilinear", align_corners=False)
    expected = 0.5 * cross_entropy(logits, target) + 0.5 * focal_loss(logits, target)
    torch.testing.assert_close(aux[0], expected, rtol=1e-4, atol=1e-5)
    first_phase = model.forward_train(inputs, target)
    assert "boundary" not in first_phase and "lovasz" not in first_phase


def test_main_loss_terms_are_the_generic_losses():
    logits, target = torch.randn(2, 6, 8, 8), torch.randint(0, 6, (2, 8, 8))
    assert boundary_ce_loss(logits, target) > cross_entropy(logits, target)
    assert 0 <= lovasz_softmax(logits.softmax(1), target) <= 1


# ----------------------------------------------------------------------------- CPU size


def test_ms2mnet_nano_loss_decreases_over_50_iterations():
    model = models.create_model("ms2mnet", size="nano")
    inputs, target = separable_batch(2, 32, 6, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = model.forward_train(inputs, target, {"epoch": 1})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], (losses[0], losses[-1])
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (2, 6, 32, 32)


def test_zoo_report_marks_the_reconstructed_modules_and_claims_no_check():
    """VFE, ASAF and DFE are used but never defined by the release: the zoo row names them and
    their share (32.7M of 51.7M parameters, the outside audit's figure), and with nothing
    published its "ok" cell says so instead of "yes"."""
    from bench.reporting import zoo_report as zr

    entry = models.get_published("MS2MNet")
    measured = zr.measure(entry, flops=False)
    parts = measured["reconstructed_params_m"]
    assert set(parts) == {"VFE", "ASAF", "DFE"}
    assert round(sum(parts.values()), 1) == 32.7 and round(measured["params_m"], 1) == 51.7
    text = zr.render([(entry, measured)])
    row = next(line for line in text.splitlines() if line.startswith("| MS2MNet"))
    assert row.startswith("| MS2MNet † |") and row.endswith("| — (nothing published) |")
    assert "yes" not in row
    assert f"- MS2MNet: {zr.reconstructed_note(entry, measured)}" in text
    assert "(63.4 %)" in text
