"""Pixel-wise density regression loss: the squared error of density maps (AutoScale Eq. 5 and
the density term of L2SM, DKPNet and ASNet).

``density_mse_loss`` returns one value per image, ``[B]``: the sum of squared errors over the
image's pixels (``reduction="sum"``, as Eq. 5), or its mean over the valid pixels
(``reduction="mean"``, 0 for an image without one). ``mask`` [B, H, W] (bool or 0/1 weights)
marks the pixels that count, e.g. the real pixels of a padded crop; masked pixels never leak a
non-finite value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crowdjax.losses.reduction import reduce_per_image


def density_mse_loss(pred: jax.Array, target: jax.Array, *, mask=None, reduction: str = "sum"):
    """Per-image squared error of predicted density maps.

    Args:
      pred: [B, H, W] predicted density.
      target: [B, H, W] ground-truth density (same units, e.g. people per pixel).
      mask: optional [B, H, W] bool / 0-1 weights of the pixels that count (default: all).
      reduction: "sum" over the pixels (Eq. 5) or "mean" over the valid pixels.

    Returns:
      [B] float32 losses.
    """
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be [B, H, W], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if mask is not None and mask.shape != pred.shape:
        raise ValueError(f"mask must be [B, H, W] = {tuple(pred.shape)}, got {tuple(mask.shape)}")
    error = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return reduce_per_image(error, mask, reduction)
