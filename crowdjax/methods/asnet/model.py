"""ASNet's networks (Zou et al., ACM MM 2021, supplementary Tables 8-9).

* Generator G (Table 8): VGG16's 13 convs with 4 max-pools (stride 16), then 3x3 convs dilated by
  4 with 256 and 64 channels (ReLU) and a 3x3 conv to 1 channel (no activation, as the table);
  `pools=3` drops the 4th pool (stride 8, CSRNet's back-end geometry). The map is then bilinearly
  upsampled to `map_stride` (1 = the input resolution): the discriminators' patches need room
  (Table 9 shrinks a side by 16), and the scores of Eq. 6 are "compatible with the input image".
* Discriminators D1 (global) and D2 (local) (Table 9): four 4x4 stride-2 convs (64, 128, 256,
  512; padding 1) with LeakyReLU, then a 4x4 stride-1 conv (padding 2) to one logit per output
  pixel; the sigmoid is applied by the losses (`crowdjax.losses.domain_bce`). A side of n pixels
  gives floor(n / 16) + 1 outputs; inputs need sides of at least 16.

Parameters are grouped by their first key: "generator", "d1", "d2" (the optimizer groups).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.losses.adversarial import split_patches
from crowdjax.models import layers
from crowdjax.models.conv import Conv
from crowdjax.models.vgg import VGG

DISCRIMINATOR_CHANNELS = (64, 128, 256, 512)
MIN_DISCRIMINATOR_SIDE = 16  # Four stride-2 convs: a 15-px side would vanish.


def _conv(features, kernel, *, fan_in, strides=1, padding, dilation=1, dtype, name, init="default"):
    kernel_init, bias_init = layers.head_initialisers(
        init,
        layers.torch_conv_kernel_init(),
        layers.torch_conv_bias_init(fan_in),
        output=name == "output",
    )
    return Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((padding, padding), (padding, padding)),
        kernel_dilation=(dilation, dilation),
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class Generator(nn.Module):
    """Density generator G: [B, H, W, 3] images -> [B, H / map_stride, W / map_stride] maps.

    Attributes:
      width: channel multiplier (backbone, back-end; ASNet scales the discriminators by it too).
      pools: 4 (Table 8, stride 16) or 3 (stride 8).
      map_stride: stride of the returned map (divides the network's stride); 1 = input size.
      activation: "none" (Table 8), "relu" or "abs" on the output.
      input_convention: input the backbone weights expect (`crowdjax.models.vgg.VGG`).
      head_init: the back-end's initialisation, "default" (PyTorch's) or "small" (the
        output conv at zero: `crowdjax.models.layers.head_initialisers`).
      remat: recompute the backbone's activations in the backward pass (`VGG.remat`).
    """

    width: float = 1.0
    pools: int = 4
    map_stride: int = 1
    activation: str = "none"
    input_convention: str = "imagenet"
    head_init: str = "default"
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def network_stride(self) -> int:
        return 2**self.pools

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if self.pools not in (3, 4):
            raise ValueError(f"model.pools must be 4 (Table 8) or 3, got {self.pools}")
        if self.activation not in ("none", "relu", "abs"):
            raise ValueError(f"model.activation must be none/relu/abs, got {self.activation!r}")
        stride = self.network_stride
        if self.map_stride < 1 or stride % self.map_stride:
            raise ValueError(f"map_stride {self.map_stride} must divide the stride {stride}")
        h, w = images.shape[1:3]
        if h % stride or w % stride:
            raise ValueError(f"images must have sides divisible by {stride}, got {h} x {w}")
        x = VGG(
            arch="vgg16",
            stages=5,
            pools=(True,) * self.pools + (False,) * (5 - self.pools),
            width=self.width,
            input_convention=self.input_convention,
            dtype=self.dtype,
            remat=self.remat,
            name="backbone",
        )(images)
        for name, c in (("dilated1", 256), ("dilated2", 64)):
            fan_in = x.shape[-1] * 9
            c = _scaled(c, self.width)
            x = _conv(
                c,
                3,
                fan_in=fan_in,
                padding=4,
                dilation=4,
                dtype=self.dtype,
                name=name,
                init=self.head_init,
            )(x)
            x = nn.relu(x)
        fan_in = x.shape[-1] * 9
        x = _conv(
            1, 3, fan_in=fan_in, padding=1, dtype=self.dtype, name="output", init=self.head_init
        )(x)
        x = x[..., 0].astype(jnp.float32)
        if self.map_stride != stride:
            shape = (x.shape[0], h // self.map_stride, w // self.map_stride)
            x = jax.image.resize(x, shape, method="bilinear")
        if self.activation == "relu":
            return nn.relu(x)
        return jnp.abs(x) if self.activation == "abs" else x


class Discriminator(nn.Module):
    """Table 9: [N, h, w] density maps -> [N, floor(h/16) + 1, floor(w/16) + 1] logits."""

    width: float = 1.0
    leaky_slope: float = 0.2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, maps: jax.Array) -> jax.Array:
        if min(maps.shape[1:3]) < MIN_DISCRIMINATOR_SIDE:
            raise ValueError(
                f"discriminator inputs need sides of at least {MIN_DISCRIMINATOR_SIDE} px, got "
                f"{tuple(maps.shape[1:3])}: lower model.map_stride or asnet.patches, or use "
                "larger crops"
            )
        x = maps[..., None].astype(self.dtype)
        for i, c in enumerate(DISCRIMINATOR_CHANNELS):
            fan_in = x.shape[-1] * 16
            c = _scaled(c, self.width)
            x = _conv(
                c, 4, fan_in=fan_in, strides=2, padding=1, dtype=self.dtype, name=f"conv{i + 1}"
            )(x)
            x = nn.leaky_relu(x, self.leaky_slope)
        x = _conv(1, 4, fan_in=x.shape[-1] * 16, padding=2, dtype=self.dtype, name="output")(x)
        return x[..., 0].astype(jnp.float32)


class ASNet(nn.Module):
    """The generator and the two discriminators, one parameter tree.

    `__call__(images)` is G; `global_logits(maps)` is D1 on [B, H, W] maps -> [B, h1, w1];
    `local_logits(maps)` is D2 on their S x S patches -> [B, S, S, h2, w2].
    """

    width: float = 1.0
    pools: int = 4
    map_stride: int = 1
    activation: str = "none"
    patches: int = 4
    leaky_slope: float = 0.2
    input_convention: str = "imagenet"
    head_init: str = "default"
    dtype: Any = jnp.float32
    remat: bool = False  # The generator's backbone (`Generator.remat`).

    def setup(self):
        self.generator = Generator(
            width=self.width,
            pools=self.pools,
            map_stride=self.map_stride,
            activation=self.activation,
            input_convention=self.input_convention,
            head_init=self.head_init,
            dtype=self.dtype,
            remat=self.remat,
        )
        self.d1 = Discriminator(width=self.width, leaky_slope=self.leaky_slope, dtype=self.dtype)
        self.d2 = Discriminator(width=self.width, leaky_slope=self.leaky_slope, dtype=self.dtype)

    def __call__(self, images):
        return self.generator(images)

    def global_logits(self, maps):
        return self.d1(maps)

    def local_logits(self, maps):
        patches = split_patches(maps, self.patches)
        b, s, _, h, w = patches.shape
        logits = self.d2(patches.reshape(b * s * s, h, w))
        return logits.reshape(b, s, s, *logits.shape[1:])

    def init_all(self, images):
        maps = self.generator(images)
        return self.global_logits(maps), self.local_logits(maps)
