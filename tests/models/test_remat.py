"""`remat` of the backbones (VGG stages, HRNet's blocks and modules): the same parameters, loss,
gradients and batch statistics as without it, and the backward pass really recomputes (the
differentiated program holds `jax.checkpoint`'s primitive); `config.model.remat` reaches them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (
    asnet_synthetic,
    autoscale_synthetic,
    dkpnet_synthetic,
    l2sm_synthetic,
    quickstart,
)
from crowdjax import registry
from crowdjax.models.hrnet import HRNetStage3
from crowdjax.models.vgg import VGG

SLOW = pytest.mark.slow  # ~15 s each on 2 loaded cores: one VGG method's path runs by default.
HRNET_TINY = dict(
    branch_channels=(4, 8, 16), stem_channels=8, layer1_planes=4, blocks=1, stage3_modules=1
)


def _images(shape):
    return jax.random.normal(jax.random.key(1), shape, jnp.float32)


def _vgg_loss(model, params, images):
    return jnp.mean(model.apply({"params": params}, images) ** 2)


def _hrnet_loss(model, params, stats, images):
    out, updates = model.apply(
        {"params": params, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]
    )
    return jnp.mean(out**2), updates["batch_stats"]


def _has_remat(jaxpr) -> bool:
    return "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


def _assert_trees_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # Two backward-pass compiles: ~50 s on 2 loaded cores.
def test_vgg_remat_gives_the_same_parameters_loss_and_gradients():
    images = _images((2, 32, 32, 3))
    plain = VGG(arch="vgg16", stages=3, width=1 / 16)
    remat = VGG(arch="vgg16", stages=3, width=1 / 16, remat=True)
    params = jax.jit(plain.init)(jax.random.key(0), images)["params"]
    # The same parameter tree (names and shapes): checkpoints and importers are unaffected.
    remat_params = jax.jit(remat.init)(jax.random.key(0), images)["params"]
    _assert_trees_close(params, remat_params)
    grad = jax.value_and_grad(_vgg_loss, argnums=1)
    plain_loss, plain_grads = jax.jit(lambda p: grad(plain, p, images))(params)
    remat_loss, remat_grads = jax.jit(lambda p: grad(remat, p, images))(params)
    np.testing.assert_allclose(float(remat_loss), float(plain_loss), rtol=1e-6)
    _assert_trees_close(remat_grads, plain_grads)
    assert _has_remat(jax.make_jaxpr(lambda p: grad(remat, p, images))(params))
    assert not _has_remat(jax.make_jaxpr(lambda p: grad(plain, p, images))(params))


def _compiled_convolutions(compiled) -> int:
    return compiled.as_text().count(" convolution(")


def test_the_compiled_step_keeps_the_recomputation_and_needs_less_memory():
    """XLA:CPU expands jax.checkpoint's optimization barriers away before merging common
    subexpressions, which folds the recomputation into the forward pass (remat a no-op: the
    same convolutions, the same memory); importing crowdjax keeps them on a CPU-only install."""
    if jax.default_backend() != "cpu":
        pytest.skip("XLA:CPU's pipeline")
    images = _images((2, 64, 64, 3))
    plain = VGG(arch="vgg16", stages=3, width=1 / 4)
    remat = VGG(arch="vgg16", stages=3, width=1 / 4, remat=True)
    params = jax.jit(plain.init)(jax.random.key(0), images)["params"]
    grad = jax.grad(_vgg_loss, argnums=1)
    compiled = {
        name: jax.jit(lambda p, m=model: grad(m, p, images)).lower(params).compile()
        for name, model in (("plain", plain), ("remat", remat))
    }
    # 7 convolutions: each has a forward, an input- and a kernel-gradient convolution (the
    # first no input gradient); remat recomputes the forward ones of the backward pass.
    assert _compiled_convolutions(compiled["plain"]) == 3 * 7 - 1
    assert _compiled_convolutions(compiled["remat"]) > _compiled_convolutions(compiled["plain"])
    temp = {k: c.memory_analysis().temp_size_in_bytes for k, c in compiled.items()}
    assert temp["remat"] < 0.8 * temp["plain"]
    _assert_trees_close(compiled["remat"](params), compiled["plain"](params))


@pytest.mark.slow  # Two HRNet backward-pass compiles: minutes on 2 loaded cores.
def test_hrnet_remat_gives_the_same_loss_gradients_and_batch_statistics():
    images = _images((2, 32, 32, 3))
    plain = HRNetStage3(**HRNET_TINY)
    remat = HRNetStage3(**HRNET_TINY, remat=True)
    init = lambda model: jax.jit(lambda k: model.init(k, images, train=False))(jax.random.key(0))
    variables = init(plain)
    _assert_trees_close(variables, init(remat))
    params, stats = variables["params"], variables["batch_stats"]
    grad = jax.value_and_grad(_hrnet_loss, argnums=1, has_aux=True)
    (plain_loss, plain_stats), plain_grads = jax.jit(lambda p: grad(plain, p, stats, images))(
        params
    )
    (remat_loss, remat_stats), remat_grads = jax.jit(lambda p: grad(remat, p, stats, images))(
        params
    )
    np.testing.assert_allclose(float(remat_loss), float(plain_loss), rtol=1e-6)
    _assert_trees_close(remat_grads, plain_grads)
    _assert_trees_close(remat_stats, plain_stats)
    assert _has_remat(jax.make_jaxpr(lambda p: grad(remat, p, stats, images))(params))


@pytest.mark.parametrize(
    "make_config",
    [
        pytest.param(lambda: quickstart.get_config("tiny"), id="uot"),
        pytest.param(lambda: dkpnet_synthetic.get_config("tiny"), id="dkpnet"),
        pytest.param(lambda: asnet_synthetic.get_config("tiny"), id="asnet", marks=SLOW),
        pytest.param(lambda: l2sm_synthetic.get_config("tiny"), id="l2sm", marks=SLOW),
        pytest.param(
            lambda: autoscale_synthetic.get_config("loc,tiny"), id="autoscale", marks=SLOW
        ),
    ],
)
def test_config_model_remat_reaches_the_backbone(make_config):
    config = make_config()
    method = registry.get_method(config.method)
    assert config.model.remat is False
    assert not _has_remat(jax.make_jaxpr(jax.grad(_model_loss(method, config)))(0.0))
    config.model.remat = True
    assert _has_remat(jax.make_jaxpr(jax.grad(_model_loss(method, config)))(0.0))


def _model_loss(method, config):
    """A scalar function of an input offset through the method's model (its backward pass)."""
    model = method.make_model(config)
    images = _images((1, 64, 64, 3))
    kwargs = {}
    if config.method.startswith("dkpnet"):
        kwargs = {"train": True, "mutable": ["batch_stats"], "rngs": {"latent": jax.random.key(2)}}
    init = lambda: method.init_variables(model, jax.random.key(0), config, input_shape=(64, 64))
    variables = jax.eval_shape(init)
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)

    def loss(offset):
        out = model.apply(variables, images + offset, **kwargs)
        return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(out))

    return loss
