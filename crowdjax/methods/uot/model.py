"""Density regressor of Bayesian loss (Ma et al., ICCV 2019) used by UOT (Ma et al., AAAI 2021).

VGG19 with all 16 convs and 4 max-pools (stride 16; torchvision ``vgg19().features[:-1]``), bilinear
x2 upsampling with ``align_corners=True`` (stride 8; ``upsample="nearest"``: the nearest-neighbour
``F.interpolate(x, scale_factor=2)`` of the unofficial UOT code), then the regression head
conv3x3 512->256 + ReLU, conv3x3 256->128 + ReLU, conv1x1 128->1, and ``abs`` (or ReLU) so that the
density is non-negative.

Sizes: the pools floor odd sizes (PyTorch default), so an H x W image gives a
2 * floor(H / 16) x 2 * floor(W / 16) density map, exactly like the PyTorch reference. Only when H
and W are multiples of 16 is this H / 8 x W / 8, with output pixel (r, c) standing for the 8 x 8
input block centred at (8c + 4, 8r + 4) (the convention the UOT loss uses); crop or pad training
and evaluation images to multiples of 16.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers
from crowdjax.models.conv import Conv
from crowdjax.models.vgg import VGG


class UOTRegressor(nn.Module):
    """VGG19 density regressor (output stride 8) of Bayesian loss / UOT.

    Attributes:
      width: channel multiplier of backbone and head (1/8 for tiny test models).
      activation: "abs" (reference code, default) or "relu" for the final non-negativity.
      upsample: "bilinear" (Bayesian loss, DM-Count: ``align_corners=True``) or "nearest".
      input_convention: input the backbone weights expect (see :class:`crowdjax.models.vgg.VGG`).
      dtype: compute dtype (e.g. jnp.bfloat16); parameters and the returned density are float32.
      remat: recompute the backbone's activations in the backward pass (`VGG.remat`).
    """

    width: float = 1.0
    activation: str = "abs"
    upsample: str = "bilinear"
    input_convention: str = "imagenet"
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Predicts the density map.

        Args:
          images: [B, H, W, 3] ImageNet-normalised RGB (H, W multiples of 16, see the module doc).

        Returns:
          density: [B, 2 * floor(H / 16), 2 * floor(W / 16)] float32, non-negative, in persons per
          output pixel (the count is ``density.sum((1, 2))``).
        """
        if images.ndim != 4:
            raise ValueError(f"UOTRegressor expects [B, H, W, 3] images, got {tuple(images.shape)}")
        if self.activation not in ("abs", "relu"):
            raise ValueError(f"activation must be 'abs' or 'relu', got {self.activation!r}")
        if images.shape[1] < 16 or images.shape[2] < 16:  # Not min(): symbolic under export.
            raise ValueError(f"images must be at least 16 x 16 pixels, got {tuple(images.shape)}")
        x = VGG(
            arch="vgg19",
            stages=5,
            pools=(True, True, True, True, False),
            width=self.width,
            input_convention=self.input_convention,
            dtype=self.dtype,
            remat=self.remat,
            name="backbone",
        )(images)
        if self.upsample == "bilinear":
            x = layers.resize_bilinear_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]))
        elif self.upsample == "nearest":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        else:
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {self.upsample!r}")
        for name, c, k in (("reg_conv1", 256, 3), ("reg_conv2", 128, 3), ("reg_out", 1, 1)):
            c = 1 if c == 1 else max(1, round(c * self.width))
            fan_in = x.shape[-1] * k * k
            x = Conv(
                c,
                (k, k),
                padding=((k // 2, k // 2), (k // 2, k // 2)),
                # PyTorch default init, as in the reference head.
                kernel_init=layers.torch_conv_kernel_init(),
                bias_init=layers.torch_conv_bias_init(fan_in),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=name,
            )(x)
            if name != "reg_out":
                x = nn.relu(x)
        x = x[..., 0].astype(jnp.float32)
        return jnp.abs(x) if self.activation == "abs" else nn.relu(x)
