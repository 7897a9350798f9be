"""Pixel-wise classification losses for AutoScale distance-label maps (Sec 3.5, Table 12).

* :func:`dce_loss`: the dynamic cross-entropy of Eq. 7,
  ``L = -sum_p (sum_i (|C(p) - i| + 1) * Pr_i(p)) * log Pr_{C(p)}(p)``.
* :func:`cross_entropy_loss`: plain softmax cross-entropy (Table 12 "CE loss").
* :func:`focal_loss`: ``-(1 - Pr_C)^gamma * log Pr_C`` (Lin et al. 2017; Table 12 "Focal loss").

All three share one signature and return one loss per image, ``[B]``. Normalisation: Eq. 7 sums
over the pixels ``p in Omega`` of the image, so ``reduction="sum"`` (per image) is the default. The
public AutoScale code releases no localization training script, so the paper is the only authority;
``reduction="mean"`` (divide by the number of valid pixels, as PyTorch's ``CrossEntropyLoss``) is
offered for experiments with other learning rates.

DCE weight (**choice**, docs/methods/autoscale.md): ``w(p) = sum_i (|C(p) - i| + 1) Pr_i(p)`` is
a coefficient, so by default no gradient flows through it (``jax.lax.stop_gradient``);
``weight_gradient=True`` lets it flow (the loss is then the literal product of Eq. 7).

Labels must lie in ``[0, K)``; this cannot be checked inside jit, so a pixel with a label outside
(e.g. -1 or K) has a NaN loss (the loss of its image is NaN unless the pixel is masked out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crowdjax.losses.reduction import reduce_per_image


def _check(logits, labels, mask):
    if logits.ndim != 4:
        raise ValueError(f"logits must be [B, H, W, K], got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:3]:
        raise ValueError(
            f"labels must be [B, H, W] = {tuple(logits.shape[:3])}, got shape {tuple(labels.shape)}"
        )
    if mask is not None and mask.shape != logits.shape[:3]:
        raise ValueError(
            f"mask must be [B, H, W] = {tuple(logits.shape[:3])}, got shape {tuple(mask.shape)}"
        )


def _log_probs_at_labels(logits, labels):
    """log-softmax [B, H, W, K] (float32) and its value at the label, [B, H, W]; NaN where the
    label is outside [0, K) (a negative label would otherwise index from the end)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = labels.astype(jnp.int32)
    inside = (labels >= 0) & (labels < logits.shape[-1])
    at_label = jnp.take_along_axis(log_probs, jnp.where(inside, labels, 0)[..., None], axis=-1)
    return log_probs, jnp.where(inside, at_label[..., 0], jnp.nan)


def dce_weight(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """DCE coefficient ``w(p) = sum_i (|C(p) - i| + 1) Pr_i(p)`` (>= 1), [B, H, W] float32."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    classes = jnp.arange(logits.shape[-1], dtype=jnp.float32)
    distance = jnp.abs(labels.astype(jnp.float32)[..., None] - classes) + 1.0
    return jnp.sum(distance * probs, axis=-1)


def dce_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    mask: jax.Array | None = None,
    weight_gradient: bool = False,
    reduction: str = "sum",
) -> jax.Array:
    """Dynamic cross-entropy (AutoScale Eq. 7).

    Args:
      logits: [B, H, W, K] class scores (K = N_c = 11 distance classes); any float dtype.
      labels: [B, H, W] integer ground-truth classes C(p) in [0, K).
      mask: optional [B, H, W] pixel weights (1 valid, 0 ignored, e.g. canvas padding).
      weight_gradient: let the gradient flow through the coefficient ``w(p)`` (default: the
        coefficient is a constant, ``stop_gradient``).
      reduction: "sum" over pixels (Eq. 7, default) or "mean" over valid pixels.

    Returns:
      [B] float32 loss per image.
    """
    _check(logits, labels, mask)
    _, log_p = _log_probs_at_labels(logits, labels)
    weight = dce_weight(logits, labels)
    if not weight_gradient:
        weight = jax.lax.stop_gradient(weight)
    return reduce_per_image(-weight * log_p, mask, reduction)


def cross_entropy_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    mask: jax.Array | None = None,
    reduction: str = "sum",
) -> jax.Array:
    """Softmax cross-entropy ``-sum_p log Pr_{C(p)}(p)``; arguments as :func:`dce_loss`.

    Returns:
      [B] float32 loss per image.
    """
    _check(logits, labels, mask)
    _, log_p = _log_probs_at_labels(logits, labels)
    return reduce_per_image(-log_p, mask, reduction)


def focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    mask: jax.Array | None = None,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> jax.Array:
    """Focal loss ``-sum_p (1 - Pr_C(p))^gamma log Pr_C(p)`` (Lin et al. 2017, no alpha).

    Args:
      logits, labels, mask, reduction: as :func:`dce_loss`.
      gamma: focusing exponent (>= 0; 0 gives :func:`cross_entropy_loss`; Lin et al.: 2).

    Returns:
      [B] float32 loss per image.
    """
    _check(logits, labels, mask)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    _, log_p = _log_probs_at_labels(logits, labels)
    # 1 - exp(log p) via expm1: accurate when p -> 1 (the well-classified pixels).
    one_minus_p = -jnp.expm1(log_p)
    modulator = jnp.power(jnp.maximum(one_minus_p, 0.0), gamma) if gamma else 1.0
    return reduce_per_image(-modulator * log_p, mask, reduction)
