"""Methods that go non-finite, for the NaN-stop tests.

* METHOD: a UOT variant whose loss term is non-finite.
* INF_AT_STEP: the toy CONSTANT method (`tests.engine.toy_methods`) whose step number
  `config.toy.inf_step` makes its parameter inf, from finite metrics (a finite gradient that
  overflows a parameter); from the step after, its loss is non-finite.
"""

import dataclasses

import jax.numpy as jnp

from crowdjax.methods.uot import method as uot
from crowdjax.run import default_train_step
from tests.engine import toy_methods


def _loss_fn(params, model_state, batch, rng, *, model, config):
    loss, (metrics, state) = uot.loss_fn(
        params, model_state, batch, rng, model=model, config=config
    )
    return loss * jnp.nan, ({**metrics, "uot": metrics["uot"] * jnp.nan}, state)


METHOD = dataclasses.replace(uot.METHOD, name="nan_uot", loss_fn=_loss_fn)


def _inf_at_step(state, batch, **kwargs):
    state, metrics = default_train_step(state, batch, **kwargs)
    overflow = state.step == kwargs["config"].toy.inf_step
    params = {"c": jnp.where(overflow, jnp.inf, state.params["c"])}
    return state.replace(params=params), metrics


INF_AT_STEP = dataclasses.replace(
    toy_methods.CONSTANT, name="toy_inf_at_step", train_step=_inf_at_step
)
