"""VGG16-FPN counting network of AutoScale (Sec 3.4, Fig. 2), regression and localization heads.

Layout (public reference code, docs/methods/autoscale.md):
  * Backbone: VGG16 conv1_1..conv4_3 with 3 max-pools (stride 8), then conv5 as 3 dilated (d=2)
    512 convs: :data:`crowdjax.models.vgg.VGG_PRESETS` ``"vgg16_stride8_dilated"``. The input is
    zero-padded by ``input_pad`` (8) px on each side, as the reference, so that every upsampled side
    output covers the image and is centre-cropped back to it.
  * Lateral 3x3 conv + ReLU on each used stage output (stages 2-5 for regression, 1-5 for
    localization; 32 / 24 channels), top-down path from stage 5: 1x1 conv -> 8 + ReLU, then a 4x4
    stride-2 transposed conv when the next stage has twice the resolution (none from 5 to 4, both
    stride 8), centre-cropped and concatenated with the lateral, ReLU.
  * Side outputs (deep supervision): 1x1 conv per level (1 channel for density, 11 logits for
    distance classes), bilinear ``align_corners=True`` upsampling by the level stride (PyTorch
    ``UpsamplingBilinear2d``), centre-crop to the image; fused by a 1x1 conv (4 -> 1 for
    regression, 55 -> 11 for localization). Output stride 1.
  * L2S feature: the levels resized the same way to ``feature_stride`` and concatenated
    (152 channels at width 1, as the reference ``scale_extract`` / ``feature``).

Departures (documented): no BatchNorm in the localization laterals / reductions (reference uses
BN with batch size 1), the localization backbone is the same VGG as regression (the reference
pads conv1 by 35 and inserts a stride-1 max-pool before conv5), head inits are N(0, 0.01) as the
reference for all 1x1/3x3 convs and PyTorch's default for the transposed convs.

``layout="official"`` removes the localization departures but BatchNorm, so that the official
checkpoint (github dk-liang/AutoScale, ``fpn.py``) imports exactly
(:mod:`crowdjax.models.published` folds its inference-mode BatchNorms into the convs): conv1
padded by 35 (an input pad of 34, then the usual 1), ceil-mode max-pools, a 2x2 stride-1 max-pool
(padding 1) before conv5 (so conv5 is one pixel larger than conv4), and no ReLU between a
top-down 1x1 reduction and its transposed conv. The regression network already is the official
one (github dk-liang/AutoScale_regression), so "official" changes nothing for the regression head.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers
from crowdjax.models.conv import Conv
from crowdjax.models.vgg import VGG, VGG_PRESETS, vgg_channels, vgg_stage_convs

HEADS = ("regression", "localization")
LAYOUTS = ("crowdjax", "official")
OFFICIAL_LOC_PAD = 34  # The official conv1_1 padding of 35 is an input pad of 34 plus the conv's 1.
LEVEL_STRIDES = {1: 1, 2: 2, 3: 4, 4: 8, 5: 8}  # stride of each VGG stage in the stride-8 layout


def _center_crop(x: jax.Array, out_hw) -> jax.Array:
    """Centre crop of [B, H, W, C] to out_hw, offset floor((H - h) / 2) as the reference."""
    h, w = x.shape[1:3]
    oh, ow = out_hw
    if h < oh or w < ow:
        raise ValueError(f"cannot crop {(h, w)} to {(oh, ow)}: increase input_pad")
    top, left = (h - oh) // 2, (w - ow) // 2
    return x[:, top : top + oh, left : left + ow]


def _to_stride(x: jax.Array, factor: float, out_hw) -> jax.Array:
    """Resamples a level by ``factor`` (align_corners bilinear up, mean-pool down), then crops."""
    if factor > 1:
        x = layers.resize_bilinear_align_corners(
            x, (x.shape[1] * int(factor), x.shape[2] * int(factor))
        )
    elif factor < 1:
        k = int(round(1 / factor))
        x = nn.avg_pool(x, (k, k), strides=(k, k))
    return _center_crop(x, out_hw)


class _OfficialLocalizationVGG(nn.Module):
    """VGG16 backbone of the official localization network (params named like :class:`VGG`).

    conv1 .. conv4 with ceil-mode 2x2 stride-2 max-pools, then a 2x2 stride-1 max-pool with
    padding 1 and conv5 dilated by 2. Input: [B, H, W, 3] already padded; returns the five stage
    outputs (before each pool), conv5 one pixel larger than conv4 on each axis.
    """

    width: float = 1.0
    input_convention: str = "imagenet"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> list[jax.Array]:
        convention = layers.get_input_convention(self.input_convention)
        x = convention.from_imagenet(images.astype(jnp.float32)).astype(self.dtype)
        stages = []
        for s, channels in enumerate(vgg_channels("vgg16", self.width)):
            if s in (1, 2, 3):
                x = layers.max_pool2d(x, window=2, stride=2, ceil_mode=True)
            elif s == 4:
                x = layers.max_pool2d(x, window=2, stride=1, padding=1)
            d = 2 if s == 4 else 1
            x = vgg_stage_convs(x, channels, stage=s, dilation=d, dtype=self.dtype)
            stages.append(x)
        return stages


class AutoScaleFPN(nn.Module):
    """VGG16-FPN of AutoScale with a regression (density) or localization (distance-class) head.

    Attributes:
      head: "regression" (Sec 3.4, a density map) or "localization" (Sec 3.5, distance classes).
      num_classes: distance classes N_c (11) for the "localization" head.
      width: channel multiplier of backbone and FPN (1/8 for tiny test models).
      lateral_channels: lateral conv width; None: 32 (regression) or 24 (localization).
      topdown_channels: top-down width (8).
      input_pad: zero padding of the input on each side, px (reference: 8).
      feature_stride: stride of the returned L2S feature (1 as the reference; 2, 4 or 8 save
        memory).
      layout: "crowdjax" or "official" (the official localization network, see the module doc;
        ``input_pad`` is then 34).
      input_convention: input the backbone weights expect (see :class:`crowdjax.models.vgg.VGG`).
      dtype: compute dtype; parameters and outputs are float32.
      remat: recompute the VGG stages' activations in the backward pass (`VGG.remat`; the
        "crowdjax" layout).
    """

    head: str = "regression"
    num_classes: int = 11
    width: float = 1.0
    lateral_channels: int | None = None
    topdown_channels: int = 8
    input_pad: int = 8
    feature_stride: int = 1
    layout: str = "crowdjax"
    input_convention: str = "imagenet"
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def levels(self) -> tuple[int, ...]:
        """VGG stages with a lateral branch and a side output."""
        return (2, 3, 4, 5) if self.head == "regression" else (1, 2, 3, 4, 5)

    def _conv(self, features, kernel, name, init=None):
        k = kernel
        return Conv(
            features,
            (k, k),
            padding=((k // 2, k // 2), (k // 2, k // 2)),
            kernel_init=init or nn.initializers.normal(0.01),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    def _upconv(self, features, fan_in, name):
        return nn.ConvTranspose(
            features,
            (4, 4),
            strides=(2, 2),
            padding="VALID",
            kernel_init=layers.torch_conv_kernel_init(),
            bias_init=layers.torch_conv_bias_init(fan_in),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )

    @nn.compact
    def __call__(self, images: jax.Array, *, return_features: bool = False) -> dict:
        """Predicts the full-resolution map.

        Args:
          images: [B, H, W, 3] ImageNet-normalised RGB.
          return_features: also return the L2S feature.

        Returns:
          A dict with
            "density": [B, H, W] float32 (head "regression"; count = sum), or
            "logits": [B, H, W, K] float32 (head "localization");
            "side_outputs": tuple over the levels (2-5 or 1-5) of maps shaped like the output
              (deep supervision);
            "features" (if ``return_features``): [B, H / s, W / s, C_f] float32, s =
              ``feature_stride`` (exact when H, W are multiples of 8).
        """
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if images.ndim != 4:
            raise ValueError(f"AutoScaleFPN expects [B, H, W, 3], got {tuple(images.shape)}")
        if self.feature_stride not in (1, 2, 4, 8):
            raise ValueError(f"feature_stride must be 1, 2, 4 or 8, got {self.feature_stride}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        official_loc = self.layout == "official" and self.head == "localization"
        h, w = images.shape[1:3]
        p = OFFICIAL_LOC_PAD if official_loc else self.input_pad
        x = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        if official_loc and self.remat:
            raise ValueError("model.remat: the official localization layout has no remat option")
        if official_loc:
            stages = _OfficialLocalizationVGG(
                width=self.width,
                input_convention=self.input_convention,
                dtype=self.dtype,
                name="backbone",
            )(x)
        else:
            backbone = VGG(
                **VGG_PRESETS["vgg16_stride8_dilated"],
                width=self.width,
                input_convention=self.input_convention,
                dtype=self.dtype,
                remat=self.remat,
                name="backbone",
            )
            _, stages = backbone(x, return_stages=True)
            stages = [stages[name] for name in backbone.stage_names]
        scale = lambda c: max(1, round(c * self.width))
        lateral = self.lateral_channels or (32 if self.head == "regression" else 24)
        out_channels = 1 if self.head == "regression" else self.num_classes

        pyramid = {}  # level -> FPN feature (after ReLU)
        above = None
        for level in reversed(self.levels):
            lat = nn.relu(self._conv(scale(lateral), 3, f"lateral{level}")(stages[level - 1]))
            if above is not None:
                top_level, top = above
                red = self._conv(scale(self.topdown_channels), 1, f"reduce{top_level}")(top)
                upsample = LEVEL_STRIDES[top_level] > LEVEL_STRIDES[level]
                if not (official_loc and upsample):  # The official up(rd(p)) has no ReLU.
                    red = nn.relu(red)
                if upsample:
                    red = self._upconv(red.shape[-1], red.shape[-1] * 16, f"up{top_level}")(red)
                lat = nn.relu(jnp.concatenate([lat, _center_crop(red, lat.shape[1:3])], axis=-1))
            pyramid[level] = lat
            above = (level, lat)

        sides = []
        for level in self.levels:
            side = self._conv(out_channels, 1, f"side{level}")(pyramid[level])
            sides.append(_to_stride(side.astype(jnp.float32), LEVEL_STRIDES[level], (h, w)))
        fused = self._conv(out_channels, 1, "fuse")(jnp.concatenate(sides, axis=-1))
        fused = fused.astype(jnp.float32)
        if self.head == "regression":
            out = {"density": fused[..., 0], "side_outputs": tuple(s[..., 0] for s in sides)}
        else:
            out = {"logits": fused, "side_outputs": tuple(sides)}
        if return_features:
            s = self.feature_stride
            feats = [
                _to_stride(pyramid[lv].astype(jnp.float32), LEVEL_STRIDES[lv] / s, (h // s, w // s))
                for lv in self.levels
            ]
            out["features"] = jnp.concatenate(feats, axis=-1)
        return out
