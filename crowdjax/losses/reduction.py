"""The per-image reduction that the pixel-wise losses share."""

from __future__ import annotations

import jax.numpy as jnp

REDUCTIONS = ("sum", "mean")


def reduce_per_image(per_pixel, mask, reduction: str):
    """Per-image sum (or mean over valid pixels) of a [B, H, W] map -> [B].

    Args:
      per_pixel: [B, H, W] loss per pixel.
      mask: None (every pixel) or [B, H, W] bool / 0-1 weights.
      reduction: "sum", or "mean" over the mask's weight (at least 1, so an image without valid
        pixels gives 0).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask is None:
        mask = jnp.ones(per_pixel.shape, jnp.float32)
    mask = mask.astype(jnp.float32)
    # where(): a NaN/inf on a masked-out pixel must not leak through 0 * inf.
    total = jnp.sum(jnp.where(mask > 0, per_pixel * mask, 0.0), axis=(1, 2))
    if reduction == "mean":
        total = total / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1.0)
    return total
