"""A drop-in `nn.Conv` whose kernel gradient is a sum of matmuls instead of XLA's convolution.

JAX differentiates a convolution into two convolutions. The input gradient is a convolution like
the forward one and XLA's CPU backend runs it well; the kernel gradient is a convolution whose
window is the whole feature map and whose "input features" are the batch (``B = 2``), which the
CPU backend of jaxlib 0.10.2 runs at a fraction of its matmul speed: on the VGG19 regressor at
512 x 512 it was most of the gap to PyTorch (numbers in ``benchmarks/conv_profile.py``). Here the
kernel gradient is computed directly from its definition, one matmul per kernel tap:

    dkernel[i, j, :, :] = sum_{b, y, x} xpad[b, s y + d i, s x + d j, :]^T g[b, y, x, :]

(stride ``s``, dilation ``d``): the same sum of products as XLA's convolution, so the result
differs from it by float rounding only (``tests/models/test_conv_speed_numbers.py`` pins that). The
forward pass and the input gradient stay XLA's own convolutions.

:class:`Conv` is ``nn.Conv`` with this convolution; its parameters ("kernel" [kh, kw, C_in, C_out]
HWIO and "bias" [C_out]) are the same, so checkpoints and importers are unchanged. Cases the
matmul form does not cover (input dilation, feature groups, other layouts) use XLA's convolution.

Switch: the environment variable ``CROWDJAX_CONV`` sets the implementation when crowdjax is
imported: "auto" (default: on a CPU backend, the matmul kernel gradient on the layers where it
was measured faster, :func:`matmul_grad_pays`; XLA's own on a GPU or TPU), "matmul_grad" (on
every layer it covers) or "xla" (plain ``lax.conv_general_dilated`` everywhere, the code before
this module);
:func:`set_conv_impl` / :func:`conv_impl` change it in a running process. It is read when a model
is traced, so set it before building the jitted functions (a new ``run.Setup``) that should use it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from crowdjax.models.layers import is_constant_size

CONV_IMPLS = ("auto", "matmul_grad", "xla")
CONV_ENV = "CROWDJAX_CONV"
_NHWC = ("NHWC", "HWIO", "NHWC")
# Where "auto" uses the matmul kernel gradient (see matmul_grad_pays).
MIN_IN_CHANNELS = 64
MIN_OUT_CHANNELS = 128
MIN_OUTPUT_SIZE = 2**22  # Elements of the output gradient, B * Ho * Wo * C_out.


def _impl_from_env() -> str:
    impl = os.environ.get(CONV_ENV, "auto")
    if impl not in CONV_IMPLS:
        raise ValueError(f"environment variable {CONV_ENV}={impl!r}; valid: {CONV_IMPLS}")
    return impl


_impl = _impl_from_env()


def get_conv_impl() -> str:
    """The convolution implementation models traced from now on use."""
    return _impl


def set_conv_impl(impl: str) -> None:
    """Sets the convolution implementation for models traced later.

    "auto": the matmul kernel gradient on the layers where it was measured faster
    (:func:`matmul_grad_pays`), XLA's convolution on the others; "matmul_grad": on every layer
    it covers; "xla": nowhere (plain ``lax.conv_general_dilated``).
    """
    global _impl
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; valid: {CONV_IMPLS}")
    _impl = impl


@contextlib.contextmanager
def conv_impl(impl: str):
    """Context manager: models traced inside it use convolution implementation ``impl``."""
    previous = get_conv_impl()
    set_conv_impl(impl)
    try:
        yield
    finally:
        set_conv_impl(previous)


def _xla_conv(x, kernel, strides, padding, dilation, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        padding,
        rhs_dilation=dilation,
        dimension_numbers=_NHWC,
        precision=precision,
    )


def _kernel_grad(x, g, kernel_shape, strides, padding, dilation, precision):
    """d loss / d kernel of an NHWC / HWIO convolution, one matmul per kernel tap.

    Args:
      x: [B, H, W, C] input; g: [B, Ho, Wo, O] output cotangent.
      kernel_shape: (kh, kw, C, O); strides, dilation: (sy, sx), (dy, dx); padding: ((lo, hi),) * 2.

    Returns:
      [kh, kw, C, O] in the kernel's dtype.
    """
    kh, kw, c, o = kernel_shape
    _, ho, wo, _ = g.shape
    # lax.pad takes the negative padding that XLA's convolution allows.
    pads = [(0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), pads)
    gm = g.reshape(-1, o)
    taps = []
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation[0], j * dilation[1]
            end = (y0 + strides[0] * (ho - 1) + 1, x0 + strides[1] * (wo - 1) + 1)
            tap = lax.slice(xp, (0, y0, x0, 0), (xp.shape[0], *end, c), (1, *strides, 1))
            # Pixels are the contraction axis: tap [N, C]^T @ g [N, O].
            taps.append(
                lax.dot_general(
                    tap.reshape(-1, c),
                    gm,
                    (((0,), (0,)), ((), ())),
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
            )
    return jnp.stack(taps).reshape(kernel_shape).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _matmul_grad_conv(x, kernel, strides, padding, dilation, precision):
    return _xla_conv(x, kernel, strides, padding, dilation, precision)


def _matmul_grad_conv_fwd(x, kernel, strides, padding, dilation, precision):
    return _xla_conv(x, kernel, strides, padding, dilation, precision), (x, kernel)


def _matmul_grad_conv_bwd(strides, padding, dilation, precision, residuals, g):
    x, kernel = residuals
    # The input gradient stays JAX's transpose of the convolution (fast on XLA CPU).
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, strides, padding, dilation, precision), x)
    (dx,) = input_vjp(g)
    dkernel = _kernel_grad(x, g, kernel.shape, strides, padding, dilation, precision)
    return dx, dkernel.astype(kernel.dtype)


_matmul_grad_conv.defvjp(_matmul_grad_conv_fwd, _matmul_grad_conv_bwd)


def matmul_grad_pays(x_shape, kernel_shape, strides) -> bool:
    """Whether the matmul kernel gradient beat XLA's on a layer like this one (2-core CPU).

    XLA's kernel-gradient convolution was 1.7-4.5x slower than the matmuls on every VGG layer
    with C_out >= 128 whose output gradient has 2**22 elements or more (e.g. 128 -> 128 on
    2 x 256 x 256, 512 -> 512 on 2 x 64 x 64), and at most 1.6x faster than them on the others
    (64 -> 64 on the largest maps, 256 -> 256 on 2 x 64 x 64, 512 -> 256 on 2 x 64 x 64): numbers
    in ``benchmarks/conv_profile.py``.
    """
    b, h, w, c_in = x_shape
    c_out = kernel_shape[-1]
    output_size = b * (h // strides[0]) * (w // strides[1]) * c_out
    return c_in >= MIN_IN_CHANNELS and c_out >= MIN_OUT_CHANNELS and output_size >= MIN_OUTPUT_SIZE


def _as_pairs(value, n: int) -> tuple[int, ...]:
    return (1,) * n if value is None else tuple(int(v) for v in value)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """``lax.conv_general_dilated`` with the matmul kernel gradient where it applies.

    Same arguments and forward result as ``lax.conv_general_dilated``. The matmul form is used for
    2-D NHWC / HWIO convolutions without input dilation or groups when the implementation is
    "matmul_grad" (:func:`set_conv_impl`); anything else is passed to ``lax.conv_general_dilated``.
    """
    n = lhs.ndim - 2
    if n != 2:  # conv_dimension_numbers below needs 2-D specs.
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    strides = _as_pairs(window_strides, n)
    dilation = _as_pairs(rhs_dilation, n)
    plain = (
        _impl == "xla"
        or n != 2
        or dimension_numbers is None
        # Flax passes ConvDimensionNumbers of axis indices, the tests strings: compare both.
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        or any(d != 1 for d in _as_pairs(lhs_dilation, n))
        or feature_group_count != 1
        or batch_group_count != 1
        or preferred_element_type is not None
        # Symbolic sizes (jax.export with a polymorphic height or width): forward only.
        or not all(is_constant_size(n) for n in lhs.shape)
    )
    if plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation, strict=True)]
        padding = lax.padtype_to_pads(lhs.shape[1:3], dilated, strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    # "auto" only on a CPU: it was measured there; a GPU's or TPU's own kernel gradients are fast.
    on_cpu = jax.default_backend() == "cpu"
    if _impl == "auto" and not (on_cpu and matmul_grad_pays(lhs.shape, rhs.shape, strides)):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            strides,
            padding,
            rhs_dilation=dilation,
            dimension_numbers=_NHWC,
            precision=precision,
        )
    return _matmul_grad_conv(lhs, rhs, strides, padding, dilation, precision)


class Conv(nn.Conv):
    """``flax.linen.Conv`` computing its kernel gradient as matmuls (see the module doc).

    Same attributes, parameters ("kernel", "bias") and forward result as ``nn.Conv``.
    """

    conv_general_dilated: object = conv_general_dilated
