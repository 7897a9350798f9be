"""BatchNorm as every crowdjax model uses it: train vs. eval mode, real pixels only, global batch.

Convention (every model with BatchNorm follows it):
  * The model's `__call__` takes `train: bool` and `mask` ([B, H, W] bool, True on real image
    pixels: the pipeline's `image_mask`) and passes both to each `MaskedBatchNorm`.
  * Training: `model.apply(variables, x, train=True, mask=..., mutable=["batch_stats"])`
    normalises with the statistics of the batch and returns the updated running averages, which
    the method's `loss_fn` gives back as its new model state (`model_state["batch_stats"]`).
  * Evaluation: `model.apply(variables, x, train=False)` normalises with the running averages;
    nothing is computed from the batch, so padded pixels and padded examples of evaluation
    buckets cannot enter any statistic.
  * Only real pixels enter the batch statistics: a feature pixel at stride s counts when its
    s x s input block holds at least one real pixel (the mask is reduced to the feature size).
  * Synchronised BN for free: under `jax.jit` with the batch sharded over the `data` mesh axis,
    the mean over the batch axis is the mean over the global batch (XLA adds the cross-device
    reduction), so 8 devices compute the statistics of 1 device holding the whole batch.
  * `momentum` follows PyTorch (0.1: running = 0.9 running + 0.1 batch; flax's is 1 - that).
    The running variance is the biased batch variance (flax); PyTorch keeps the unbiased one,
    n / (n - 1) larger, which is immaterial for the feature maps of a batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def mask_to_features(mask: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Real-pixel mask [B, H, W] -> [B, h, w] at a feature size: True where the block of input
    pixels under a feature pixel holds a real pixel (exact blocks when h, w divide H, W, else the
    nearest input pixel)."""
    b, big_h, big_w = mask.shape
    h, w = shape
    mask = mask.astype(bool)
    if (big_h, big_w) == (h, w):
        return mask
    if big_h % h == 0 and big_w % w == 0:
        return mask.reshape(b, h, big_h // h, w, big_w // w).any(axis=(2, 4))
    rows = jnp.minimum((jnp.arange(h) * big_h) // h, big_h - 1)
    cols = jnp.minimum((jnp.arange(w) * big_w) // w, big_w - 1)
    return mask[:, rows][:, :, cols]


def batch_moments(x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(mean [C], biased variance [C]) in float32 of x [B, h, w, C] over its real pixels (mask
    [B, H, W], reduced to the feature size; None: every pixel): what training mode normalises
    with (also read by `crowdjax.precise_bn`)."""
    values = x.astype(jnp.float32)
    where = None
    if mask is not None:
        if mask.ndim != 3 or mask.shape[0] != x.shape[0]:
            raise ValueError(f"mask must be [B, H, W] for x {x.shape}, got {mask.shape}")
        where = mask_to_features(mask, x.shape[1:3])[..., None]
    mean = jnp.mean(values, axis=(0, 1, 2), where=where)
    # Two-pass variance: stable for large means (a one-pass E[x^2] - E[x]^2 is not).
    var = jnp.mean(jnp.square(values - mean), axis=(0, 1, 2), where=where)
    return mean, var


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the real pixels of a batch (see the module doc for the convention).

    Variables: params `scale`, `bias` [C]; batch_stats `mean`, `var` [C] (names as flax's
    `nn.BatchNorm`, so importers map PyTorch's weight, bias, running_mean, running_var 1:1).

    Attributes:
      momentum: PyTorch-style momentum of the running averages (0.1).
      epsilon: added to the variance.
      dtype: compute dtype (statistics are always computed in float32).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """x: [B, h, w, C]; mask: [B, H, W] real pixels (None: every pixel is real)."""
        if x.ndim != 4:
            raise ValueError(f"MaskedBatchNorm expects [B, h, w, C], got shape {x.shape}")
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        if train:
            mean, var = batch_moments(x, mask)
            if not self.is_initializing():
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * var
        else:
            mean, var = ra_mean.value, ra_var.value
        inv = scale * jax.lax.rsqrt(var + self.epsilon)
        return (x * inv.astype(self.dtype) + (bias - mean * inv).astype(self.dtype)).astype(
            self.dtype
        )
