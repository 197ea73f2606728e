"""Mamba-Diffusion's fusions: the DCF and DS-S4 mixers against a written-out reference (explicit
scan orders and recurrence), the paired block and stage fusion formulas, the paper-size parameter
counts, the upstream drop-path schedule, and the fusions on CNN, Samba and VMamba encoders."""
import math

import pytest
import torch
import torch.nn.functional as F

import kernels
import models
from models import count_params
from models.backbones.vmamba import VMAMBA_CONFIGS
from models.fusion.dcf import DCFMixer, PairedBlock, drop_path_rates
from models.fusion.ds_s4 import DSS4Mixer

NAMES = ("dcf", "ds_s4", "dcf+ds_s4")


# ----------------------------------------------------------------------------- reference


def scan_orders(h, w):
    """Row-major positions visited by VMamba's four scans: rows, columns, both reversed."""
    idx = torch.arange(h * w).view(h, w)
    row, col = idx.flatten(), idx.t().flatten()
    return [row, col, row.flip(0), col.flip(0)]


def recurrence(u, dt, A, Bm, Cm, D):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t;  y_t = C_t h_t + D u_t   (one sequence)."""
    h = torch.zeros_like(A)
    ys = []
    for t in range(u.shape[0]):
        h = torch.exp(dt[t, :, None] * A) * h + (dt[t] * u[t])[:, None] * Bm[t][None, :]
        ys.append((h * Cm[t][None, :]).sum(-1) + D * u[t])
    return torch.stack(ys)


def core_reference(m, u_map, src_maps, h, w):
    """The shared 4-direction SSM on one image: u_map, src_maps[k] (L, D) in row-major order;
    direction k scans u and takes dt, B, C from src_maps[k]; outputs summed back in place."""
    d, n, r = m.d_inner, m.d_state, m.dt_rank
    y = torch.zeros_like(u_map)
    for k, order in enumerate(scan_orders(h, w)):
        x_dbl = src_maps[k][order] @ m.x_proj_weight[k].T
        dt, Bm, Cm = torch.split(x_dbl, [r, n, n], dim=-1)
        dt = F.softplus(dt @ m.dt_projs_weight[k].T + m.dt_projs_bias[k])
        A = -torch.exp(m.A_logs.view(4, d, n)[k].float().double())
        yk = recurrence(u_map[order], dt, A, Bm, Cm, m.Ds.view(4, d)[k])
        y[order] += yk
    return y


def conv_branch(proj, conv, x):
    """(H, W, C) -> SiLU(dwconv(proj x)) as (L, D) row-major."""
    t = conv(proj(x)[None].permute(0, 3, 1, 2))[0]
    return F.silu(t).flatten(1).T


def dcf_reference(m, p, q):
    h, w = p.shape[:2]
    xp = conv_branch(m.in_proj_a, m.conv2d_a, p)
    xq = conv_branch(m.in_proj_b, m.conv2d_b, q)
    y = core_reference(m, xp, [xp, xp, xq, xq], h, w)
    return m.out_proj_a(m.out_norm(y)).view(h, w, -1)


def ds_s4_reference(m, p, q):
    h, w = p.shape[:2]
    d = m.d_inner
    xp = conv_branch(lambda t: m.in_proj_a(t)[..., :d], m.conv2d_a, p)
    zp = m.in_proj_a(p)[..., d:].reshape(h * w, d)
    xq = conv_branch(lambda t: m.in_proj_b(t)[..., :d], m.conv2d_b, q)
    yp = m.out_norm(core_reference(m, xp, [xp] * 4, h, w))
    yq = m.out_norm(core_reference(m, xq, [xq] * 4, h, w))
    return m.out_proj_a(yp * F.silu(zp) + yq * F.silu(zp)).view(h, w, -1)


@pytest.mark.parametrize("mixer_cls, reference", [(DCFMixer, dcf_reference),
                                                  (DSS4Mixer, ds_s4_reference)],
                         ids=["dcf", "ds_s4"])
def test_mixers_match_the_written_out_reference(mixer_cls, reference):
    m = mixer_cls(6, d_state=2, conv_bias=True).double()
    p = torch.randn(2, 3, 5, 6, dtype=torch.float64)   # H != W: the column scans are checked
    q = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    with kernels.scan_backend("ref"):
        out = m(p, q)
    assert out.shape == p.shape
    for i in range(2):
        torch.testing.assert_close(out[i], reference(m, p[i], q[i]), rtol=1e-7, atol=1e-9)


def test_dcf_takes_only_the_reversed_scans_controls_from_the_other_stream():
    """Changing Q moves P's output only through directions 2 and 3: with those directions'
    x_proj rows zeroed (dt -> its bias, B = C = 0) Q has no effect at all."""
    m = DCFMixer(4, d_state=1).double()
    with torch.no_grad():
        m.x_proj_weight[2:] = 0
    p = torch.randn(1, 3, 3, 4, dtype=torch.float64)
    q1, q2 = torch.randn(2, 1, 3, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(m(p, q1), m(p, q2))
    with torch.no_grad():
        m.x_proj_weight[2].normal_()
    assert not torch.allclose(m(p, q1), m(p, q2))


def test_paired_block_and_stage_fusion_formulas():
    torch.manual_seed(1)
    block = PairedBlock(lambda: DCFMixer(8), 8, drop_path=0.0).eval()
    a, b = torch.randn(2, 2, 4, 4, 8)
    na, nb = block.norm_A(a), block.norm_B(b)
    a1 = a + block.m_a(na, nb)
    b1 = b + block.m_b(nb, na)
    a2 = a1 + block.mlp_A(block.norm2_A(a1))
    b2 = b1 + block.mlp_B(block.norm2_B(b1))
    out_a, out_b = block(a, b)
    torch.testing.assert_close(out_a, a2)
    torch.testing.assert_close(out_b, b2)

    fusion = models.create_fusion("dcf+ds_s4", [8, 16], dcf_depths=1, ds_s4_depths=1).eval()
    fa, fb = fusion.blocks[0][1](*fusion.blocks[0][0](a, b))     # DCF then DS-S4
    sa, sb = fusion.interact(0, a, b)
    torch.testing.assert_close(sa, a + fa)                        # oA += blocks(oA)
    torch.testing.assert_close(sb, b + fb)
    fused = fusion(0, a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2))
    expected = fusion.outnorm_a[0](a + fa) + fusion.outnorm_b[0](b + fb)
    torch.testing.assert_close(fused, expected.permute(0, 3, 1, 2))


# ----------------------------------------------------------------------------- paper size


def mixer_params(c, z_gate, unused, n=1):
    d, r = 2 * c, math.ceil(c / 16)
    count = 2 * c * d * (2 if z_gate else 1) + 2 * 9 * d          # in_proj a/b, dwconv (no bias)
    count += 4 * (r + 2 * n) * d + 4 * d * r + 4 * d + 4 * d * n + 4 * d   # SSM core
    return count + 2 * d + d * c * (2 if unused else 1)            # out_norm, out_proj(s)


def block_params(c, z_gate, unused):
    mlp = c * 4 * c + 4 * c + 4 * c * c + c
    return 2 * mixer_params(c, z_gate, unused) + 4 * 2 * c + 2 * mlp


def test_paper_size_parameters_match_the_spec():
    """DCF 95.38M and DS-S4 139.87M at dims 128..1024 (2,2,2,2 and 2,2,4,2 blocks), with
    upstream's unused second output projections, plus the stage norms: figures computed from
    upstream's classes (docs/models.md, "Mamba-Diffusion"). The exact integers are the values of
    the hand formula ``block_params``, not of the code under test."""
    dims = [128, 256, 512, 1024]
    with torch.device("meta"):
        dcf = models.create_fusion("dcf", dims, upstream_unused=True)
        ds_s4 = models.create_fusion("ds_s4", dims, upstream_unused=True)
        lean = models.create_fusion("dcf", dims)
    norms = 2 * 2 * sum(dims)
    dcf_blocks = count_params(dcf) - norms
    ds_s4_blocks = count_params(ds_s4) - norms
    assert dcf_blocks == sum(2 * block_params(c, False, True) for c in dims) == 95_383_040
    assert ds_s4_blocks == sum(k * block_params(c, True, True)
                               for k, c in zip((2, 2, 4, 2), dims)) == 139_867_648
    assert abs(dcf_blocks / 95.38e6 - 1) < 1e-3 and abs(ds_s4_blocks / 139.87e6 - 1) < 1e-3
    assert count_params(dcf) - count_params(lean) == sum(2 * 2 * 2 * c * c for c in dims)


def test_drop_path_rates_read_the_backbone_schedule():
    rates = torch.linspace(0, 0.6, 21).tolist()
    assert drop_path_rates((2, 2, 2, 2), 0.6, 21)[3] == rates[6:8]
    assert drop_path_rates((2, 2, 4, 2), 0.6, 21)[2] == rates[4:8]
    fusion = models.create_fusion("dcf+ds_s4", [8] * 4, drop_path_rate=0.6, schedule_len=21,
                                  dcf_depths=(2, 2, 2, 2), ds_s4_depths=(2, 2, 4, 2))
    got = [blk.drop_path.drop_prob for blk in fusion.blocks[2]]
    assert got == pytest.approx(rates[4:6] + rates[4:8])


def test_unused_upstream_projections_get_no_gradient():
    fusion = models.create_fusion("dcf+ds_s4", [8, 16], dcf_depths=1, ds_s4_depths=1,
                                  upstream_unused=True)
    a, b = torch.randn(2, 2, 8, 4, 4)
    fusion(0, a, b).sum().backward()
    for name, p in fusion.named_parameters():
        if name.startswith("blocks.0"):
            assert (p.grad is None) == ("out_proj_b" in name), name


def test_bad_depths_are_reported():
    with pytest.raises(ValueError, match="dcf_depths has 3 entries"):
        models.create_fusion("dcf", [8, 16, 32, 64], dcf_depths=(1, 1, 1))


# ----------------------------------------------------------------------------- any encoder


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", ["dualcnn", "samba"])
def test_fusions_on_cnn_and_samba_encoders_train(family, name):
    model = models.create_model(family, size="nano", fusion=name, num_classes=4,
                                modalities={"rgb": 3, "x": 1})
    assert model.fusion.registry_name == name and model.fusion.summary
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "x": torch.randn(2, 1, 32, 32)}
    target = torch.randint(0, 4, (2, 32, 32))
    model.forward_train(inputs, target)["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.fusion.parameters())
    model.eval()
    with torch.no_grad():
        assert model(inputs).shape == (2, 4, 32, 32)


def test_fusions_build_for_every_vmamba_size():
    for dims in sorted({tuple(config.dims) for config in VMAMBA_CONFIGS.values()}):
        dims = list(dims)
        with torch.device("meta"):
            fusion = models.create_fusion("dcf+ds_s4", dims)
        assert [blk.norm_A.normalized_shape[0] for blk in fusion.blocks[-1]] == [dims[-1]] * 4
    fusion = models.create_fusion("dcf+ds_s4", list(VMAMBA_CONFIGS["v2_nano"].dims))
    feats = [torch.randn(1, c, s, s) for c, s in zip(VMAMBA_CONFIGS["v2_nano"].dims, (8, 4, 2, 1))]
    for i, f in enumerate(feats):
        assert fusion(i, f, torch.randn_like(f)).shape == f.shape
