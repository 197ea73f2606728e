"""VMamba: SS2D against a direct per-direction reference, the encoder interface, the v0 / v2
configurations, the official classification checkpoints' keys and parameter counts, and FLOPs
in the three scan conventions."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kernels
import models
from kernels.selective_scan import scan_reference
from models.backbones.vmamba import SS2D, VMAMBA_CONFIGS, VMambaEncoder, VSSBlock, vmamba_config
from models.zoo.vmamba import VMambaClassifier, vmamba_cls_tiny

SPEC = (Path(__file__).resolve().parents[1] / "fixtures" / "state_dicts"
        / "official_state_dicts.json")


@pytest.fixture(scope="module")
def official():
    return json.loads(SPEC.read_text())  # upstream key schemas, committed test data


def ss2d_direct(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D written out: each scan order as an explicit index permutation of the H*W positions,
    one reference scan per order with that order's parameters, results put back and summed."""
    b, h, w, _ = x.shape
    xz = F.linear(x, m.in_proj.weight)
    xi, z = xz.chunk(2, dim=-1) if m.use_z_gate else (xz, None)
    u = F.silu(m.conv2d(xi.permute(0, 3, 1, 2))).flatten(2)          # (B, D, L)
    d = u.shape[1]
    grid = torch.arange(h * w).view(h, w)
    row, col = grid.flatten(), grid.t().flatten()
    orders = {"cross4": [row, col, row.flip(0), col.flip(0)], "bidir": [row, row.flip(0)],
              "unidir": [row]}[m.scan_mode]
    y = torch.zeros_like(u)
    n, r = m.d_state, m.dt_rank
    for k, order in enumerate(orders):
        seq = u[:, :, order]
        dbl = torch.einsum("bdl,cd->bcl", seq, m.x_proj_weight[k])
        dt, Bk, Ck = dbl[:, :r], dbl[:, r:r + n], dbl[:, r + n:]
        dt = torch.einsum("brl,dr->bdl", dt, m.dt_projs_weight[k])
        out, _ = scan_reference(seq, dt, -torch.exp(m.A_logs[k * d:(k + 1) * d]), Bk, Ck,
                                m.Ds[k * d:(k + 1) * d], delta_bias=m.dt_projs_bias[k],
                                delta_softplus=True)
        back = torch.zeros_like(out)
        back[:, :, order] = out
        y = y + back
    y = m.out_norm(y.transpose(1, 2).reshape(b, h, w, d))
    if z is not None:
        y = y * F.silu(z)
    return F.linear(y, m.out_proj.weight)


@pytest.mark.parametrize("kwargs", [dict(), dict(use_z_gate=False, conv_bias=False, d_state=1),
                                    dict(scan_mode="bidir"), dict(scan_mode="unidir")])
def test_ss2d_matches_direct_per_direction_scans(kwargs):
    m = SS2D(8, **kwargs)
    x = torch.randn(2, 3, 5, 8)          # H != W: a transposed order is not its own inverse
    with kernels.scan_backend("ref"), torch.no_grad():
        got = m(x)
        want = ss2d_direct(m, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ss2d_initialisation_follows_upstream():
    m = SS2D(32, d_state=16)
    d, r = 64, 2
    assert m.x_proj_weight.shape == (4, r + 32, d) and m.dt_projs_weight.shape == (4, d, r)
    torch.testing.assert_close(m.A_logs, torch.log(torch.arange(1, 17.)).repeat(4 * d, 1))
    assert torch.equal(m.Ds, torch.ones(4 * d))
    assert m.dt_projs_weight.abs().max() <= r ** -0.5
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-7


def test_vss_block_versions():
    v0, v2 = VSSBlock(16, version="v0"), VSSBlock(16, version="v2")
    assert v0.op.in_proj.out_features == 64 and v0.op.conv2d.bias is not None
    assert v0.op.d_state == 16 and v0.mlp is None
    assert v2.op.in_proj.out_features == 32 and v2.op.conv2d.bias is None
    assert v2.op.d_state == 1 and v2.mlp.fc1.out_features == 64
    with pytest.raises(ValueError, match="version"):
        VSSBlock(16, version="v9")


def test_stepping_interface_equals_forward():
    enc = VMambaEncoder(config="nano").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = enc(x)
        t = enc.embed(x)
        stepped = []
        for i in range(enc.num_stages):
            t = enc.run_stage(i, t)
            stepped.append(enc.stage_output(i, t))
            t = enc.downsample(i, t)
    assert [f.shape[1] for f in feats] == list(enc.out_channels) == [16, 32, 64, 128]
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    for a, b in zip(feats, stepped):
        assert torch.equal(a, b)
    assert torch.equal(enc.downsample(3, t), t)          # identity after the last stage


@pytest.mark.parametrize("config", ["nano", "v2_nano"])
def test_odd_sizes_and_gradients(config):
    enc = models.ENCODERS.create("vmamba", 3, config=config)
    feats = enc(torch.randn(1, 3, 62, 70))
    assert [tuple(f.shape[2:]) for f in feats][-1] == (2, 3)
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_configs():
    assert vmamba_config("tiny").depths == (2, 2, 9, 2) and vmamba_config("tiny").dims[-1] == 768
    assert vmamba_config("base").dims == (128, 256, 512, 1024)
    v2b = vmamba_config("v2_base")
    assert (v2b.depths, v2b.embed_dim, v2b.d_state, v2b.mlp_ratio) == ((2, 2, 15, 2), 128, 1, 4.0)
    assert (v2b.patch_embed, v2b.downsample, v2b.version) == ("v2", "v3", "v2")
    assert vmamba_config("tiny", depths=[1, 1, 1, 1]).depths == (1, 1, 1, 1)
    with pytest.raises(KeyError, match="known"):
        vmamba_config("huge")
    with pytest.raises(TypeError, match="unknown VMamba config field"):
        vmamba_config("tiny", width=3)
    assert set(VMAMBA_CONFIGS) >= {"tiny", "small", "base", "v2_tiny", "v2_small", "v2_base",
                                   "nano", "micro", "v2_nano", "v2_micro"}


def test_v2_key_layout_is_upstreams():
    keys = VMambaEncoder(config="v2_nano").state_dict()
    for k in ("patch_embed.0.weight", "patch_embed.2.weight", "patch_embed.5.weight",
              "patch_embed.7.bias", "layers.0.downsample.1.weight", "layers.0.downsample.3.bias",
              "layers.0.blocks.0.mlp.fc2.weight", "layers.0.blocks.0.norm2.weight"):
        assert k in keys, k
    assert not any(k.startswith("layers.3.downsample") for k in keys)


@pytest.mark.parametrize("size,published", [
    ("tiny", 22.89),
    pytest.param("small", 44.42, marks=pytest.mark.slow),
    pytest.param("base", 76.25, marks=pytest.mark.slow)])
def test_classifier_matches_official_keys_and_params(official, size, published):
    with torch.device("meta"):  # shapes only
        model = VMambaClassifier(size)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v) for k, v in official[f"vmamba_v0_{size}"].items()}
    assert ours == theirs
    n = models.count_params(model)
    assert n == sum(torch.Size(s).numel() for s in theirs.values())
    assert abs(n / 1e6 / published - 1) < 1e-3


def test_official_checkpoint_loads_strictly(official, tmp_path):
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(*s, generator=gen) for k, s in official["vmamba_v0_tiny"].items()}
    path = tmp_path / "vssmtiny_dp01_ckpt_epoch_292.pth"
    torch.save({"model": state, "epoch": 292}, path)
    model = vmamba_cls_tiny()
    report = models.load_pretrained(model, path)
    assert report.ok and len(report.loaded) == len(state) == 212
    assert torch.equal(model.layers[2].blocks[8].op.A_logs, state["layers.2.blocks.8.op.A_logs"])
    assert torch.equal(model.classifier.head.weight, state["classifier.head.weight"])
    # a key missing and a shape off: both named, nothing loaded
    small = VMambaClassifier("nano", num_classes=3)
    state = {k: v.clone() for k, v in small.state_dict().items()}
    del state["layers.0.blocks.0.op.Ds"]
    state["classifier.head.weight"] = torch.zeros(5, 128)
    before = small.layers[0].blocks[0].op.A_logs.detach().clone()
    state["layers.0.blocks.0.op.A_logs"] += 1
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"(?s)layers.0.blocks.0.op.Ds.*classifier.head.weight"):
        models.load_pretrained(small, path)
    assert torch.equal(small.layers[0].blocks[0].op.A_logs, before)


def test_ref_scan_formula_by_hand():
    from kernels.flops import selective_scan_flops_ref

    # numpy's einsum_path MAC counts at B=1, D=4, L=8, N=16 (BDLN = 512, BDL = 32):
    #   bdl,dn->bdln 512/2 = 256; bdl,bnl,bdl->bdln floor(1025/2) = 512;
    #   L * (BDN + bdn,bdn->bd) = 8 * (64 + 64) = 1024; + BDL for D = 32
    assert selective_scan_flops_ref(1, 8, 4, 16) == 256 + 512 + 1024 + 32
    assert selective_scan_flops_ref(1, 8, 4, 16, with_z=True) == 1824 + 32


@pytest.mark.slow
def test_vmamba_tiny_flops_three_conventions():
    """4.46G (old ref scan formula) / 5.63G (fn formula) / 3.71G (no scan) at 224x224: computed
    from upstream's classes, matching VMamba's published figures (docs/models.md, "VMamba")."""
    from bench.reporting.zoo_report import measure

    entry = models.get_published("VMamba-T")
    m = measure(entry)
    assert m["gmacs"]["ref"] == pytest.approx(4.46, rel=0.01)
    assert m["gmacs"]["full"] == pytest.approx(5.63, rel=0.01)
    assert m["gmacs"]["published"] == pytest.approx(3.71, rel=0.01)
    assert not m["unsupported_ops"]


def test_zoo_report_rows_are_the_figures_registered_beside_the_builders():
    from bench.reporting import zoo_report as zr

    systems = [e.system for e in zr.entries()]
    assert {"VMamba-T", "VMamba-B v2 [s2l15]", "Sigma-T", "Samba", "MS2MNet",
            "Mamba-Diffusion backbone"} <= set(systems)
    assert "ReMamber" not in systems          # no published measurement to repeat
    assert models.get_family("sigma").published["tiny"] is models.get_published("Sigma-T")
    assert models.get_published("Sigma-T").builder == "sigma_tiny"
    assert models.get_published("VMamba-T").builder == "models.zoo.vmamba:vmamba_cls_tiny"
    with pytest.raises(models.UnknownNameError, match="did you mean 'Sigma-T'"):
        models.get_published("Sigma-t")


def test_zoo_report_renders_and_caches(tmp_path, monkeypatch):
    """Measuring one row keeps the other rows' cached numbers."""
    from bench.reporting import zoo_report as zr

    entry = models.PublishedFigures("Toy", "models.zoo.vmamba:vmamba_cls_tiny",
                                    {"image": (1, 3, 32, 32)}, 10.0, {"full": 2.0})
    other = models.PublishedFigures("Other", "sigma_nano", {"rgb": (1, 3, 64, 64)}, 1.0,
                                    {"full": 1.0})
    monkeypatch.setattr(zr, "entries", lambda: [entry, other])
    monkeypatch.setattr(zr, "measure", lambda e, flops=True: {
        "system": e.system, "params_m": 10.005, "gmacs": {"full": 2.03, "published": 1.5},
        "by_module": {"layers": {"full": 1.9, "published": 1.4}}, "seconds": 0.0})
    cache = tmp_path / "measured.json"
    cache.write_text(json.dumps({"Other": {"params_m": 1.2, "gmacs": {"full": 1.0}}}))
    out = tmp_path / "README.md"
    assert zr.main(["--systems", "Toy", "--out", str(out), "--measured", str(cache)]) == 0
    text = out.read_text()
    assert "| Toy | 3×32×32 | 10.00M | 10.01M | +0.05% | full | 2.00 | 2.03 | +1.50% | **no** |" \
        in text
    assert "| Other | 3×64×64 | 1.00M | 1.20M | +20.00% |" in text      # from the cache
    assert set(json.loads(cache.read_text())) == {"Toy", "Other"}
    assert zr.main(["--systems", "Toy", "--out", str(out), "--measured", str(cache),
                    "--check"]) == 1
    assert zr.main(["--systems", "Nope", "--out", str(out), "--measured", str(cache)]) == 2
