"""HRNet (Wang et al., TPAMI 2020) truncated after stage 3, as in DKPNet (Chen et al., ICCV 2021).

:class:`HRNetStage3` is the ImageNet classification HRNet (``cls_hrnet`` of
HRNet-Image-Classification, timm's ``hrnet_w40``) with stage 4, transition 3 and the
classification head removed, and DKPNet's feature head in their place (the baseline
``net/HRNet/hrnet_aspp_relu.py`` of DKPNet):

* stem: two 3x3 stride-2 convs (``stem_channels``), each BN + ReLU: stride 4;
* layer1: ``blocks`` Bottlenecks (``layer1_planes``, expansion 4 -> ``4 * layer1_planes``
  channels), the first with a 1x1 conv + BN shortcut;
* transition1: branch 0 a 3x3 conv + BN + ReLU to ``branch_channels[0]`` (absent when the
  channels already match, as in the official code), branch 1 a 3x3 stride-2 conv + BN + ReLU to
  ``branch_channels[1]``;
* stage2: one high-resolution module with 2 branches;
* transition2: branches 0 and 1 pass through unchanged (``transition2[0]``, ``[1]`` are None in
  the official code: the channels match), branch 2 is a 3x3 stride-2 conv + BN + ReLU from
  branch 1 to ``branch_channels[2]``;
* stage3: ``stage3_modules`` high-resolution modules with 3 branches (multi-scale output).

A high-resolution module runs ``blocks`` BasicBlocks on each branch, then fuses: output ``i`` is
``relu(sum_j f_ij(x_j))`` with ``f_ii`` the identity, ``f_ij`` (j > i) a 1x1 conv + BN followed by
a nearest upsampling to branch ``i``'s size, and ``f_ij`` (j < i) ``i - j`` 3x3 stride-2 convs,
each with BN, ReLU between them (not after the last).

Output (DKPNet): ``concat([x0, up(x1), up(x2), layer1], channels)`` in that order, at stride 4,
where ``x_k`` are stage 3's branches and ``up`` is a bilinear resize (``align_corners=False``) to
branch 0's size: ``sum(branch_channels) + 4 * layer1_planes`` channels (40 + 80 + 160 + 256 = 536
for W40, :func:`hrnet_out_channels`).

Resize rules:

* Fuse upsampling: PyTorch uses ``nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")``,
  i.e. output pixel ``d`` copies input pixel ``d // s`` and the size is ``s * n``. Here the
  upsampling goes to the exact size of the target branch with PyTorch's ``F.interpolate(size=...,
  mode="nearest")`` rule, source ``floor(d * n_in / n_out)`` (:func:`resize_nearest`): the same
  pixels whenever the sizes divide (every input whose size is a multiple of 16; the sizes are
  ``ceil`` halvings), and still defined for other sizes, where ``s * n`` overshoots the target
  (e.g. H = 70: branches 18, 9, 5 and 4 * 5 = 20 != 18) and the official model fails on the
  addition.
* Final resize: DKPNet uses ``F.interpolate(x, size=(h0, w0), mode="bilinear",
  align_corners=False)``: :func:`resize_bilinear` implements that rule exactly (half-pixel
  centres, source clamped at 0, no antialiasing).

Parameter names (flax module path -> official / timm state-dict module, see
:mod:`crowdjax.models.hrnet_import`, which maps them):

=================================================  ==============================================
``stem_conv1``, ``stem_bn1``, ``stem_conv2``,      ``conv1``, ``bn1``, ``conv2``, ``bn2``
``stem_bn2``
``layer1_{b}/{conv1,bn1,conv2,bn2,conv3,bn3}``     ``layer1.{b}.{conv1,...}``
``layer1_0/downsample_conv``, ``downsample_bn``    ``layer1.0.downsample.0``, ``.1``
``transition1_0/{conv,bn}``                        ``transition1.0.{0,1}``
``transition1_1/{conv,bn}``                        ``transition1.1.0.{0,1}``
``transition2_2/{conv,bn}``                        ``transition2.2.0.{0,1}``
``stage{s}_{m}/branch{i}_block{k}/{conv1,...}``    ``stage{s}.{m}.branches.{i}.{k}.{conv1,...}``
``stage{s}_{m}/fuse_{i}_{j}/{conv,bn}`` (j > i)    ``stage{s}.{m}.fuse_layers.{i}.{j}.{0,1}``
``stage{s}_{m}/fuse_{i}_{j}/down{k}/{conv,bn}``    ``stage{s}.{m}.fuse_layers.{i}.{j}.{k}.{0,1}``
(j < i)
=================================================  ==============================================

Convs carry ``kernel`` [kh, kw, C_in, C_out] (HWIO, no bias: every HRNet conv has
``bias=False``); BNs are :class:`~crowdjax.models.batch_norm.MaskedBatchNorm` (params ``scale``,
``bias``; batch_stats ``mean``, ``var``), all given ``train`` and the real-pixel ``mask``. Input:
``[B, H, W, 3]`` ImageNet-normalised RGB (/255, mean/std), as the ImageNet weights expect.

Differences from the references: BN momentum defaults to 0.1 (official HRNet; DKPNet's copy uses
0.01, set ``bn_momentum=0.01`` for that) in PyTorch's convention; the running variance is the
biased batch variance (see :mod:`crowdjax.models.batch_norm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from crowdjax.models.batch_norm import MaskedBatchNorm
from crowdjax.models.conv import Conv
from crowdjax.models.layers import is_constant_size

# Official HRNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
hrnet_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BOTTLENECK_EXPANSION = 4


def hrnet_out_channels(
    branch_channels: Sequence[int] = (40, 80, 160), layer1_planes: int = 64
) -> int:
    """Channels of :class:`HRNetStage3`'s output: the branches plus layer1 (536 for W40)."""
    return int(sum(branch_channels)) + BOTTLENECK_EXPANSION * int(layer1_planes)


# ----------------------------------------------------------------------------------------------
# Resizing with PyTorch's rules.


def _check_resize(x, shape, name):
    if x.ndim != 4:
        raise ValueError(f"{name} expects x: [B, H, W, C], got shape {tuple(x.shape)}")
    if len(shape) != 2 or not all(_positive(s) for s in shape):
        raise ValueError(f"shape must be (H_out, W_out) of positive ints, got {tuple(shape)}")


def _positive(n) -> bool:
    # A symbolic size (`jax.export` with a polymorphic height or width) is at least 1.
    return not is_constant_size(n) or int(n) >= 1


def _sizes(shape) -> tuple:
    """(H_out, W_out) as ints, or as they are where symbolic."""
    return tuple(int(s) if is_constant_size(s) else s for s in shape)


def _as_int32(n) -> jax.Array:
    """A size, constant or symbolic, as an int32 scalar for index arithmetic."""
    return jnp.asarray(n, jnp.int32)


def resize_nearest(x: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Nearest resize = ``F.interpolate(x, size=shape, mode="nearest")``.

    Output pixel ``d`` copies input pixel ``min(floor(d * n_in / n_out), n_in - 1)`` (computed in
    integers); for ``n_out = s * n_in`` that is ``d // s``, ``nn.Upsample(scale_factor=s)``.

    Args:
      x: [B, H_in, W_in, C].
      shape: (H_out, W_out).

    Returns:
      [B, H_out, W_out, C], x's dtype.
    """
    _check_resize(x, shape, "resize_nearest")
    for axis, n_out in zip((1, 2), _sizes(shape), strict=True):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        if is_constant_size(n_in) and is_constant_size(n_out):
            src = np.minimum((np.arange(n_out) * n_in) // n_out, n_in - 1)
        else:  # The same integers from the traced sizes.
            dst = jnp.arange(n_out, dtype=jnp.int32)
            src = jnp.minimum((dst * _as_int32(n_in)) // _as_int32(n_out), _as_int32(n_in) - 1)
        x = jnp.take(x, src, axis=axis)
    return x


def _half_pixel_weights(n_in: int, n_out: int):
    """Source indices and weights of torch's bilinear ``align_corners=False`` along one axis.

    src = max((d + 0.5) * n_in / n_out - 0.5, 0); i0 = floor(src), i1 = min(i0 + 1, n_in - 1),
    out = (1 - t) * x[i0] + t * x[i1] with t = src - i0.
    """
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _half_pixel_weights_traced(n_in, n_out):
    """`_half_pixel_weights` for symbolic sizes: i0 from exact integers, 2 * n_out * src =
    max((2d + 1) * n_in - n_out, 0), and t to float32 rounding."""
    dst = jnp.arange(n_out, dtype=jnp.int32)
    n_in, n_out = _as_int32(n_in), _as_int32(n_out)
    num = jnp.maximum((2 * dst + 1) * n_in - n_out, 0)
    i0 = jnp.minimum(num // (2 * n_out), n_in - 1)
    i1 = jnp.minimum(i0 + 1, n_in - 1)
    t = (num - i0 * 2 * n_out).astype(jnp.float32) / (2 * n_out).astype(jnp.float32)
    return i0, i1, t


def resize_bilinear(x: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Bilinear resize = ``F.interpolate(x, size=shape, mode="bilinear", align_corners=False)``.

    Half-pixel centres, coordinates below 0 clamped to 0, no antialiasing (also when shrinking,
    unlike ``jax.image.resize``).

    Args:
      x: [B, H_in, W_in, C].
      shape: (H_out, W_out).

    Returns:
      [B, H_out, W_out, C], x's dtype.
    """
    _check_resize(x, shape, "resize_bilinear")
    for axis, n_out in zip((1, 2), _sizes(shape), strict=True):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        if is_constant_size(n_in) and is_constant_size(n_out):
            i0, i1, t = _half_pixel_weights(n_in, n_out)
        else:
            i0, i1, t = _half_pixel_weights_traced(n_in, n_out)
        t = jnp.asarray(t, dtype=x.dtype).reshape((1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        a = jnp.take(x, i0, axis=axis)
        b = jnp.take(x, i1, axis=axis)
        x = a + (b - a) * t
    return x


# ----------------------------------------------------------------------------------------------
# Building blocks.


def _conv(features: int, kernel: int, stride: int, dtype, name: str) -> Conv:
    """A bias-free conv with PyTorch's padding (kernel // 2 on every side)."""
    p = kernel // 2
    return Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=False,
        kernel_init=hrnet_kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBN(nn.Module):
    """Conv (bias-free) + MaskedBatchNorm (+ ReLU): children ``conv``, ``bn``."""

    features: int
    kernel: int = 3
    stride: int = 1
    relu: bool = True
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        x = _conv(self.features, self.kernel, self.stride, self.dtype, "conv")(x)
        x = MaskedBatchNorm(self.bn_momentum, 1e-5, self.dtype, name="bn")(
            x, train=train, mask=mask
        )
        return nn.relu(x) if self.relu else x


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1 to 4 * planes): children conv1..3, bn1..3 and, when
    the input channels differ, ``downsample_conv`` / ``downsample_bn`` (1x1)."""

    planes: int
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        out_ch = BOTTLENECK_EXPANSION * self.planes

        def bn(name):
            return MaskedBatchNorm(self.bn_momentum, 1e-5, self.dtype, name=name)

        y = nn.relu(
            bn("bn1")(_conv(self.planes, 1, 1, self.dtype, "conv1")(x), train=train, mask=mask)
        )
        y = nn.relu(
            bn("bn2")(_conv(self.planes, 3, 1, self.dtype, "conv2")(y), train=train, mask=mask)
        )
        y = bn("bn3")(_conv(out_ch, 1, 1, self.dtype, "conv3")(y), train=train, mask=mask)
        if x.shape[-1] != out_ch:
            x = _conv(out_ch, 1, 1, self.dtype, "downsample_conv")(x)
            x = bn("downsample_bn")(x, train=train, mask=mask)
        return nn.relu(y + x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, same channels): children conv1, bn1, conv2, bn2."""

    planes: int
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        if x.shape[-1] != self.planes:
            raise ValueError(f"BasicBlock of {self.planes} channels got input {x.shape}")

        def bn(name):
            return MaskedBatchNorm(self.bn_momentum, 1e-5, self.dtype, name=name)

        y = nn.relu(
            bn("bn1")(_conv(self.planes, 3, 1, self.dtype, "conv1")(x), train=train, mask=mask)
        )
        y = bn("bn2")(_conv(self.planes, 3, 1, self.dtype, "conv2")(y), train=train, mask=mask)
        return nn.relu(y + x)


class FuseDown(nn.Module):
    """Fuse path from a higher- to a lower-resolution branch: ``steps`` 3x3 stride-2 ConvBNs
    (children ``down{k}``), ReLU between them; the last goes to ``features`` channels."""

    features: int
    steps: int
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool, mask=None):
        in_ch = x.shape[-1]
        for k in range(self.steps):
            last = k == self.steps - 1
            x = ConvBN(
                self.features if last else in_ch,
                3,
                2,
                relu=not last,
                bn_momentum=self.bn_momentum,
                dtype=self.dtype,
                name=f"down{k}",
            )(x, train=train, mask=mask)
        return x


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then the multi-scale fusion (every output kept).

    Children: ``branch{i}_block{k}`` (BasicBlock), ``fuse_{i}_{j}`` for j != i: a 1x1 ConvBN
    without ReLU (j > i, then nearest upsampling) or a :class:`FuseDown` (j < i).
    """

    channels: tuple[int, ...]
    blocks: int = 4
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], *, train: bool, mask=None) -> list[jax.Array]:
        if len(xs) != len(self.channels):
            raise ValueError(f"{len(self.channels)} branches, got {len(xs)} inputs")
        kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
        xs = list(xs)
        for i, c in enumerate(self.channels):
            for k in range(self.blocks):
                xs[i] = BasicBlock(c, **kw, name=f"branch{i}_block{k}")(
                    xs[i], train=train, mask=mask
                )
        outs = []
        for i, c in enumerate(self.channels):
            y = None
            for j, x in enumerate(xs):
                if j == i:
                    z = x
                elif j > i:
                    z = ConvBN(c, 1, 1, relu=False, **kw, name=f"fuse_{i}_{j}")(
                        x, train=train, mask=mask
                    )
                    z = resize_nearest(z, xs[i].shape[1:3])
                else:
                    z = FuseDown(c, i - j, **kw, name=f"fuse_{i}_{j}")(x, train=train, mask=mask)
                if z.shape[1:3] != xs[i].shape[1:3]:
                    raise ValueError(
                        f"fuse {j}->{i}: size {z.shape[1:3]} != branch size {xs[i].shape[1:3]}"
                    )
                y = z if y is None else y + z
            outs.append(nn.relu(y))
        return outs


# ----------------------------------------------------------------------------------------------
# The backbone.


class HRNetStage3(nn.Module):
    """HRNet up to stage 3 with DKPNet's output (see the module doc).

    Attributes:
      branch_channels: channels of the three branches (W40: 40, 80, 160).
      stem_channels: channels of the two stem convs (64).
      layer1_planes: Bottleneck planes of layer1 (64: 256 output channels).
      blocks: Bottlenecks in layer1 and BasicBlocks per branch in every module (4).
      stage3_modules: high-resolution modules in stage 3 (4; stage 2 has one).
      bn_momentum: PyTorch-style BN momentum (0.1; DKPNet's reference uses 0.01).
      dtype: compute dtype; parameters and BN statistics stay float32.
      remat: recompute the activations of each layer1 block and each high-resolution module in
        the backward pass instead of keeping them (`nn.remat`, i.e. `jax.checkpoint`): less
        memory, one more forward pass; the parameters and the numbers are the same.
    """

    branch_channels: tuple[int, ...] = (40, 80, 160)
    stem_channels: int = 64
    layer1_planes: int = 64
    blocks: int = 4
    stage3_modules: int = 4
    bn_momentum: float = 0.1
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def out_channels(self) -> int:
        """Output channels: ``sum(branch_channels) + 4 * layer1_planes`` (536 for W40)."""
        return hrnet_out_channels(self.branch_channels, self.layer1_planes)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """x: [B, H, W, 3] ImageNet-normalised RGB; mask: [B, H, W] real pixels (None: all).

        Returns [B, h4, w4, out_channels], h4 = ceil(ceil(H / 2) / 2) (likewise w4).
        """
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"HRNetStage3 expects x: [B, H, W, 3], got shape {tuple(x.shape)}")
        if len(self.branch_channels) != 3:
            raise ValueError(f"branch_channels needs 3 entries, got {self.branch_channels}")
        c0, c1, c2 = (int(c) for c in self.branch_channels)
        kw = dict(bn_momentum=self.bn_momentum, dtype=self.dtype)
        bn_args = dict(train=train, mask=mask)

        def bn(name):
            return MaskedBatchNorm(self.bn_momentum, 1e-5, self.dtype, name=name)

        def stage(build, inputs):
            """`build()(inputs)`, its submodule built inside the `nn.remat` target (named as
            without it) when `self.remat`."""

            def target(module, inputs, mask):
                del module
                return build()(inputs, train=train, mask=mask)

            return (nn.remat(target) if self.remat else target)(self, inputs, mask)

        x = x.astype(self.dtype)
        x = nn.relu(
            bn("stem_bn1")(_conv(self.stem_channels, 3, 2, self.dtype, "stem_conv1")(x), **bn_args)
        )
        x = nn.relu(
            bn("stem_bn2")(_conv(self.stem_channels, 3, 2, self.dtype, "stem_conv2")(x), **bn_args)
        )
        for b in range(self.blocks):
            x = stage(lambda b=b: Bottleneck(self.layer1_planes, **kw, name=f"layer1_{b}"), x)
        layer1 = x

        x0 = x
        if x.shape[-1] != c0:
            x0 = ConvBN(c0, 3, 1, **kw, name="transition1_0")(x, **bn_args)
        x1 = ConvBN(c1, 3, 2, **kw, name="transition1_1")(x, **bn_args)
        ys = stage(
            lambda: HighResolutionModule((c0, c1), self.blocks, **kw, name="stage2_0"), [x0, x1]
        )

        x2 = ConvBN(c2, 3, 2, **kw, name="transition2_2")(ys[-1], **bn_args)
        ys = [ys[0], ys[1], x2]
        for m in range(self.stage3_modules):
            ys = stage(
                lambda m=m: HighResolutionModule(
                    (c0, c1, c2), self.blocks, **kw, name=f"stage3_{m}"
                ),
                ys,
            )

        size = ys[0].shape[1:3]
        return jnp.concatenate(
            [ys[0], resize_bilinear(ys[1], size), resize_bilinear(ys[2], size), layer1], axis=-1
        )
