"""The heads' initialisation switch (`layers.head_initialisers`, `model.head_init`): "default" is
exactly each method's own initialisation, "small" starts a head on a 0-255 backbone near the
count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import dkpnet_synthetic
from crowdjax import registry
from crowdjax.methods.asnet.model import ASNet
from crowdjax.methods.l2sm.model import L2SMNet
from crowdjax.models import layers

WIDTH = 1 / 16


def _params(model, shape=(1, 64, 64, 3)):
    x = jnp.zeros(shape, jnp.float32)
    return model.init(jax.random.key(0), x, method=model.init_all)["params"]


def _heads(params):
    return {k: v for k, v in params.items() if k not in ("backbone", "scale_conv")}


# Sum of |every parameter| of each model (width 1/16, key 0) drawn by the code before the switch
# existed (161aef8): "default" must draw exactly those parameters, so older runs are unchanged.
BEFORE_THE_SWITCH = {L2SMNet: 4832.896959228974, ASNet: 5054.880267752921}


@pytest.mark.parametrize("model_class", [L2SMNet, ASNet])
def test_default_is_the_models_own_initialisation(model_class):
    params = _params(model_class(width=WIDTH, head_init="default"))
    total = sum(np.abs(np.asarray(v, np.float64)).sum() for v in jax.tree.leaves(params))
    np.testing.assert_allclose(total, BEFORE_THE_SWITCH[model_class], rtol=1e-9)


def test_small_l2sm_heads_are_normal_001_with_zero_biases():
    params = _heads(_params(L2SMNet(width=WIDTH, head_init="small")))
    kernels = np.concatenate([np.ravel(v["kernel"]) for v in params.values()])
    biases = np.concatenate([np.ravel(v["bias"]) for v in params.values()])
    assert kernels.size > 5000
    assert abs(kernels.std() - 0.01) < 0.0005 and abs(kernels.mean()) < 0.0005
    np.testing.assert_array_equal(biases, 0.0)


def test_small_asnet_generator_output_starts_at_zero_and_discriminators_are_unchanged():
    small = _params(ASNet(width=WIDTH, head_init="small"))
    default = _params(ASNet(width=WIDTH))
    generator = small["generator"]
    np.testing.assert_array_equal(generator["output"]["kernel"], 0.0)
    np.testing.assert_array_equal(generator["output"]["bias"], 0.0)
    assert abs(float(generator["dilated1"]["kernel"].std()) - 0.01) < 0.001
    for d in ("d1", "d2"):  # They see density maps, not the backbone's features.
        jax.tree.map(np.testing.assert_array_equal, small[d], default[d])


def test_small_output_still_learns():
    # A zero output kernel must not block the gradient of the count (zero-init last layer).
    model = ASNet(width=WIDTH, head_init="small")
    x = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3)) * 255.0
    variables = model.init(jax.random.key(0), x, method=model.init_all)

    def count(params):
        return model.apply({**variables, "params": params}, x).sum()

    grads = jax.grad(count)(variables["params"])
    assert float(jnp.abs(grads["generator"]["output"]["kernel"]).max()) > 0.0


def _dkpnet(head_init):
    config = dkpnet_synthetic.get_config("va,tiny")
    config.model.head_init = head_init
    method = registry.get_method(config.method)
    model = method.make_model(config)
    init = jax.jit(lambda key: method.init_variables(model, key, config, input_shape=(64, 64)))
    return model, init(jax.random.key(0))  # Jitted: HRNet op by op takes many seconds.


def test_dkpnet_default_is_its_own_initialisation_and_small_starts_at_zero():
    # Sum of |params| of the tiny VA model (key 0) drawn by the code before the switch (5ee5507).
    _, default = _dkpnet("default")
    total = sum(np.abs(np.asarray(v, np.float64)).sum() for v in jax.tree.leaves(default["params"]))
    np.testing.assert_allclose(total, 1486.672687889557, rtol=1e-7)  # Jitted: float32 sums.
    # From scratch (no weights here) the output conv of flax's default drew counts in the
    # thousands on 256 x 256 crops of part B; "small" starts every count at 0 and still learns.
    model, small = _dkpnet("small")
    np.testing.assert_array_equal(small["params"]["out"]["kernel"], 0.0)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))

    @jax.jit
    def density(variables, params):
        out, _ = model.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"latent": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        return out["density"]

    assert float(jnp.abs(density(small, small["params"])).max()) == 0.0
    assert float(jnp.abs(density(default, default["params"])).sum()) > 1.0
    grads = jax.grad(lambda p: density(small, p).sum())(small["params"])
    assert float(jnp.abs(grads["out"]["kernel"]).max()) > 0.0


def test_unknown_head_init_is_refused():
    with pytest.raises(ValueError, match="head_init"):
        layers.head_initialisers("tiny", nn.initializers.zeros, nn.initializers.zeros)
