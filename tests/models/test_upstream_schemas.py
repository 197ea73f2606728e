"""Upstream checkpoint key schemas (tests/fixtures/state_dicts/upstream_state_dicts_more.json,
made by instantiating each upstream repository's own classes) loaded strictly, through the
model's ``checkpoint_filter_fn``, into ssmbench's paper-size model built on the meta device.

Each schema covers what its upstream code defines; the model's keys that it does not cover are
named here, per system, with the reason (the entry's ``_note``): Mamba-Diffusion's neck and
heads (not built from upstream code), ReMamber's CLIP text model (not stored), MS2MNet's VFE,
ASAF and DFE (used but never defined by the release: ssmbench's reconstructions). Sigma and
VMamba v0 are checked in test_sigma.py / test_vmamba.py against official_state_dicts.json.
"""
import json
from pathlib import Path

import pytest
import torch

import models

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "state_dicts"

CASES = {  # entry: (model, kwargs, prefixes of our keys the schema does not cover, key count)
    "samba_upernet_loveda": ("samba", dict(size="base", num_classes=7), (), 428),
    "ms2mnet_vaihingen": ("ms2mnet", dict(size="base", num_classes=6),
                          ("fusion.vfe.", "head.fuse1.", "head.fuse2.", "head.fuse3.", "dfe."),
                          1097),
    "mamba_diffusion_whu_backbone": ("mamba_diffusion", dict(size="base", num_classes=7),
                                     ("head.", "aux_head."), 1572),
    "remamber_conv": ("remamber", dict(size="base", head="conv"), ("text_encoder.",), 684),
    "remamber_mamba": ("remamber", dict(size="base", head="mamba"), ("text_encoder.",), 834),
}


@pytest.fixture(scope="module")
def schemas():
    return json.loads((SCHEMAS / "upstream_state_dicts_more.json").read_text())


@pytest.mark.parametrize("entry", list(CASES))
def test_upstream_schema_loads_strictly(schemas, entry):
    name, kwargs, uncovered, count = CASES[entry]
    schema = {k: v for k, v in schemas[entry].items() if not k.startswith("_")}
    assert len(schema) == count
    with torch.device("meta"):
        model = models.create_model(name, **kwargs)
    upstream = {k: torch.empty(shape, device="meta") for k, shape in schema.items()}
    mapped = model.checkpoint_filter_fn(upstream, model)
    own = model.state_dict()
    unexpected = sorted(set(mapped) - set(own))
    assert not unexpected, unexpected[:10]
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in mapped.items()
             if v.shape != own[k].shape]
    assert not wrong, wrong[:10]
    missing = sorted(set(own) - set(mapped))
    assert all(k.startswith(uncovered) for k in missing), [
        k for k in missing if not k.startswith(uncovered)][:10]
    for prefix in uncovered:  # each named gap is real: the model has keys there
        assert any(k.startswith(prefix) for k in missing), prefix
    # the strict load itself: the schema's tensors plus our own for the named gaps
    state = {**{k: own[k] for k in missing}, **mapped}
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_ms2mnet_filter_drops_the_unused_layer4_and_keeps_unreleased_names(schemas):
    """Upstream saves the ResNet streams' layer4 (never run; ours stops after layer3): dropped.
    Tensors of the unreleased modules keep their upstream names, so a strict load of a real
    checkpoint names them instead of guessing their layout."""
    with torch.device("meta"):
        model = models.create_model("ms2mnet", size="base", num_classes=6)
    schema = schemas["ms2mnet_vaihingen"]
    layer4 = [k for k in schema if ".layer4." in k]
    assert len(layer4) == 120  # 2 streams x 60 tensors (3 bottlenecks + downsample)
    state = {"vfeBlock1.proj.weight": torch.empty(3, device="meta"),
             **{k: torch.empty(schema[k], device="meta") for k in layer4}}
    mapped = model.checkpoint_filter_fn(state, model)
    assert list(mapped) == ["vfeBlock1.proj.weight"]
    own = {k: v for k, v in model.state_dict().items()}
    assert model.checkpoint_filter_fn(own, model).keys() == own.keys()  # ours pass unchanged
