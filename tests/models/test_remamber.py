"""ReMamber: parameter counts of the paper configuration against hand-derived formulas of the
upstream layers, shapes, the loss against upstream's formulas, training on a fixed batch, the
harness run on SynRef, the pluggable text encoder, and ``twister_x`` on the CNN encoder."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

import models
from bench.config.suite import load_suite
from bench.data import build_dataset
from bench.run.train import run_cell
from models import count_params
from models.heads.remamber_heads import ReMamberConvHead, ReMamberMambaHead
from models.text_encoder import (
    TextEncoderError,
    TextFeatures,
    build_text_encoder,
    clip_l_text_params,
)
from models.zoo.remamber import referring_loss

BASE = [128, 256, 512, 1024]
#: the parts' published counts (M) registered with remamber_base (models/zoo/remamber.py)
PUBLISHED_PARTS_M = models.get_family("remamber").published["base"].extra["params_parts_m"]


@pytest.fixture(autouse=True)
def _one_thread():
    """The CPU-size models are tiny and op-bound: one thread is as fast and does not stall when
    the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------ hand-derived parameter counts

def ss2d_params(d_model, d_inner, in_features, z_gate, d_state=1, k=4):
    """VMamba SS2D (v2 init "v0"): in_proj, dwconv3x3 without bias, K x_proj / dt_proj sets,
    A_logs, Ds, out LayerNorm, out_proj."""
    rank = math.ceil(d_model / 16)
    in_proj = in_features * d_inner * (2 if z_gate else 1)
    dwconv = d_inner * 9
    x_proj = k * (rank + 2 * d_state) * d_inner
    dt_proj = k * d_inner * rank + k * d_inner
    a_logs, ds = k * d_inner * d_state, k * d_inner
    return in_proj + dwconv + x_proj + dt_proj + a_logs + ds + 2 * d_inner + d_inner * d_model


def corr_params(c, text=768, hidden=512, tokens=20):
    return (c * hidden + hidden) + (text * hidden + hidden) + (tokens * hidden * 9 + hidden) \
        + (hidden * c + c)


def twister_stage_params(c):
    channel_scan = ss2d_params(256, 512, 256, z_gate=True)       # 16 x 16 = 256 features
    spatial = ss2d_params(c, 2 * c, 3 * c, z_gate=False)
    block = 2 * c + channel_scan + spatial                        # one shared LayerNorm
    return (768 * c + c) + corr_params(c) + 2 * block


def conv_head_params(c1=128, hidden=512):
    def rb(c_in, c_out):  # 1x1-BN, dw3x3, BN, 1x1-BN (no conv biases)
        return c_in * c_in + 2 * c_in + 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out
    neck = ((hidden + c1) * hidden * 9 + hidden + 2 * hidden
            + hidden * hidden * 9 + hidden + 2 * hidden + hidden * 9 + 1)
    return rb(8 * c1, hidden) + rb(4 * c1 + hidden, hidden) + rb(2 * c1 + hidden, hidden) + neck


def mamba_head_params(c1=128, depths=(2, 4, 2, 2)):
    total = 0
    dims = [8 * c1, 4 * c1, 2 * c1, c1]
    for i, (d, depth) in enumerate(zip(dims, depths)):
        total += (768 * d + d) + corr_params(d) + 3 * d * d
        total += depth * (2 * d + ss2d_params(d, 2 * d, d, z_gate=False))
        total += d * (d // 2) + d                                 # Linear(d -> d/2) + LN
        if i < 3:
            h = d // 2
            total += d * h * 9 + 2 * h + h * h * 9 + 2 * h
    last = c1 // 2
    return total + last * last * 9 + 2 * last + last * 9 + 1


def test_paper_configuration_parts_match_the_upstream_layers():
    with torch.device("meta"):
        fusion = models.create_fusion("twister", BASE)
        conv_head = ReMamberConvHead(BASE)
        mamba_head = ReMamberMambaHead(BASE)
        text = build_text_encoder("clip_l")
    per_stage = [count_params(fusion.global_text[i]) + count_params(fusion.local_text[i])
                 + count_params(fusion.blocks[i]) for i in range(4)]
    assert per_stage == [twister_stage_params(c) for c in BASE]
    assert count_params(conv_head) == conv_head_params() == 9_484_545
    assert count_params(mamba_head) == mamba_head_params()
    # the CLIP ViT-L/14 text tower's shape: HF CLIPTextModel has 123,060,480 parameters
    assert count_params(text) == clip_l_text_params() == 123_060_480
    assert count_params(text) / 1e6 == pytest.approx(PUBLISHED_PARTS_M["clip_l_text"], rel=1e-3)


REGRESSION_PIN_TOTAL_PARAMS = 254_578_177


@pytest.mark.slow
def test_paper_configuration_total():
    """Built at base size: the encoder plus VMamba's classifier (LN + Linear(1024 -> 1000))
    is VMamba-v2-B's published 89M within 1%; the total is the sum of the checked parts."""
    model = models.create_model("remamber", size="base", modalities={"rgb": 3, "text": 20})
    encoder = count_params(model.encoder)
    published = PUBLISHED_PARTS_M["vmamba_v2_base_with_classifier"]
    assert (encoder + 2 * 1024 + 1024 * 1000 + 1000) / 1e6 == pytest.approx(published, rel=0.01)
    expected = encoder + sum(twister_stage_params(c) for c in BASE) + conv_head_params() \
        + 123_060_480
    assert count_params(model) == expected
    assert expected == REGRESSION_PIN_TOTAL_PARAMS  # regression pin: this code's total at c5e703d


# ------------------------------------------------------------------------------ behaviour

def _batch(size=32, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(batch, 20, dtype=torch.int64)
    tokens[:, :8] = torch.randint(2, 17, (batch, 8), generator=gen)
    return ({"rgb": torch.randn(batch, 3, size, size, generator=gen), "text": tokens},
            torch.randint(0, 2, (batch, size, size), generator=gen))


@pytest.mark.parametrize("head", ["conv", "mamba"])
def test_shapes_and_the_text_matters(head):
    torch.manual_seed(0)
    model = models.create_model("remamber", size="nano", head=head).eval()
    inputs, _ = _batch(size=40)  # 40 px: stages of 10, 5, 3, 2 (odd sizes upsample exactly)
    with torch.no_grad():
        logits = model(inputs)
        features, _ = model.extract(inputs)
        other = model({"rgb": inputs["rgb"], "text": inputs["text"].flip(0)})
    assert logits.shape == (2, 1, 40, 40)
    assert [tuple(f.shape[1:]) for f in features] == [(16, 10, 10), (32, 5, 5), (64, 3, 3),
                                                      (128, 2, 2)]
    assert not torch.allclose(logits[0], other[0])  # same image, other expression


def test_mamba_head_global_text_is_the_first_token_as_upstream():
    """Upstream's decoder gets no pooler_out, so its global vector is l_feat[..., 0]. The
    default output ignores ``text.pooled`` entirely, and equals the "pooled" variant's output
    when the pooled vector is replaced by the first token's feature."""
    torch.manual_seed(0)
    model = models.create_model("remamber", size="nano", head="mamba").eval()
    assert model.head.text_vector == "first_token"
    inputs, _ = _batch(size=32)
    with torch.no_grad():
        features, text = model.extract(inputs)
        default = model.head(features, text)
        garbage = dataclasses.replace(text, pooled=torch.randn_like(text.pooled) * 100)
        torch.testing.assert_close(model.head(features, garbage), default, rtol=0, atol=0)
        model.head.text_vector = "pooled"
        first = dataclasses.replace(text, pooled=text.tokens[:, 0])
        torch.testing.assert_close(model.head(features, first), default, rtol=0, atol=0)
        assert not torch.allclose(model.head(features, text), default)
    variant = models.create_model("remamber", size="nano", head="mamba",
                                  head_kwargs={"text_vector": "pooled"})
    assert variant.head.text_vector == "pooled"


def test_loss_is_upstream_dice_plus_bce():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[-2.0, 1.0], [0.0, 4.0]]]])
    target = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [1, 1]]])
    out = referring_loss(logits, target)
    p, t = logits.sigmoid().flatten(1), target.float().flatten(1)
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    assert out["loss_dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert out["loss_bce"].item() == pytest.approx(bce.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(dice.item() + bce.item(), rel=1e-6)
    # an ignored pixel takes no part: same as dropping it by hand
    ignored = target.clone()
    ignored[0, 0, 0] = 255
    out = referring_loss(logits, ignored)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 0] = False
    bce = F.binary_cross_entropy_with_logits(logits.flatten(1)[keep], t[keep])
    assert out["loss_bce"].item() == pytest.approx(bce.item(), rel=1e-6)


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    data = build_dataset("synref", split="train", samples=2, size=32)
    batch = default_collate([data[0], data[1]])
    inputs, target = {"rgb": batch["rgb"], "text": batch["text"]}, batch["label"]
    model = models.create_model("remamber", size="nano")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        loss = model.forward_train(inputs, target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # measured: 1.70 -> 0.11 (dice + BCE); half of the start is a loose bound
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses[::10]


SUITE = """\
name: remamber_test
grid:
  models: [remamber]
  sizes: [nano]
  fusions: [default]
  datasets: [{name: synref, samples: {train: 8, val: 4, test: 6}}]
  seeds: [0]
stages: [train, eval, profile]
train: {iterations: 3, batch_size: 4, lr: 1.0e-3, threads: 1, checkpoint_every: 3}
eval: {batch_size: 3, corruptions: [clean]}
profile: {latency: false, input_size: [32, 32]}
"""


def test_harness_trains_evaluates_and_profiles_on_synref(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    config = load_suite(path).cells()[0]
    result = run_cell(config, tmp_path / "cell", progress=False)
    metrics = result["metrics"]["clean"]
    assert metrics["samples"] == 6
    assert set(metrics) >= {"oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"}
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("oIoU", "mIoU", "P@0.5"))
    assert len(result["history"]["loss"]) == 1 and math.isfinite(result["history"]["loss"][0])
    assert result["profile"]["unsupported_ops"] == {}
    assert result["profile"]["params"] == count_params(
        models.create_model("remamber", size="nano"))


# ------------------------------------------------------------------------- errors and parts

def test_clear_errors():
    with pytest.raises(ValueError, match="pairs two images"):
        models.create_model("remamber", size="nano", fusion="add")
    with pytest.raises(ValueError, match="referring model"):
        models.create_model("remamber", size="nano", modalities={"rgb": 3, "x": 1})
    fusion = models.create_fusion("twister", [8, 16], text_dim=16, hidden_dim=8, channel_res=4)
    with pytest.raises(TypeError, match="twister_x"):
        fusion(0, torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4))
    text = TextFeatures(torch.randn(1, 12, 16), torch.ones(1, 12, dtype=torch.bool),
                        torch.randn(1, 16))
    with pytest.raises(ValueError, match="built for 20 tokens"):
        fusion(0, torch.randn(1, 8, 4, 4), text)
    encoder = build_text_encoder("nano")
    with pytest.raises(TextEncoderError, match="vocab_size 512"):
        encoder(torch.tensor([[600, 3]]))
    with pytest.raises(TextEncoderError, match="unknown text encoder config"):
        build_text_encoder("clip_xl")


def test_word_transformer_pools_and_masks():
    torch.manual_seed(0)
    encoder = build_text_encoder({"config": "nano", "pool": "last"}).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    with torch.no_grad():
        out = encoder(ids)
        padded = encoder(torch.tensor([[5, 6, 7, 0, 0, 0, 0]]))
        changed_pad = encoder(torch.tensor([[5, 6, 7, 9, 9]]))
    assert out.mask.tolist() == [[True, True, True, False, False]]
    assert torch.allclose(out.pooled, out.tokens[:, 2])            # the last real token
    assert torch.allclose(out.tokens[:, :3], padded.tokens[:, :3], atol=1e-6)
    assert not torch.allclose(out.tokens[:, :3], changed_pad.tokens[:, :3])


def test_hf_text_encoder_from_a_local_folder(tmp_path):
    try:
        import transformers
    except ImportError:
        with pytest.raises(TextEncoderError, match="needs the transformers package"):
            build_text_encoder({"hf_path": str(tmp_path)})
        pytest.skip("transformers is not installed")
    with pytest.raises(TextEncoderError, match="config.json not found"):
        build_text_encoder({"hf_path": str(tmp_path / "nothing")})
    config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "tiny_bert")
    encoder = build_text_encoder({"hf_path": str(tmp_path / "tiny_bert")})
    out = encoder(torch.tensor([[2, 5, 7, 0, 0]]))
    assert encoder.out_dim == 32 and out.tokens.shape == (1, 5, 32) and out.pooled.shape == (1, 32)
    model = models.create_model("remamber", size="nano",
                                text_encoder={"hf_path": str(tmp_path / "tiny_bert")}).eval()
    inputs, _ = _batch(size=32, batch=1)
    assert model(inputs).shape == (1, 1, 32, 32)
    assert model.fusion.global_text[0][0].in_features == 32  # sized from the HF model


def test_twister_x_with_the_cnn_encoder():
    torch.manual_seed(0)
    model = models.create_model("dualcnn", size="nano", fusion="twister_x", num_classes=3,
                                modalities={"rgb": 3, "x": 1})
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "x": torch.randn(2, 1, 32, 32)}
    logits = model(inputs)
    assert logits.shape == (2, 3, 32, 32)
    F.cross_entropy(logits, torch.randint(0, 3, (2, 32, 32))).backward()
    # the X stream reaches the loss through the X tokens and the global X vector
    assert model.encoder_b.stages[0][0][0].weight.grad.abs().sum() > 0
    assert models.FUSIONS.get("twister_x").pairs_with == "image"
    assert models.FUSIONS.get("twister").pairs_with == "text"


def test_synref_with_a_hugging_face_tokenizer(tmp_path):
    """SynRef's ids from a local HF tokenizer drive an HF text encoder of the same folder."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "small", "large", "red",
             "green", "blue", "yellow", "square", "circle", "triangle", "left", "right", "of",
             "above", "below"]
    folder = tmp_path / "tiny_bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(folder)
    item = build_dataset("synref", split="val", samples=1, tokenizer={"hf_path": str(folder)})[0]
    n = item["text_length"]
    expected = [2] + [words.index(w) for w in item["sentence"].split()] + [3]   # CLS ... SEP
    assert item["text"][:n].tolist() == expected and (item["text"][n:] == 0).all()
    model = models.create_model("remamber", size="nano", text_encoder={"hf_path": str(folder)})
    with torch.no_grad():
        logits = model.eval()({"rgb": item["rgb"][None], "text": item["text"][None]})
    assert logits.shape == (1, 1, 64, 64)


def test_upstream_key_names_map_onto_ours():
    """Key names as upstream's modules name them (model/customized_model.py, conv_segmenter.py,
    mamba_segmenter.py; VMamba's VSSM) land on parameters of ours with the same role."""
    conv = models.create_model("remamber", size="nano")
    mamba = models.create_model("remamber", size="nano", head="mamba")
    upstream_to_ours = {
        "backbone.patch_embed.0.weight": "encoder.patch_embed.0.weight",
        "backbone.layers.2.blocks.1.op.A_logs": "encoder.layers.2.blocks.1.op.A_logs",
        "backbone.layers.0.downsample.1.weight": "encoder.layers.0.downsample.1.weight",
        "backbone.text_guidencee.3.0.weight": "fusion.global_text.3.0.weight",
        "backbone.local_text_fusion.1.vis_proj.0.weight": "fusion.local_text.1.vis_proj.0.weight",
        "backbone.local_text_fusion.2.unsqueeze.0.weight":
            "fusion.local_text.2.cost_conv.0.weight",
        "backbone.local_text_fusion.0.out_proj.bias": "fusion.local_text.0.out_proj.bias",
        "backbone.multimodal_blocks.1.blocks.0.ln_1.weight": "fusion.blocks.1.0.norm.weight",
        "backbone.multimodal_blocks.3.blocks.1.self_attention.ss2d.in_proj.weight":
            "fusion.blocks.3.1.spatial.in_proj.weight",
        "backbone.multimodal_blocks.0.blocks.1.self_attention.ss1d.x_proj_weight":
            "fusion.blocks.0.1.channel_scan.ss1d.x_proj_weight",
        "decoder.mixer3.conv1.conv.weight": "head.mixer3.conv1.conv.weight",
        "decoder.mixer1.conv2.bn.running_var": "head.mixer1.conv2.bn.running_var",
        "decoder.neck.8.bias": "head.neck.8.bias",
    }
    mamba_keys = {
        "decoder.in_proj.0.weight": "head.in_proj.0.weight",
        "decoder.multimodal_blocks.1.blocks.3.ln_1.weight": "head.blocks.1.3.norm.weight",
        "decoder.multimodal_blocks.1.blocks.3.self_attention.out_proj.weight":
            "head.blocks.1.3.op.out_proj.weight",
        "decoder.multimodal_blocks.0.downsample.proj.weight": "head.upsample.0.proj.weight",
        "decoder.text_guidencee.2.0.bias": "head.global_text.2.0.bias",
        "decoder.local_text_fusion.3.unsqueeze.0.bias": "head.local_text.3.cost_conv.0.bias",
        "decoder.hire_fusion.2.fusion.3.weight": "head.fuse.2.fusion.3.weight",
        "decoder.proj_out.1.0.weight": "head.proj_out.1.0.weight",
    }
    for model, table in ((conv, upstream_to_ours), (mamba, mamba_keys)):
        own = model.state_dict()
        checkpoint = {up: own[ours] + 1.0 for up, ours in table.items()}
        renamed = model.checkpoint_filter_fn(checkpoint)
        assert set(renamed) == set(table.values())
        model.load_state_dict(renamed, strict=False)
        assert all(torch.equal(model.state_dict()[ours], checkpoint[up])
                   for up, ours in table.items())
    # a VMamba classification checkpoint goes to the encoder; its classifier is dropped
    vmamba = {"layers.0.blocks.0.norm.weight": torch.ones(16), "classifier.head.weight": None}
    assert list(conv.checkpoint_filter_fn(vmamba)) == ["encoder.layers.0.blocks.0.norm.weight"]
