"""A UOT variant whose loss term is non-finite (for the NaN-stop test)."""

import dataclasses

import jax.numpy as jnp

from crowdjax.methods.uot import method as uot


def _loss_fn(params, model_state, batch, rng, *, model, config):
    loss, (metrics, state) = uot.loss_fn(
        params, model_state, batch, rng, model=model, config=config
    )
    return loss * jnp.nan, ({**metrics, "uot": metrics["uot"] * jnp.nan}, state)


METHOD = dataclasses.replace(uot.METHOD, name="nan_uot", loss_fn=_loss_fn)
