"""Shared backbones, layers and ImageNet weight importers (Flax linen, NHWC).

Method-specific networks live with their method in `crowdjax.methods.<name>`.
"""

from crowdjax.models.importers import (
    HED,
    VGGWeights,
    fill_vgg_params,
    hed_weights_path,
    input_convention_for_file,
    load_pretrained,
    read_vgg_weights,
    resolve_weights_path,
    vgg16_as_vgg19,
)
from crowdjax.models.layers import (
    INPUT_CONVENTIONS,
    InputConvention,
    get_input_convention,
    max_pool2d,
    resize_bilinear_align_corners,
)
from crowdjax.models.vgg import (
    VGG,
    VGG_PRESETS,
    vgg_channels,
    vgg_conv_names,
    vgg_from_preset,
    vgg_stage_names,
)

__all__ = [
    "HED",
    "INPUT_CONVENTIONS",
    "VGG",
    "VGG_PRESETS",
    "InputConvention",
    "VGGWeights",
    "fill_vgg_params",
    "get_input_convention",
    "hed_weights_path",
    "input_convention_for_file",
    "load_pretrained",
    "max_pool2d",
    "read_vgg_weights",
    "resize_bilinear_align_corners",
    "resolve_weights_path",
    "vgg16_as_vgg19",
    "vgg_channels",
    "vgg_conv_names",
    "vgg_from_preset",
    "vgg_stage_names",
]
