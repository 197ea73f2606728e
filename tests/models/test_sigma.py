"""Sigma: CroMB / ConMB / the decoder's pixel shuffle against direct references, the siamese
model at CPU size, the official checkpoints (keys, shapes, strict loading), parameter counts,
Sigma's optimiser quirk, the fusions on other encoders, the suites' evaluation protocol and
(slow) the published FLOPs."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import kernels
import models
from kernels.selective_scan import scan_reference
from models.fusion.sigma import ConMBMixer, CroMBMixer
from models.heads.sigma_decoder import MambaDecoder, _pixel_shuffle_last
from models.zoo.sigma import load_backbone

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "fixtures" / "state_dicts" / "official_state_dicts.json"
#: the sums of the official checkpoints' tensor shapes (official_state_dicts.json), not this
#: code's output; the paper's figures are registered with the Sigma builders
OFFICIAL_PARAMS = {"tiny": 48_287_360, "small": 69_811_328, "base": 121_414_820}


@pytest.fixture(scope="module")
def official():
    return json.loads(SPEC.read_text())  # upstream key schemas, committed test data


@pytest.fixture(scope="module")
def sigma_tiny():
    torch.manual_seed(0)
    return models.create_model("sigma", size="tiny", fusion="default", num_classes=9)


# ----------------------------------------------------------------------------- modules


def test_cromb_matches_two_direct_scans_with_C_swapped():
    m = CroMBMixer(8)
    x_rgb, x_e = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    ssm = m.CMA_ssm
    r, n = ssm.dt_rank, ssm.d_state

    def tokens(proj, x):   # in_proj -> shared dwconv -> SiLU -> raster order (B, D, L)
        return F.silu(m.conv2d(proj(x).permute(0, 3, 1, 2))).flatten(2)

    u_rgb, u_e = tokens(m.in_proj, x_rgb), tokens(m.in_proj_modalx, x_e)
    dbl_rgb = torch.einsum("bdl,cd->bcl", u_rgb, ssm.x_proj_1.weight)
    dbl_e = torch.einsum("bdl,cd->bcl", u_e, ssm.x_proj_2.weight)
    outs = []
    for u, dbl, other, dt_proj, A_log, D in (
            (u_rgb, dbl_rgb, dbl_e, ssm.dt_proj_1, ssm.A_log_1, ssm.D_1),
            (u_e, dbl_e, dbl_rgb, ssm.dt_proj_2, ssm.A_log_2, ssm.D_2)):
        dt = torch.einsum("brl,dr->bdl", dbl[:, :r], dt_proj.weight)
        y, _ = scan_reference(u, dt, -torch.exp(A_log), dbl[:, r:r + n], other[:, r + n:], D,
                              delta_bias=dt_proj.bias, delta_softplus=True)
        outs.append(y.transpose(1, 2).reshape(2, 3, 4, -1))
    want_rgb = m.out_proj_rgb(ssm.out_norm_1(outs[0]))
    want_e = m.out_proj_e(ssm.out_norm_2(outs[1]))
    with kernels.scan_backend("ref"), torch.no_grad():
        got_rgb, got_e = m(x_rgb, x_e)
    torch.testing.assert_close(got_rgb, want_rgb.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_e, want_e.detach(), rtol=1e-5, atol=1e-5)


def test_conmb_matches_direct_concat_scan():
    m = ConMBMixer(8)
    b, h, w = 2, 3, 4
    x_rgb, x_e = torch.randn(b, h, w, 8), torch.randn(b, h, w, 8)
    p_rgb = m.in_proj(x_rgb).permute(0, 3, 1, 2)
    p_e = m.in_proj_modalx(x_e).permute(0, 3, 1, 2)
    seq = torch.cat([F.silu(m.conv2d(p_rgb)).flatten(2),
                     F.silu(m.conv2d_modalx(p_e)).flatten(2)], dim=2)   # (B, D, 2HW): [rgb ; x]
    d, r, n = m.d_inner, m.dt_rank, m.d_state
    y = 0
    for k, s in enumerate([seq, seq.flip(-1)]):
        dbl = torch.einsum("bdl,cd->bcl", s, m.x_proj_weight[k])
        dt = torch.einsum("brl,dr->bdl", dbl[:, :r], m.dt_projs_weight[k])
        out, _ = scan_reference(s, dt, -torch.exp(m.A_logs[k * d:(k + 1) * d]),
                                dbl[:, r:r + n], dbl[:, r + n:], m.Ds[k * d:(k + 1) * d],
                                delta_bias=m.dt_projs_bias[k], delta_softplus=True)
        y = y + (out if k == 0 else out.flip(-1))
    y_rgb = m.out_norm1(y[:, :, :h * w].transpose(1, 2).reshape(b, h, w, d))
    y_e = m.out_norm2(y[:, :, h * w:].transpose(1, 2).reshape(b, h, w, d))
    g_rgb = m.fc1(p_rgb.mean((2, 3)))[:, None, None]      # SE from the projections, pre-conv
    g_e = m.fc2(p_e.mean((2, 3)))[:, None, None]
    want = m.out_proj(torch.cat([y_rgb * g_e, y_e * g_rgb], dim=-1))
    with kernels.scan_backend("ref"), torch.no_grad():
        got = m(x_rgb, x_e)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_patch_expand_channel_order_is_upstreams():
    x = torch.randn(2, 3, 5, 4 * 6)
    want = rearrange(x, "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=2, p2=2)
    assert torch.equal(_pixel_shuffle_last(x, 2), want)


def test_decoder_any_channels_and_odd_sizes():
    head = MambaDecoder([8, 12, 20, 24], num_classes=5, depth=1)
    feats = [torch.randn(1, c, s, s + 1) for c, s in zip([8, 12, 20, 24], [23, 12, 6, 3])]
    assert head(feats).shape == (1, 5, 92, 96)


# ----------------------------------------------------------------------------- the model


def test_sigma_nano_trains_siamese():
    model = models.create_model("sigma_nano", num_classes=9)
    assert not hasattr(model, "encoder_b") and model.shared_encoder
    assert type(model.fusion).__name__ == "SigmaFusion"
    # 40 x 56 is no multiple of 32: the decoder resizes before its skip additions
    inputs = {"rgb": torch.randn(2, 3, 40, 56), "x": torch.randn(2, 1, 40, 56)}
    target = torch.randint(0, 9, (2, 40, 56))
    out = model.forward_train(inputs, target)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (2, 9, 40, 56)


def test_registry_and_other_fusions():
    fam = models.get_family("sigma")
    assert fam.default_fusion == "sigma"
    assert set(fam.sizes) == {"tiny", "small", "base", "micro", "nano"}
    x = {"rgb": torch.randn(1, 3, 32, 32), "x": torch.randn(1, 1, 32, 32)}
    for kwargs in ({"fusion": "add"}, {"fusion": "conmb", "shared_encoder": False}):
        model = models.create_model("sigma_nano", num_classes=3, **kwargs).eval()
        with torch.no_grad():
            assert model(x).shape == (1, 3, 32, 32)
    assert hasattr(model, "encoder_b") and model.encoder_b.in_chans == 1


@pytest.mark.parametrize("fusion", ["sigma", "cromb", "conmb"])
def test_sigma_fusions_on_the_cnn_encoder(fusion):
    model = models.create_model("dualcnn_nano", fusion=fusion, num_classes=4).eval()
    x = {"rgb": torch.randn(1, 3, 64, 64), "x": torch.randn(1, 1, 64, 64)}
    assert model(x).shape == (1, 4, 64, 64)
    odd = models.create_fusion(fusion, [6, 10])
    a, b = torch.randn(1, 6, 5, 7), torch.randn(1, 6, 5, 7)
    assert odd(0, a, b).shape == a.shape


# ----------------------------------------------------------------------------- official


def test_sigma_tiny_keys_params_and_strict_load(official, sigma_tiny, tmp_path):
    ours = {k: tuple(v.shape) for k, v in sigma_tiny.state_dict().items()}
    theirs = {k: tuple(v) for k, v in
              sigma_tiny.checkpoint_filter_fn(official["sigma_tiny"]).items()}
    assert ours == theirs
    published, exact = models.get_family("sigma").published["tiny"], OFFICIAL_PARAMS["tiny"]
    assert models.count_params(sigma_tiny) == exact
    assert abs(exact / 1e6 / published.params_m - 1) < 1e-3
    # a checkpoint as upstream's training saves it (DDP "module." prefix, under "model")
    gen = torch.Generator().manual_seed(2)
    state = {k: torch.randn(*s, generator=gen) for k, s in official["sigma_tiny"].items()}
    path = tmp_path / "sigma_tiny_mfnet.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 500}, path)
    report = models.load_pretrained(sigma_tiny, path)
    assert report.ok and len(report.loaded) == len(state) == 668
    assert torch.equal(sigma_tiny.fusion.cross_mamba[2].op.CMA_ssm.A_log_2,
                       state["backbone.cross_mamba.2.op.CMA_ssm.A_log_2"])
    assert torch.equal(sigma_tiny.head.layers_up[3].blocks[3].scale2,
                       state["decode_head.layers_up.3.blocks.3.scale2"])


def test_vmamba_classification_checkpoint_into_sigma_encoder(official, sigma_tiny, tmp_path):
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(*s, generator=gen) for k, s in official["vmamba_v0_tiny"].items()}
    path = tmp_path / "vssmtiny_dp01_ckpt_epoch_292.pth"
    torch.save({"model": state}, path)
    outnorm = sigma_tiny.encoder_a.outnorm0.weight.detach().clone()
    report = load_backbone(sigma_tiny, path)
    assert len(report.loaded) == 208 and not report.missing and not report.mismatched
    assert sorted(report.unexpected) == ["classifier.head.bias", "classifier.head.weight",
                                         "classifier.norm.bias", "classifier.norm.weight"]
    assert torch.equal(sigma_tiny.encoder_a.layers[2].blocks[5].op.x_proj_weight,
                       state["layers.2.blocks.5.op.x_proj_weight"])
    assert torch.equal(sigma_tiny.encoder_a.outnorm0.weight, outnorm)


def test_upstream_param_groups_leave_raw_ssm_parameters_out(sigma_tiny):
    """Sigma's group_weight: 195 raw tensors, 6.41M of 48.29M parameters, never train."""
    total = models.count_params(sigma_tiny)
    up = models.param_groups(sigma_tiny, 0.01, "upstream")
    in_opt = {id(p) for g in up for p in g["params"]}
    left_out = [p for p in sigma_tiny.parameters() if id(p) not in in_opt]
    assert len(left_out) == 195
    assert sum(p.numel() for p in left_out) / 1e6 == pytest.approx(6.41, abs=0.005)
    every = models.param_groups(sigma_tiny, 0.01, "all")
    assert sum(p.numel() for g in every for p in g["params"]) == total
    decayed = {id(p) for p in up[0]["params"]}
    assert up[0]["weight_decay"] == 0.01 and id(sigma_tiny.head.output.weight) in decayed
    assert id(sigma_tiny.encoder_a.patch_embed[0].bias) not in decayed


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "base"])
def test_sigma_small_base_keys_and_params(official, size):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = models.create_model("sigma", size=size, num_classes=9)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v) for k, v in model.checkpoint_filter_fn(official[f"sigma_{size}"]).items()}
    assert ours == theirs
    published, exact = models.get_family("sigma").published[size], OFFICIAL_PARAMS[size]
    assert models.count_params(model) == exact
    assert abs(exact / 1e6 / published.params_m - 1) < 1e-3


# ----------------------------------------------------------------------------- recipe, FLOPs


@pytest.mark.parametrize("stem", ["mfnet", "pst900", "nyudv2", "sunrgbd"])
def test_sigma_suites_use_the_upstream_recipe_and_sliding_window(stem):
    from bench.config.suite import load_suite

    cells = load_suite(ROOT / "suites" / f"{stem}.yaml", check_names=False).cells()  # no data here
    assert cells and all(c["model"] == "sigma" and c["fusion"] == "sigma" for c in cells)
    for c in cells:
        assert c["train"]["param_groups"] == "upstream"
        assert (c["train"]["lr"], c["train"]["weight_decay"]) == (6e-5, 0.01)
        proto = c["eval"]["protocol"]
        assert proto["mode"] == "slide" and proto["windows"] == "sigma"
        assert proto["stride_rate"] == pytest.approx(2 / 3)
        assert proto.get("flip", False) == (stem in ("nyudv2", "sunrgbd"))


@pytest.mark.slow
def test_sigma_tiny_flops(sigma_tiny):
    """Two 3x480x640 inputs: 89.49G without the scan (Sigma's flops()), ~118.4G with it; both
    computed from upstream's classes, the first matching Sigma's FLOPs plot (docs/models.md)."""
    from bench.profiling.flops import flop_analysis

    inputs = {"rgb": torch.randn(1, 3, 480, 640), "x": torch.randn(1, 3, 480, 640)}
    result = flop_analysis(sigma_tiny.eval(), inputs, depth=1)
    assert result["gmacs"]["published"] == pytest.approx(89.49, rel=0.01)
    assert result["gmacs"]["full"] == pytest.approx(118.4, rel=0.01)
    assert not result["unsupported_ops"]
