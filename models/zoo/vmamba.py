"""VMamba image classifiers (MzeroMiko/VMamba ``VSSM``): the backbone of models/backbones/vmamba.py
with upstream's ImageNet head, for parameter / FLOP checks against the paper and for loading the
official classification checkpoints (``vssmtiny_dp01_ckpt_epoch_292.pth`` and siblings, a dict
with a ``model`` entry) with ``models.load_pretrained``, strictly and without renaming.

    classifier  LN(C_3) -> global average pool -> Linear(C_3 -> num_classes)
                (keys ``classifier.norm``, ``classifier.head`` as upstream)

These are not segmentation models and are not in the model registry (suites cannot train them);
build them with ``create_vmamba_classifier("tiny")`` or the ``vmamba_cls_<size>`` functions.

Measured (tests/models/test_vmamba.py): with the 1000-class head T / S / B have 22,893,448 /
44,417,416 / 76,254,056 parameters (paper 22.89M / 44.42M / 76.25M) and exactly the official
checkpoints' keys and shapes. GMACs at 224x224 (bench/reporting/zoo_report.py), scan not counted /
counted by VMamba's old ``flops_selective_scan_ref`` / by 9BLDN + BDL: T 3.71 / 4.46 / 5.63, S 7.74
/ 9.11 / 11.23, B 13.36 / 15.19 / 18.02 (computed from upstream, docs/models.md). v2: T [s2l5]
30.71M, 4.86G; B [s2l15] 88.56M, 15.36G (README 31M / 4.9G, 89M / 15.4G).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from models.backbones.vmamba import Permute, VMambaEncoder
from models.layers import trunc_normal_init_
from models.registry import PublishedFigures, register_published


class VMambaClassifier(VMambaEncoder):
    """``VSSM``: every stage and downsampling, then the classifier; ``forward(x) -> logits``."""

    def __init__(self, config: str = "tiny", num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float | None = None, **overrides):
        super().__init__(in_chans=in_chans, config=config, drop_path_rate=drop_path_rate,
                         out_norms=False, **overrides)
        dim = self.dims[-1]
        self.num_classes = num_classes
        self.classifier = nn.Sequential(OrderedDict(
            norm=nn.LayerNorm(dim), permute=Permute(0, 3, 1, 2), avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1), head=nn.Linear(dim, num_classes),
        ))
        self.classifier.apply(trunc_normal_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_tokens(x))


def create_vmamba_classifier(config: str = "tiny", **kwargs) -> VMambaClassifier:
    return VMambaClassifier(config, **kwargs)


_IMAGE_224 = {"image": (1, 3, 224, 224)}
_V0_SRC = "docs/models.md, 'VMamba' (VMamba v0 2024-02 checkpoints, 1000-class head)"
_V2_SRC = ("VMamba README (MzeroMiko/VMamba): v2 classification models, 1000-class head, "
           "figures rounded; configs vmambav2_{tiny,small,base}_224.yaml")


def _v0(system: str, params_m: float, gmacs: dict[str, float]) -> PublishedFigures:
    return PublishedFigures(system, inputs=_IMAGE_224, params_m=params_m, gmacs=gmacs,
                            source=_V0_SRC)


def _v2(system: str, params_m: float, gmacs_full: float) -> PublishedFigures:
    # the README's figures are rounded to 1M / 0.1G, hence 2 % tolerances
    return PublishedFigures(system, inputs=_IMAGE_224, params_m=params_m,
                            gmacs={"full": gmacs_full}, source=_V2_SRC, tol_params=0.02,
                            tol_flops=0.02)


@register_published(_v0("VMamba-T", 22.89, {"published": 3.71, "ref": 4.46, "full": 5.63}))
def vmamba_cls_tiny(**kwargs) -> VMambaClassifier:
    """VMamba-T v0 (vssm_tiny_224): 22.89M parameters, 82.2% top-1."""
    return VMambaClassifier("tiny", **kwargs)


@register_published(_v0("VMamba-S", 44.42, {"published": 7.74, "ref": 9.11, "full": 11.23}))
def vmamba_cls_small(**kwargs) -> VMambaClassifier:
    """VMamba-S v0 (vssm_small_224): 44.42M parameters, 83.5% top-1."""
    return VMambaClassifier("small", **kwargs)


@register_published(_v0("VMamba-B", 76.25, {"published": 13.36, "ref": 15.19, "full": 18.02}))
def vmamba_cls_base(**kwargs) -> VMambaClassifier:
    """VMamba-B v0 (vssm_base_224): 76.25M parameters, 83.7% top-1."""
    return VMambaClassifier("base", **kwargs)


@register_published(_v2("VMamba-T v2 [s2l5]", 31.0, 4.9))
def vmamba_cls_v2_tiny(**kwargs) -> VMambaClassifier:
    """VMamba-T v2 [s2l5] (vmambav2_tiny_224): README 31M parameters, 4.9G, 82.5% top-1."""
    return VMambaClassifier("v2_tiny", **kwargs)


@register_published(_v2("VMamba-S v2 [s2l15]", 50.0, 8.7))
def vmamba_cls_v2_small(**kwargs) -> VMambaClassifier:
    """VMamba-S v2 [s2l15] (vmambav2_small_224): README 50M parameters, 8.7G, 83.6% top-1."""
    return VMambaClassifier("v2_small", **kwargs)


@register_published(_v2("VMamba-B v2 [s2l15]", 89.0, 15.4))
def vmamba_cls_v2_base(**kwargs) -> VMambaClassifier:
    """VMamba-B v2 [s2l15] (vmambav2_base_224, ``vssm_base_0229``): README 89M, 15.4G, 83.9%."""
    return VMambaClassifier("v2_base", **kwargs)
