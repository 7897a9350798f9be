"""VGG16 / VGG19 feature extractors (Simonyan & Zisserman, 2015) as Flax linen modules.

One module, :class:`VGG`, covers the backbones of all methods through a small per-stage config:
``stages`` (how many of the 5 conv stages to run), ``pools`` (a 2x2 max-pool after which stage) and
``dilations`` (dilation of the 3x3 convs of each stage). Parameters are named like the layers of the
paper, ``conv{stage}_{index}`` (e.g. ``conv4_3``), each ``{"kernel": [3, 3, C_in, C_out] (HWIO),
"bias": [C_out]}``; the importers in :mod:`crowdjax.models.importers` fill them from torchvision and
Keras files. See :data:`VGG_PRESETS` for the layouts the methods use.

Input: ``images: [B, H, W, 3]`` normalised the project's way (RGB, /255, ImageNet mean/std). A
backbone with weights that expect another input (Keras / HED: Caffe BGR 0-255 minus mean) sets
``input_convention`` and converts inside the module, exactly (see :class:`InputConvention`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers
from crowdjax.models.conv import Conv

# Output channels of the convs of each stage (torchvision cfg "D" and "E").
VGG_STAGES = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}

# Backbone layouts of the methods (keyword arguments of VGG).
VGG_PRESETS: dict[str, dict[str, Any]] = {
    # Bayesian loss / UOT: torchvision vgg19.features[:-1]: 16 convs, 4 pools, stride 16.
    "vgg19_stride16": dict(arch="vgg19", stages=5, pools=(True, True, True, True, False)),
    # ASNet generator: 13 convs, 4 pools, stride 16.
    "vgg16_stride16": dict(arch="vgg16", stages=5, pools=(True, True, True, True, False)),
    # CSRNet-style front end: conv1_1..conv4_3, 3 pools, stride 8.
    "vgg16_conv4_stride8": dict(arch="vgg16", stages=4, pools=(True, True, True, False)),
    # AutoScale / L2SM: pool 4 and pool 5 removed, conv5 dilated by 2, stride 8.
    "vgg16_stride8_dilated": dict(
        arch="vgg16", stages=5, pools=(True, True, True, False, False), dilations=(1, 1, 1, 1, 2)
    ),
}


def vgg_channels(arch: str, width: float = 1.0) -> tuple[tuple[int, ...], ...]:
    """Conv output channels per stage, scaled by ``width`` (e.g. 1/8 -> 8, 16, 32, 64, 64)."""
    if arch not in VGG_STAGES:
        raise ValueError(f"unknown VGG arch {arch!r}; valid: {sorted(VGG_STAGES)}")
    return tuple(tuple(max(1, round(c * width)) for c in stage) for stage in VGG_STAGES[arch])


def vgg_conv_names(arch: str, stages: int = 5) -> tuple[str, ...]:
    """Names of the convs of the first ``stages`` stages in order: conv1_1, conv1_2, conv2_1, ..."""
    return tuple(
        f"conv{s + 1}_{i + 1}"
        for s, stage in enumerate(VGG_STAGES[arch][:stages])
        for i in range(len(stage))
    )


def vgg_stage_names(arch: str, stages: int = 5) -> tuple[str, ...]:
    """Name of the last conv of each stage: vgg16 conv1_2, conv2_2, conv3_3, conv4_3, conv5_3."""
    return tuple(f"conv{s + 1}_{len(st)}" for s, st in enumerate(VGG_STAGES[arch][:stages]))


def vgg_stage_convs(x: jax.Array, channels, *, stage: int, dilation: int, dtype) -> jax.Array:
    """One VGG stage inside a compact module: 3x3 convs (+ ReLU) of `channels`, dilated and
    padded by `dilation`, named "conv{stage + 1}_{i + 1}" as the importers expect."""
    d = dilation
    for i, c in enumerate(channels):
        x = Conv(
            c,
            (3, 3),
            padding=((d, d), (d, d)),
            kernel_dilation=(d, d),
            kernel_init=layers.vgg_kernel_init,
            dtype=dtype,
            param_dtype=jnp.float32,
            name=f"conv{stage + 1}_{i + 1}",
        )(x)
        x = nn.relu(x)
    return x


def _stage(module: nn.Module, x: jax.Array, **kwargs) -> jax.Array:
    """`vgg_stage_convs` as a function transform's target: its convs are `module`'s children,
    named as without the transform."""
    del module
    return vgg_stage_convs(x, **kwargs)


class VGG(nn.Module):
    """VGG feature extractor: 3x3 conv + ReLU stages with optional 2x2 max-pools.

    Attributes:
      arch: "vgg16" (13 convs) or "vgg19" (16 convs).
      stages: number of conv stages to run, 1..5.
      pools: per stage, whether a 2x2 stride-2 max-pool follows it; length ``stages``. None: after
        every stage but the last (torchvision ``features[:-1]`` for 5 stages).
      dilations: per stage, dilation (= padding) of its 3x3 convs; None: all 1.
      width: channel multiplier (1/8 gives 8, 16, 32, 64, 64 channels) for tiny models.
      ceil_mode: PyTorch ``MaxPool2d(ceil_mode=True)`` (odd sizes round up).
      input_convention: the input the weights expect, converted from the ImageNet-normalised RGB
        input inside the module: "imagenet" (no-op), "caffe" (Keras), "caffe_hed" (HED).
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
      remat: recompute each stage's activations in the backward pass instead of keeping them
        (`nn.remat`, i.e. `jax.checkpoint`, on each stage): less memory, one more forward pass.
        The parameters and the numbers are the same.
    """

    arch: str = "vgg16"
    stages: int = 5
    pools: tuple[bool, ...] | None = None
    dilations: tuple[int, ...] | None = None
    width: float = 1.0
    ceil_mode: bool = False
    input_convention: str = "imagenet"
    dtype: Any = jnp.float32
    remat: bool = False

    def _layout(self) -> tuple[tuple[bool, ...], tuple[int, ...]]:
        if not 1 <= self.stages <= 5:
            raise ValueError(f"stages must be in 1..5, got {self.stages}")
        pools = self.pools
        if pools is None:
            pools = (True,) * (self.stages - 1) + (False,)
        dilations = self.dilations if self.dilations is not None else (1,) * self.stages
        if len(pools) != self.stages or len(dilations) != self.stages:
            raise ValueError(
                f"pools {pools} and dilations {dilations} need one entry per stage "
                f"(stages={self.stages})"
            )
        return tuple(bool(p) for p in pools), tuple(int(d) for d in dilations)

    @property
    def stride(self) -> int:
        """Output stride of the final features (2 ** number of pools)."""
        return 2 ** sum(self._layout()[0])

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Keys of the stage outputs returned with ``return_stages=True``."""
        return vgg_stage_names(self.arch, self.stages)

    @nn.compact
    def __call__(self, images: jax.Array, *, return_stages: bool = False):
        """Runs the backbone.

        Args:
          images: [B, H, W, 3] ImageNet-normalised RGB images.
          return_stages: also return every stage's last conv output (before its pool).

        Returns:
          features: [B, H / stride, W / stride, C] (pools floor odd sizes unless ``ceil_mode``).
          If ``return_stages``: ``(features, stages)``, ``stages`` a dict from the stage names
          (e.g. "conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3") to [B, H_s, W_s, C_s].
        """
        if images.ndim != 4:
            raise ValueError(f"VGG expects images: [B, H, W, C], got shape {tuple(images.shape)}")
        pools, dilations = self._layout()
        convention = layers.get_input_convention(self.input_convention)
        x = convention.from_imagenet(images.astype(jnp.float32)).astype(self.dtype)
        outputs = {}
        channels = vgg_channels(self.arch, self.width)
        for s in range(self.stages):
            d = dilations[s]
            stage = functools.partial(
                _stage, channels=channels[s], stage=s, dilation=d, dtype=self.dtype
            )
            x = (nn.remat(stage) if self.remat else stage)(self, x)
            outputs[f"conv{s + 1}_{len(channels[s])}"] = x
            if pools[s]:
                x = layers.max_pool2d(x, window=2, stride=2, ceil_mode=self.ceil_mode)
        return (x, outputs) if return_stages else x


def vgg_from_preset(name: str, **overrides) -> VGG:
    """Builds a :class:`VGG` from :data:`VGG_PRESETS` (overrides e.g. ``width``, ``dtype``)."""
    if name not in VGG_PRESETS:
        raise ValueError(f"unknown VGG preset {name!r}; valid: {sorted(VGG_PRESETS)}")
    return VGG(**{**VGG_PRESETS[name], **overrides})
