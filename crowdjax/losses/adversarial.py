"""Adversarial scoring of ASNet (Zou et al., ACM MM 2021, Sec 3.2-3.3, Eq. 1-8).

Two discriminators look at density maps: the global D1 at the whole map ``[B, H, W]``, the local
D2 at each of its S x S patches ``[B, S, S, H/S, W/S]`` (:func:`split_patches`). Their outputs
are probabilities that the map comes from the source domain (1 = source, 0 = target).

* :func:`domain_bce`: binary cross-entropy of discriminator logits against one domain label,
  summed over each image's outputs (and patches), ``[B]``. The discriminator losses (Eq. 1-2)
  are ``mean(domain_bce(source, source=True)) + mean(domain_bce(target, source=False))``; the
  adversarial losses of the generator (Eq. 3-4, on target maps only) are
  ``mean(domain_bce(target, source=True))``. The extracted Eq. 1-2 show a minus sign between the
  two sums, which would reward the discriminator for calling target maps "source"; this is the
  standard BCE, as the text around it describes.
* :func:`adversarial_scores`: the four scores of Eq. 5-6 from the discriminator outputs on
  *source* maps: image level ``W1 = 1[mean(O1) < 0.5]``, pixel level ``W3 = 1[P < mean(P)]`` with
  ``P`` = O1 nearest-upsampled to the density map, and the same per patch from O2 (``W2`` patch
  level, ``W4`` patch-pixel level). A score of 1 marks source content that looks like the target.
* :func:`scored_density_loss`: the weighted density loss of Eq. 8,
  ``sum_j (1 + W1)(1 + W2_j) sum_k (1 + W3_jk)(1 + W4_jk) (G(x)_jk - y_jk)**2`` per image (with
  ``residual=False``: the scores themselves instead of ``1 + W``, Table 7's ablation).

Nearest upsampling is PyTorch's ``F.interpolate(mode="nearest")``: output pixel ``i`` of ``n``
reads input pixel ``floor(i * float32(m / n))`` of ``m``. Padded maps (images smaller than the
crop): the outputs over padding (:func:`output_mask`) are left out of the sums and means, so the
discriminators cannot tell the domains apart by image size; without padding nothing changes.
All functions are pure and work under ``jax.jit``, ``jax.grad`` (the scores are step functions:
no gradient) and ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def domain_bce(logits: jax.Array, *, source: bool, mask: jax.Array | None = None) -> jax.Array:
    """Per-image BCE of discriminator logits against the label source (1) or target (0).

    Args:
      logits: [B, ...] discriminator logits (the probability is ``sigmoid(logits)``), e.g. D1's
        ``[B, h1, w1]`` or D2's ``[B, S, S, h2, w2]``.
      source: the label of every output: True = source (1), False = target (0).
      mask: optional 0/1 weights of the outputs, shaped like `logits` (e.g. :func:`output_mask`
        of padded maps); default all.

    Returns:
      [B] float32: ``-sum log(sigmoid(logits))`` (source) or ``-sum log(1 - sigmoid(logits))``
      (target) over all but the batch axis, computed stably from the logits.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if logits.ndim < 1:
        raise ValueError(f"logits must be [B, ...], got shape {tuple(logits.shape)}")
    log_p = jax.nn.log_sigmoid(logits if source else -logits)
    if mask is not None:
        if tuple(mask.shape) != tuple(logits.shape):
            raise ValueError(f"mask must have the logits' shape {logits.shape}, got {mask.shape}")
        log_p = jnp.where(mask > 0, log_p, 0.0)
    return -log_p.reshape(logits.shape[0], -1).sum(axis=1)


def split_patches(maps: jax.Array, patches: int) -> jax.Array:
    """[B, H, W] maps -> [B, S, S, H/S, W/S] patches (row-major, S = patches).

    H and W must be divisible by S (the patches are equal, Eq. 2).
    """
    b, h, w = _map_shape(maps, "maps")
    s = _check_patches(patches, (h, w))
    return maps.reshape(b, s, h // s, s, w // s).transpose(0, 1, 3, 2, 4)


def merge_patches(patches: jax.Array) -> jax.Array:
    """The inverse of :func:`split_patches`: [B, S, S, h, w] -> [B, S h, S w]."""
    if patches.ndim != 5 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must be [B, S, S, h, w], got shape {tuple(patches.shape)}")
    b, s, _, h, w = patches.shape
    return patches.transpose(0, 1, 3, 2, 4).reshape(b, s * h, s * w)


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """PyTorch's nearest rule: output i reads min(floor(i * float32(n_in / n_out)), n_in - 1)."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale), n_in - 1).astype(int)


def upsample_nearest(x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Nearest upsampling of the last two axes to `shape` (torch.nn.functional.interpolate)."""
    rows = _nearest_index(int(shape[0]), x.shape[-2])
    cols = _nearest_index(int(shape[1]), x.shape[-1])
    return x[..., rows[:, None], cols[None, :]]


def output_mask(map_mask: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    """[..., H, W] real map pixels -> [..., h, w] float32: 1 for a discriminator output whose
    pixels (those it is nearest-upsampled to, as in Eq. 6) are all real, else 0.

    With padded maps (images smaller than the crop), the outputs over padding would let a
    discriminator tell the domains apart by their sizes; they are left out of every sum and mean.
    """
    map_mask = jnp.asarray(map_mask, jnp.float32)
    h, w = (int(n) for n in out_shape)
    rows = _nearest_index(map_mask.shape[-2], h)  # The output cell of each map pixel.
    cols = _nearest_index(map_mask.shape[-1], w)
    rows_onehot = jnp.asarray(rows[:, None] == np.arange(h)[None, :], jnp.float32)  # [H, h]
    cols_onehot = jnp.asarray(cols[:, None] == np.arange(w)[None, :], jnp.float32)  # [W, w]
    padded = jnp.einsum("...yx,yi,xj->...ij", 1.0 - map_mask, rows_onehot, cols_onehot)
    return (padded == 0).astype(jnp.float32)


def _masked_mean(x, weight, axes):
    total = weight.sum(axis=axes, keepdims=True)
    return (x * weight).sum(axis=axes, keepdims=True) / jnp.maximum(total, 1e-12), total > 0


def _below_mean(p: jax.Array, weight: jax.Array) -> jax.Array:
    """1[p < mean(p)] over the last two axes, on the pixels of `weight` (the soft threshold of
    Eq. 6). Values within the float32 rounding of the mean (1e-6 relative) are not below it: a
    constant map selects none."""
    mean, _ = _masked_mean(p, weight, (-2, -1))
    return (p < mean - 1e-6 * jnp.abs(mean)).astype(jnp.float32) * weight


def _below_half(o: jax.Array, weight: jax.Array) -> jax.Array:
    """1[mean(o) < 0.5] over the last two axes on `weight`'s outputs (Eq. 5); 0 without any."""
    mean, some = _masked_mean(o, weight, (-2, -1))
    return ((mean < 0.5) & some).astype(jnp.float32)[..., 0, 0]


def adversarial_scores(
    o1: jax.Array, o2: jax.Array, *, map_shape, patches: int = 4, map_mask: jax.Array | None = None
):
    """The four scores of source maps from the discriminator outputs (Eq. 5-6).

    Args:
      o1: [B, h1, w1] D1's probabilities (source = 1) on the source density maps.
      o2: [B, S, S, h2, w2] D2's probabilities on each of their S x S patches.
      map_shape: (H, W) of the density maps, divisible by S.
      patches: S.
      map_mask: optional [B, H, W] real pixels of padded maps: outputs over padding
        (:func:`output_mask`) and padded pixels take no part in the means and get score 0.

    Returns:
      (w1 [B], w2 [B, S, S], w3 [B, H, W], w4 [B, H, W]) float32 in {0, 1}:
      w1 = 1[mean(o1) < 0.5]; w3 = 1[P < mean(P)], P = o1 nearest-upsampled to (H, W);
      w2 = 1[mean(o2_j) < 0.5] per patch j; w4 = 1[P_j < mean(P_j)] with P_j = o2_j upsampled to
      the patch (H/S, W/S), placed at patch j.
    """
    o1 = jnp.asarray(o1, jnp.float32)
    o2 = jnp.asarray(o2, jnp.float32)
    h, w = (int(n) for n in map_shape)
    s = _check_patches(patches, (h, w))
    if o1.ndim != 3:
        raise ValueError(f"o1 must be [B, h1, w1], got shape {tuple(o1.shape)}")
    b = o1.shape[0]
    if o2.ndim != 5 or o2.shape[:3] != (b, s, s):
        raise ValueError(
            f"o2 must be [B, S, S, h2, w2] = [{b}, {s}, {s}, ...], got {tuple(o2.shape)}"
        )
    if map_mask is None:
        map_mask = jnp.ones((b, h, w), jnp.float32)
    elif tuple(map_mask.shape) != (b, h, w):
        raise ValueError(f"map_mask must be [B, H, W] = {(b, h, w)}, got {tuple(map_mask.shape)}")
    map_mask = jnp.asarray(map_mask, jnp.float32)
    mask1 = output_mask(map_mask, o1.shape[1:])
    w1 = _below_half(o1, mask1)
    w3 = _below_mean(upsample_nearest(o1, (h, w)), upsample_nearest(mask1, (h, w)) * map_mask)
    patch_mask = split_patches(map_mask, s)
    mask2 = output_mask(patch_mask, o2.shape[3:])
    w2 = _below_half(o2, mask2)
    weight4 = upsample_nearest(mask2, (h // s, w // s)) * patch_mask
    w4 = merge_patches(_below_mean(upsample_nearest(o2, (h // s, w // s)), weight4))
    return w1, w2, w3, w4


def scored_density_loss(
    pred: jax.Array,
    target: jax.Array,
    w1: jax.Array | None,
    w2: jax.Array | None,
    w3: jax.Array | None,
    w4: jax.Array | None,
    *,
    patches: int = 4,
    residual: bool = True,
) -> jax.Array:
    """The score-weighted density loss of Eq. 8, per image.

    Args:
      pred: [B, H, W] predicted density of the source images.
      target: [B, H, W] their ground-truth density.
      w1: [B] image-level scores; w2: [B, S, S] patch-level; w3, w4: [B, H, W] pixel and
        patch-pixel level (e.g. from :func:`adversarial_scores`); None switches a level off
        (factor 1).
      patches: S (H and W divisible by S).
      residual: weights ``1 + W`` (Eq. 8); False: ``W`` itself (Table 7, without the residual
        mechanism).

    Returns:
      [B] float32: ``sum over pixels of (1+w1)(1+w2[patch])(1+w3)(1+w4)(pred - target)**2``
      (no gradient reaches the scores).
    """
    b, h, w = _map_shape(pred, "pred")
    if target.shape != pred.shape:
        raise ValueError(f"target must be [B, H, W] = {(b, h, w)}, got {tuple(target.shape)}")
    s = _check_patches(patches, (h, w))
    for name, value, shape in (
        ("w1", w1, (b,)),
        ("w2", w2, (b, s, s)),
        ("w3", w3, (b, h, w)),
        ("w4", w4, (b, h, w)),
    ):
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    lift = (lambda x: 1.0 + x) if residual else (lambda x: x)
    weight = jnp.ones((b, h, w), jnp.float32)
    if w1 is not None:
        weight = weight * lift(w1)[:, None, None]
    if w2 is not None:
        weight = weight * lift(jnp.repeat(jnp.repeat(w2, h // s, axis=1), w // s, axis=2))
    for level in (w3, w4):
        if level is not None:
            weight = weight * lift(level)
    error = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return (jax.lax.stop_gradient(weight) * error).sum(axis=(1, 2))


def _map_shape(maps, name):
    if maps.ndim != 3:
        raise ValueError(f"{name} must be [B, H, W], got shape {tuple(maps.shape)}")
    return maps.shape


def _check_patches(patches, shape) -> int:
    s = int(patches)
    if s < 1 or shape[0] % s or shape[1] % s:
        raise ValueError(
            f"a {shape[0]} x {shape[1]} density map does not split into {s} x {s} equal "
            "patches: its sides must be divisible by the patch number S"
        )
    return s
