"""L2SM network: the scale-preserving network (SPN, Sec 3.2) and the learning-to-scale parts
(Sec 3.3), in one module so that the re-prediction shares SPN's features.

SPN. VGG16 with 3 pools (after stages 1-3; the pool between stages 4 and 5 and the last pool are
discarded: stride 8). A 3x3 conv (``pyramid_channels`` x width, ReLU) on the last layer of each of
the 5 stages; each adaptively average-pooled over the image's real pixels to 16^2, 8^2, 4^2, 2^2,
1^2 (torch bins); upsampled bilinearly (half-pixel) onto conv5's real cells and stacked with
conv5 (f_b): f_s. Three 3x3 convs (256, 128, 64 x width, ReLU) and one 4x4 stride-2
deconvolution regress the initial density D̂ at stride 4 (``OUTPUT_STRIDE``; linear output, as
CSRNet-style regressors: the count is the sum).

Scale map (L2SM). The five pooled maps resized to K x K (antialiased bilinear), concatenated, one
1x1 conv: ``r = min_scale + (max_scale - min_scale) * sigmoid(z)``. The parametrisation is ours
(the paper only needs r > 0): bounded, so the rescaled region fits a static canvas, and smooth;
the conv starts at zero weights and a bias that gives r = 1 (no zoom) for every region.

Re-prediction head (L2SM). Five convs (3x3: 128, 64, 32, 16 x width, ReLU; 1x1 to one channel)
on the rescaled f_b of a region (`crowdjax.models.rescale.affine_sample` onto a fixed canvas):
the re-predicted density at the canvas cells.

Entry points (``model.apply(variables, ..., method=...)``): ``__call__(images, size)`` ->
{"density", "features", "pooled"}; ``scale_map(pooled)`` -> r [B, K, K];
``repredict(canvas)`` -> [N, h_c, w_c]; ``init_all`` touches every part.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers, rescale
from crowdjax.models.conv import Conv
from crowdjax.models.vgg import VGG

OUTPUT_STRIDE = 4
PYRAMID = (16, 8, 4, 2, 1)  # pooled sizes of stages 1..5 (Sec 3.2)
STAGE_STRIDES = (1, 2, 4, 8, 8)


def _channels(c: int, width: float) -> int:
    return max(1, round(c * width))


def upsample_to_extent(x: jax.Array, extent: jax.Array, out_shape) -> jax.Array:
    """Bilinear upsampling of [B, n, m, C] onto the top-left ``extent`` [B, 2] cells of a
    [B, H, W, C] map (zero beyond): the pooled pyramid onto each image's real conv5 cells."""
    b, n, m, _ = x.shape
    h, w = out_shape
    zeros = jnp.zeros((b,), jnp.int32)
    wy = rescale.normalize_weights(
        rescale.triangle_weights(n, jnp.full((b,), n), h, zeros, extent[:, 0]), -1
    )
    wx = rescale.normalize_weights(
        rescale.triangle_weights(m, jnp.full((b,), m), w, zeros, extent[:, 1]), -1
    )
    return jnp.einsum("bhn,bnmc,bwm->bhwc", wy, x.astype(jnp.float32), wx).astype(x.dtype)


class L2SMNet(nn.Module):
    """SPN with the optional scale map and re-prediction head of L2SM.

    Attributes:
      width: channel multiplier (backbone and heads).
      pyramid_channels: channels of each stage's 3x3 conv before pooling (x width).
      regions: K of the K x K division.
      min_scale, max_scale: range of the learned scale ratios r.
      use_l2sm: build the scale map and the re-prediction head (False: SPN alone).
      input_convention: what the backbone weights expect.
      head_init: the initialisation of every conv but the backbone's and the scale map's,
        "default" (flax's) or "small" (`crowdjax.models.layers.head_initialisers`).
      dtype: compute dtype (parameters float32).
      remat: recompute the backbone's activations in the backward pass (`VGG.remat`).
    """

    width: float = 1.0
    pyramid_channels: int = 64
    regions: int = 4
    min_scale: float = 0.5
    max_scale: float = 3.0
    use_l2sm: bool = True
    input_convention: str = "imagenet"
    head_init: str = "default"
    dtype: Any = jnp.float32
    remat: bool = False

    def _inits(self) -> dict:
        kernel, bias = layers.head_initialisers(
            self.head_init, nn.initializers.lecun_normal(), nn.initializers.zeros
        )
        return {"kernel_init": kernel, "bias_init": bias}

    def _conv(self, c, k, name):
        return Conv(
            c,
            (k, k),
            padding=((k // 2, k // 2), (k // 2, k // 2)),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
            **self._inits(),
        )

    def setup(self):
        if not 0 < self.min_scale < 1 < self.max_scale:
            raise ValueError(
                f"the scale range must satisfy 0 < min_scale < 1 < max_scale, got "
                f"{(self.min_scale, self.max_scale)}"
            )
        self.backbone = VGG(
            arch="vgg16",
            stages=5,
            pools=(True, True, True, False, False),
            width=self.width,
            input_convention=self.input_convention,
            dtype=self.dtype,
            remat=self.remat,
        )
        pc = _channels(self.pyramid_channels, self.width)
        self.pyramid = [self._conv(pc, 3, f"pyramid{s + 1}") for s in range(5)]
        self.regress = [
            self._conv(_channels(c, self.width), 3, f"reg_conv{i + 1}")
            for i, c in enumerate((256, 128, 64))
        ]
        self.deconv = nn.ConvTranspose(
            1,
            (4, 4),
            strides=(2, 2),
            padding="SAME",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            **self._inits(),
        )
        if self.use_l2sm:
            start = (1.0 - self.min_scale) / (self.max_scale - self.min_scale)
            self.scale_conv = Conv(
                1,
                (1, 1),
                kernel_init=nn.initializers.zeros,
                bias_init=nn.initializers.constant(math.log(start / (1.0 - start))),
                param_dtype=jnp.float32,
            )
            self.repredict_convs = [
                self._conv(_channels(c, self.width), 3, f"repredict{i + 1}")
                for i, c in enumerate((128, 64, 32, 16))
            ] + [self._conv(1, 1, "repredict5")]

    def __call__(self, images: jax.Array, size: jax.Array | None = None) -> dict:
        """Initial prediction.

        Args:
          images: [B, H, W, 3] ImageNet-normalised RGB, H and W multiples of 8 (top-left real).
          size: [B, 2] int real (rows, cols) px of each image (default: the whole array).

        Returns:
          {"density": D̂ [B, H/4, W/4] float32, "features": f_b [B, H/8, W/8, C] (conv5),
           "pooled": the five pooled pyramid maps [B, n, n, C_p] (n = 16, 8, 4, 2, 1)}.
        """
        b, h, w = images.shape[:3]
        if h % 8 or w % 8:
            raise ValueError(f"L2SM needs image sides that are multiples of 8, got {(h, w)}")
        if size is None:
            size = jnp.tile(jnp.array([[h, w]], jnp.int32), (b, 1))
        f_b, stages = self.backbone(images, return_stages=True)
        pooled = []
        for conv, name, n, stride in zip(
            self.pyramid, self.backbone.stage_names, PYRAMID, STAGE_STRIDES, strict=True
        ):
            x = nn.relu(conv(stages[name]))
            extent = -(-size // stride)
            box = jnp.concatenate([jnp.zeros_like(extent), extent[:, ::-1]], axis=1)
            pooled.append(rescale.roi_adaptive_avg_pool(x, box, n).astype(self.dtype))
        cells = -(-size // 8)
        up = [upsample_to_extent(p, cells, f_b.shape[1:3]) for p in pooled]
        x = jnp.concatenate([f_b, *up], axis=-1)
        for conv in self.regress:
            x = nn.relu(conv(x))
        density = self.deconv(x)[..., 0].astype(jnp.float32)
        return {"density": density, "features": f_b, "pooled": tuple(pooled)}

    def scale_map(self, pooled) -> jax.Array:
        """Scale ratios r [B, K, K] in (min_scale, max_scale) from the pooled pyramid."""
        k = self.regions
        resized = [
            jax.image.resize(p.astype(jnp.float32), (p.shape[0], k, k, p.shape[-1]), "linear")
            for p in pooled
        ]
        z = self.scale_conv(jnp.concatenate(resized, axis=-1))[..., 0]
        return self.min_scale + (self.max_scale - self.min_scale) * jax.nn.sigmoid(z)

    def repredict(self, canvas: jax.Array) -> jax.Array:
        """Re-predicted density [N, h_c, w_c] of rescaled region features [N, h_c, w_c, C]."""
        x = canvas.astype(self.dtype)
        for conv in self.repredict_convs[:-1]:
            x = nn.relu(conv(x))
        return self.repredict_convs[-1](x)[..., 0].astype(jnp.float32)

    def init_all(self, images: jax.Array) -> dict:
        out = self(images)
        if self.use_l2sm:
            out["scale"] = self.scale_map(out["pooled"])
            out["repredicted"] = self.repredict(out["features"])
        return out
