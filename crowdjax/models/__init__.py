"""Backbones, heads and ImageNet weight importers (Flax linen, NHWC)."""

from crowdjax.models.importers import (
    VGGWeights,
    fill_vgg_params,
    hed_weights_path,
    input_convention_for_file,
    load_bayesian_regressor,
    load_pretrained,
    read_vgg_weights,
)
from crowdjax.models.layers import (
    INPUT_CONVENTIONS,
    InputConvention,
    get_input_convention,
    max_pool2d,
    resize_bilinear_align_corners,
)
from crowdjax.models.uot_regressor import UOTRegressor, uot_output_shape
from crowdjax.models.vgg import (
    VGG,
    VGG_PRESETS,
    vgg_channels,
    vgg_conv_names,
    vgg_from_preset,
    vgg_stage_names,
)

__all__ = [
    "INPUT_CONVENTIONS",
    "VGG",
    "VGG_PRESETS",
    "InputConvention",
    "UOTRegressor",
    "VGGWeights",
    "fill_vgg_params",
    "get_input_convention",
    "hed_weights_path",
    "input_convention_for_file",
    "load_bayesian_regressor",
    "load_pretrained",
    "max_pool2d",
    "read_vgg_weights",
    "resize_bilinear_align_corners",
    "uot_output_shape",
    "vgg_channels",
    "vgg_conv_names",
    "vgg_from_preset",
    "vgg_stage_names",
]
