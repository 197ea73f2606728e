"""Building blocks shared by the backbones, fusion modules and heads (timm's ``timm/layers``
idea): one definition each, with the parameter names the upstream checkpoints expect."""
from models.layers.attention import ASAF, ImageTextCorr, SpatialAttention
from models.layers.conv import MMCV_NAMES, ConvNormAct
from models.layers.drop import DropPath
from models.layers.mlp import Mlp
from models.layers.weight_init import fan_out_normal_, kaiming_fan_out_, trunc_normal_init_

__all__ = ["ASAF", "MMCV_NAMES", "ConvNormAct", "DropPath", "ImageTextCorr", "Mlp",
           "SpatialAttention", "fan_out_normal_", "kaiming_fan_out_", "trunc_normal_init_"]
