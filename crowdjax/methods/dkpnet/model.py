"""DKPNet's network (Chen et al., ICCV 2021, Sec 3.4, Fig. 3): truncated HRNet-W40, a 1 x 1 conv
to 512 channels (x), channel attention y (x <- x ⊙ y) and a head of 1 x 1 convs 64, 32, 1.

Attention (`attention`, the baselines of Tables 2-4):
  "none"  JT: joint training without attention (y = 1).
  "se"    squeeze-and-excitation: y = sigmoid(FC(ReLU(FC(pool(x))))), reduction 16.
  "va"    variational attention (Sec 3.2): an encoder on pool(x) gives q(z|x) = N(mu, diag var);
          z = mu + sqrt(var) * eps in training (rng stream "latent"), z = mu at evaluation; a
          decoder gives y = sigmoid(FC(ReLU(FC(z)))). One learnable Gaussian prior per domain
          (`prior` params: `mu` [C, d], `log_var` [C, d]).
  "inva"  intrinsic VA (Sec 3.3): as "va" with k sub-centers per cluster (`prior` params `mu`
          [C̄, k, d], `log_var` [C̄, d]: the sub-centers of a cluster share its variance).

pool(x) is the mean over the real cells of the image (`image_mask`), so padding of a crop or of
an evaluation bucket changes neither the attention nor the latent.

Not in the paper (our choices, documented fields): the 1 x 1 conv to 512 and the head's 64 and 32
convs are each followed by BatchNorm and ReLU (the public baseline's head has BN + ReLU after
its 3 x 3 convs); the density has no activation (the public baseline ends in a ReLU, which
leaves a small head with no gradient when its outputs start negative); the encoder and decoder
are two-layer MLPs with `hidden` units; the prior means start as N(0, 1) draws (distinct domains
from the first step) and the prior variances at 1. The output stays at stride 4 (the paper's
head has no upsampling; the public baseline upsamples its map to stride 2).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from crowdjax.models import layers
from crowdjax.models.batch_norm import MaskedBatchNorm, mask_to_features
from crowdjax.models.conv import Conv
from crowdjax.models.hrnet import HRNetStage3

ATTENTIONS = ("none", "se", "va", "inva")
OUTPUT_STRIDE = 4
LOG_VAR_RANGE = (-10.0, 10.0)  # q's log variance is clipped: exp stays finite in float32.


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """[B, h, w, C] -> [B, C]: the mean over the feature cells that hold real pixels."""
    if mask is None:
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    where = mask_to_features(mask, x.shape[1:3])[..., None].astype(jnp.float32)
    total = jnp.sum(x.astype(jnp.float32) * where, axis=(1, 2))
    return total / jnp.maximum(jnp.sum(where, axis=(1, 2)), 1.0)  # An all-padding slot: 0.


class VariationalEncoder(nn.Module):
    """pool(x) [B, C] -> (mu [B, d], var [B, d]) of q(z|x)."""

    latent_dim: int
    hidden: int

    @nn.compact
    def __call__(self, pooled):
        h = nn.relu(nn.Dense(self.hidden, name="fc")(pooled))
        mu = nn.Dense(self.latent_dim, name="mu")(h)
        log_var = nn.Dense(self.latent_dim, name="log_var", kernel_init=nn.initializers.zeros)(h)
        return mu, jnp.exp(jnp.clip(log_var, *LOG_VAR_RANGE))


class AttentionDecoder(nn.Module):
    """z [B, d] (or the SE squeeze) -> channel attention y [B, C] in (0, 1)."""

    channels: int
    hidden: int

    @nn.compact
    def __call__(self, z):
        h = nn.relu(nn.Dense(self.hidden, name="fc")(z))
        return nn.sigmoid(nn.Dense(self.channels, name="out")(h))


class DomainPrior(nn.Module):
    """The learnable priors: per domain a mean (or k sub-center means) and a diagonal variance."""

    domains: int
    latent_dim: int
    sub_centers: int = 0  # 0: one mean per domain (VA); k >= 1: [C, k, d] (InVA).

    @nn.compact
    def __call__(self):
        shape = (self.domains, self.latent_dim)
        if self.sub_centers:
            shape = (self.domains, self.sub_centers, self.latent_dim)
        mu = self.param("mu", nn.initializers.normal(1.0), shape, jnp.float32)
        log_var = self.param(
            "log_var", nn.initializers.zeros, (self.domains, self.latent_dim), jnp.float32
        )
        return mu, jnp.exp(log_var)


class DKPNet(nn.Module):
    """DKPNet: [B, H, W, 3] ImageNet-normalised RGB -> density [B, H/4, W/4] and the attention.

    Attributes:
      hrnet: the backbone's settings, HRNetStage3 fields as (name, value) pairs (hashable).
      channels: x's channels (512).
      attention: one of ATTENTIONS.
      domains: C, the number of prior Gaussians (data sets for VA, clusters C̄ for InVA).
      sub_centers: k (InVA).
      latent_dim: d.
      hidden: units of the encoder's and decoder's hidden layers.
      se_reduction: SE's channel reduction.
      head_init: the density head's initialisation, "default" (flax's) or "small" (its 1x1
        convs N(0, 0.01), the output conv at zero so the count starts at 0:
        `crowdjax.models.layers.head_initialisers`).
      dtype: compute dtype of the convs.
    """

    hrnet: tuple = ()
    channels: int = 512
    attention: str = "va"
    domains: int = 3
    sub_centers: int = 3
    latent_dim: int = 16
    hidden: int = 128
    se_reduction: int = 16
    head_channels: tuple = (64, 32)
    head_init: str = "default"
    dtype: Any = jnp.float32

    def setup(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"dkpnet.attention must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        self.backbone = HRNetStage3(**dict(self.hrnet), dtype=self.dtype)
        self.reduce = Conv(self.channels, (1, 1), dtype=self.dtype, name="reduce")
        self.reduce_bn = MaskedBatchNorm(dtype=self.dtype)
        if self.attention == "se":
            hidden = max(1, self.channels // self.se_reduction)
            self.se = AttentionDecoder(self.channels, hidden)
        elif self.attention in ("va", "inva"):
            self.encoder = VariationalEncoder(self.latent_dim, self.hidden)
            self.decoder = AttentionDecoder(self.channels, self.hidden)
            k = self.sub_centers if self.attention == "inva" else 0
            self.prior = DomainPrior(self.domains, self.latent_dim, k)
        default = (nn.initializers.lecun_normal(), nn.initializers.zeros)
        kernel, bias = layers.head_initialisers(self.head_init, *default)
        self.head = [
            Conv(c, (1, 1), dtype=self.dtype, kernel_init=kernel, bias_init=bias)
            for c in self.head_channels
        ]
        self.head_bn = [MaskedBatchNorm(dtype=self.dtype) for _ in self.head_channels]
        kernel, bias = layers.head_initialisers(self.head_init, *default, output=True)
        self.out = Conv(1, (1, 1), dtype=self.dtype, kernel_init=kernel, bias_init=bias)

    @property
    def variational(self) -> bool:
        return self.attention in ("va", "inva")

    def __call__(self, images, *, train: bool, mask=None):
        """Returns {"density" [B, h, w] float32 (h = ceil(H / 4)), "attention" y [B, C]} and,
        for VA/InVA, "mu", "var" [B, d] of q(z|x) and "z" [B, d] (the sample in training,
        mu at evaluation)."""
        x = self.backbone(images, train=train, mask=mask)
        x = nn.relu(self.reduce_bn(self.reduce(x), train=train, mask=mask))
        pooled = masked_mean(x, mask)
        out = {}
        if self.attention == "none":
            y = jnp.ones_like(pooled)
        elif self.attention == "se":
            y = self.se(pooled)
        else:
            mu, var = self.encoder(pooled)
            z = mu
            if train:
                eps = jax.random.normal(self.make_rng("latent"), mu.shape, jnp.float32)
                z = mu + jnp.sqrt(var) * eps
            y = self.decoder(z)
            out.update(mu=mu, var=var, z=z)
        x = x * y[:, None, None, :].astype(x.dtype)
        for conv, bn in zip(self.head, self.head_bn, strict=True):
            x = nn.relu(bn(conv(x), train=train, mask=mask))
        density = self.out(x)[..., 0].astype(jnp.float32)
        out.update(density=density, attention=y)
        return out

    def priors(self):
        """(mu [C, d] or [C, k, d], var [C, d]) of the domain priors (VA/InVA)."""
        return self.prior()

    def init_all(self, images, *, mask=None):
        """Creates every variable (the priors too, which `__call__` does not touch)."""
        out = self(images, train=False, mask=mask)  # Creates the same variables, compiles faster.
        if self.variational:
            self.priors()
        return out
