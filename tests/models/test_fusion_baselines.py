"""Baseline fusions and the registries they are built from."""
import pytest
import torch

import models
from models.fusion.baselines import AddFusion, ConcatConvFusion
from models.fusion.cross_attention import CrossAttentionFusion

BASELINES = ["rgb_only", "x_only", "early_concat", "late_logits", "add", "concat_conv",
             "cross_attention"]


@pytest.mark.parametrize("fusion", BASELINES)
def test_every_baseline_builds_trains_and_predicts(fusion):
    model = models.create_model("dualcnn", size="nano", fusion=fusion, num_classes=5,
                                modalities={"rgb": 3, "x": 1})
    inputs = {"rgb": torch.randn(2, 3, 32, 48), "x": torch.randn(2, 1, 32, 48)}
    loss = model.forward_train(inputs, torch.randint(0, 5, (2, 32, 48)))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    assert model(inputs).shape == (2, 5, 32, 48)


def test_single_modality_fusions_ignore_the_other_modality():
    torch.manual_seed(0)
    for fusion, kept, dropped in (("rgb_only", "rgb", "x"), ("x_only", "x", "rgb")):
        model = models.create_model("dualcnn", size="nano", fusion=fusion).eval()
        inputs = {"rgb": torch.randn(1, 3, 32, 32), "x": torch.randn(1, 1, 32, 32)}
        changed = dict(inputs, **{dropped: torch.randn_like(inputs[dropped])})
        assert model.modalities == (kept,)
        assert torch.equal(model(inputs), model(changed))


def test_late_logits_is_the_sum_of_two_paths():
    model = models.create_model("dualcnn", size="nano", fusion="late_logits").eval()
    inputs = {"rgb": torch.randn(1, 3, 32, 32), "x": torch.randn(1, 1, 32, 32)}
    size = (32, 32)
    la = model.decode(model.encoder_a(inputs["rgb"]), size)
    lb = torch.nn.functional.interpolate(model.head_b(model.encoder_b(inputs["x"])), size=size,
                                         mode="bilinear", align_corners=False)
    assert torch.allclose(model(inputs), la + lb)


def test_cross_attention_propagates_context_and_pixel_fusions_do_not():
    channels = [16]
    a, b = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    far = b.clone()
    far[:, 0, 7, 7] += 5.0                     # change one far-away position of modality b
    for fusion, spreads in ((CrossAttentionFusion(channels), True), (AddFusion(channels), False),
                            (ConcatConvFusion(channels), False)):
        fusion.eval()
        with torch.no_grad():
            delta = (fusion(0, a, far) - fusion(0, a, b))[..., 0, 0].abs().max()
        assert (delta > 1e-4) == spreads, type(fusion).__name__


def test_registry_errors_suggest_names():
    with pytest.raises(models.UnknownNameError, match="did you mean 'concat_conv'"):
        models.create_model("dualcnn", size="nano", fusion="concat_cnv")
    with pytest.raises(models.UnknownNameError, match="unknown model 'dualcn'"):
        models.create_model("dualcn", size="nano")
    with pytest.raises(models.UnknownNameError, match="size of model 'dualcnn'"):
        models.create_model("dualcnn", size="huge")
    assert models.create_model("dualcnn_nano").num_classes == 9


def test_param_groups_modes():
    model = models.create_model("dualcnn", size="nano", fusion="cross_attention")
    all_groups = models.param_groups(model, 0.01, "all")
    upstream = models.param_groups(model, 0.01, "upstream")

    def count(groups):
        return sum(p.numel() for g in groups for p in g["params"])

    assert count(all_groups) == models.count_params(model)
    # nn.MultiheadAttention keeps in_proj_weight as a raw Parameter: upstream mode drops it
    raw = model.fusion.blocks[0].attn.in_proj_weight
    assert any(p is raw for g in all_groups for p in g["params"])
    assert not any(p is raw for g in upstream for p in g["params"])
    decayed = all_groups[0]
    assert decayed["weight_decay"] == 0.01 and all(p.dim() > 1 for p in decayed["params"])
