"""Variational-attention losses of DKPNet (Chen et al., ICCV 2021, Sec 3.2-3.4).

The attention module encodes pooled features into q(z|x) = N(mu, diag var) and decodes a sample
z into channel attention. The prior of image b is the Gaussian of its domain c = domain[b],
N(u_c, diag Sigma_c), one of C learnable Gaussians. Per image (Eq. 7 without the likelihood term):

  KL(q || N(u_c, Sigma_c))                                   (Eq. 3)
  + log sum_i exp(z^T u_i - z^T u_c)                          (Eq. 6)
  + (log det Sigma_c)^2                                       (the Sigma_c regulariser)

* :func:`diag_gaussian_kl`: KL(N(mu_q, diag var_q) || N(mu_p, diag var_p)), Eq. 3.
* :func:`variational_attention_regularizer`: the three terms above per image, [B].
* :func:`select_sub_centers`: InVA's sub-center choice (Eq. 8): for every cluster c, the
  sub-center u_{c,k} with the largest dropout(u_{c,k}^T mu); gives per-image priors [B, C, d]
  that :func:`variational_attention_regularizer` accepts.

Variances, not standard deviations, are passed everywhere (Eq. 4's `mu + Sigma ⊙ eps` is read
with Sigma the standard deviation, i.e. sqrt(var)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def diag_gaussian_kl(
    mu_q: jax.Array, var_q: jax.Array, mu_p: jax.Array, var_p: jax.Array
) -> jax.Array:
    """KL(N(mu_q, diag var_q) || N(mu_p, diag var_p)) summed over the last axis (Eq. 3).

    ``1/2 [log(det var_p / det var_q) - d + tr(var_p^-1 var_q) + (mu_p - mu_q)^T var_p^-1
    (mu_p - mu_q)]``.

    Args:
      mu_q, var_q: [..., d] mean and variance (> 0) of q.
      mu_p, var_p: [..., d] mean and variance (> 0) of p (broadcast against q's).

    Returns:
      [...] float32: the divergence (>= 0, 0 iff the two are equal).
    """
    mu_q, var_q, mu_p, var_p = (jnp.asarray(a, jnp.float32) for a in (mu_q, var_q, mu_p, var_p))
    ratio = var_q / var_p
    # log(var_p / var_q) - 1 + var_q / var_p >= 0 per dimension: summed as one term, so that
    # rounding cannot make the divergence of nearly equal Gaussians negative.
    per_dim = ratio - 1.0 - jnp.log(ratio) + jnp.square(mu_p - mu_q) / var_p
    return 0.5 * jnp.sum(per_dim, axis=-1)


def _check_regularizer_shapes(z, mu, var, domain, prior_mu, prior_var):
    if z.ndim != 2 or mu.shape != z.shape or var.shape != z.shape:
        raise ValueError(
            f"z, mu and var must share one shape [B, d], got {z.shape}, {mu.shape}, {var.shape}"
        )
    b, d = z.shape
    if domain.shape != (b,):
        raise ValueError(f"domain must be [B] = [{b}], got {domain.shape}")
    if prior_mu.shape[-1] != d or prior_mu.ndim not in (2, 3):
        raise ValueError(f"prior_mu must be [C, d] or [B, C, d] with d = {d}, got {prior_mu.shape}")
    if prior_mu.ndim == 3 and prior_mu.shape[0] != b:
        raise ValueError(f"per-image prior_mu must be [B = {b}, C, d], got {prior_mu.shape}")
    if prior_var.shape != prior_mu.shape[-2:]:
        raise ValueError(f"prior_var must be [C, d] = {prior_mu.shape[-2:]}, got {prior_var.shape}")


def variational_attention_regularizer(
    z: jax.Array,
    mu: jax.Array,
    var: jax.Array,
    domain: jax.Array,
    prior_mu: jax.Array,
    prior_var: jax.Array,
) -> jax.Array:
    """Per-image VA regulariser: KL + log-sum-exp domain margin + (log det Sigma_c)^2 (Eq. 7/9).

    Args:
      z: [B, d] the sampled latent (mu + sqrt(var) * eps in training; mu at evaluation).
      mu, var: [B, d] q(z|x)'s mean and variance (> 0).
      domain: [B] int, each image's domain (data set, or InVA's cluster) c in [0, C).
      prior_mu: [C, d] the domains' prior means u_c, or [B, C, d] per image (InVA: the
        sub-centers chosen for that image by :func:`select_sub_centers`).
      prior_var: [C, d] the domains' diagonal prior variances Sigma_c (> 0).

    Returns:
      [B] float32: ``KL(N(mu, var) || N(u_c, Sigma_c)) + log sum_i exp(z^T u_i - z^T u_c)
      + (sum_d log Sigma_c)^2`` with c = domain[b]. The margin term is >= 0 (the i = c
      summand is 1) and the whole is differentiable in every input but `domain`. An image
      whose domain is outside [0, C) gets NaN, so a wrong label cannot train another domain.
    """
    z, mu, var, prior_mu, prior_var = (
        jnp.asarray(a, jnp.float32) for a in (z, mu, var, prior_mu, prior_var)
    )
    domain = jnp.asarray(domain, jnp.int32)
    _check_regularizer_shapes(z, mu, var, domain, prior_mu, prior_var)
    b = z.shape[0]
    if prior_mu.ndim == 2:
        prior_mu = jnp.broadcast_to(prior_mu, (b, *prior_mu.shape))
    # A domain outside [0, C) gives NaN (plain indexing would clamp it to a valid domain).
    pick = lambda a: jnp.take_along_axis(
        a, domain.reshape(b, 1, *([1] * (a.ndim - 2))), axis=1, mode="fill", fill_value=jnp.nan
    )[:, 0]
    own_mu = pick(prior_mu)  # [B, d]
    own_var = pick(jnp.broadcast_to(prior_var, (b, *prior_var.shape)))  # [B, d]
    kl = diag_gaussian_kl(mu, var, own_mu, own_var)
    scores = jnp.einsum("bd,bcd->bc", z, prior_mu, precision=jax.lax.Precision.HIGHEST)
    margin = jax.nn.logsumexp(scores - pick(scores)[:, None], axis=-1)
    log_det = jnp.sum(jnp.log(own_var), axis=-1)
    return kl + margin + jnp.square(log_det)


def select_sub_centers(
    sub_centers: jax.Array,
    mu: jax.Array,
    *,
    rng: jax.Array | None = None,
    rate: float = 0.2,
) -> tuple[jax.Array, jax.Array]:
    """InVA's sub-center per cluster and image (Eq. 8): ``argmax_k dropout(u_{c,k}^T mu)``.

    Dropout (rate `rate`, the kept scores scaled by 1 / (1 - rate), as `flax.linen.Dropout`)
    acts on the k similarity scores of each cluster, so that in training a sub-center other
    than the most similar one is sometimes chosen; without `rng` (evaluation) no score is
    dropped. The choice passes no gradient; the chosen sub-centers do.

    Args:
      sub_centers: [C, k, d] the sub-centers u_{c,k}.
      mu: [B, d] q(z|x)'s means u_phi.
      rng: dropout key, or None for no dropout.
      rate: the drop rate in [0, 1).

    Returns:
      (prior_mu [B, C, d] the chosen sub-center of every cluster for every image,
       index [B, C] int32 the chosen k).
    """
    sub_centers = jnp.asarray(sub_centers, jnp.float32)
    mu = jnp.asarray(mu, jnp.float32)
    if sub_centers.ndim != 3 or mu.ndim != 2 or sub_centers.shape[-1] != mu.shape[-1]:
        raise ValueError(
            f"sub_centers must be [C, k, d] and mu [B, d], got {sub_centers.shape}, {mu.shape}"
        )
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"the dropout rate must be in [0, 1), got {rate}")
    scores = jnp.einsum(
        "ckd,bd->bck", sub_centers, jax.lax.stop_gradient(mu), precision=jax.lax.Precision.HIGHEST
    )
    if rng is not None and rate > 0.0:
        keep = jax.random.bernoulli(rng, 1.0 - rate, scores.shape)
        scores = jnp.where(keep, scores / (1.0 - rate), 0.0)
    index = jnp.argmax(jax.lax.stop_gradient(scores), axis=-1).astype(jnp.int32)  # [B, C]
    clusters = jnp.arange(sub_centers.shape[0])[None, :]
    return sub_centers[clusters, index], index
