"""Tests of crowdjax.optimizers: each optimizer and schedule against a hand-computed step, and
parameter groups that update independently (a frozen group stays bit-identical)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax import run
from crowdjax.optimizers import Optimizers, default_optimizer_config, make_optimizer
from tests.engine import toy_configs

P = np.array([1.0, -2.0, 0.5], np.float32)
G1 = np.array([0.3, -0.1, 0.0], np.float32)
G2 = np.array([-0.2, 0.4, 0.1], np.float32)
EPS = 1e-8  # optax's adam eps


def _two_steps(**fields) -> tuple[np.ndarray, np.ndarray]:
    """Parameters after one and after two updates with gradients G1 then G2."""
    tx = make_optimizer(default_optimizer_config(**fields), total_steps=10)
    params = {"w": jnp.asarray(P)}
    state = tx.init(params)
    out = []
    for g in (G1, G2):
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        out.append(np.asarray(params["w"], np.float64))
    return out[0], out[1]


def test_adam_weight_decay_is_pytorch_l2():
    # torch.optim.Adam(weight_decay=wd): g' = g + wd p; first step p - lr g' / (|g'| + eps).
    # Second step with the bias-corrected moments (b1 0.9, b2 0.999) of g'_1 and g'_2.
    lr, wd = 0.1, 0.5
    one, two = _two_steps(name="adam", learning_rate=lr, weight_decay=wd)
    g1 = G1 + wd * P.astype(np.float64)
    p1 = P - lr * g1 / (np.abs(g1) + EPS)
    g2 = G2 + wd * p1
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    p2 = p1 - lr * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + EPS)
    np.testing.assert_allclose(one, p1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(two, p2, rtol=0, atol=1e-5)  # float32 rounding


def test_adamw_decouples_the_decay():
    # optax.adamw: p - lr (m_hat / (sqrt(v_hat) + eps) + wd p); first step m_hat / ... = g / |g|.
    lr, wd = 0.1, 0.5
    one, _ = _two_steps(name="adamw", learning_rate=lr, weight_decay=wd)
    np.testing.assert_allclose(one, P - lr * (G1 / (np.abs(G1) + EPS) + wd * P), atol=1e-6)


def test_sgd_momentum_with_l2_as_pytorch():
    # torch.optim.SGD(momentum=m, weight_decay=wd): d = g + wd p; buf = m buf + d; p -= lr buf.
    lr, wd, m = 0.1, 0.01, 0.9
    one, two = _two_steps(name="sgd", learning_rate=lr, weight_decay=wd, momentum=m)
    d1 = G1 + wd * P
    p1 = P - lr * d1
    d2 = G2 + wd * p1
    p2 = p1 - lr * (m * d1 + d2)
    np.testing.assert_allclose(one, p1, rtol=1e-6)
    np.testing.assert_allclose(two, p2, rtol=1e-6)


@pytest.mark.parametrize(
    "fields, second_lr",
    [
        # Cosine to 0 over the 10 steps: the second update (count 1) uses lr (1 + cos(pi/10)) / 2.
        (dict(schedule="cosine"), 0.5 * (1 + math.cos(math.pi / 10))),
        # Warm-up over 4 steps from 0: 0 then 1/4 of the peak.
        (dict(schedule="warmup_cosine", warmup_steps=4), 0.25),
        # x0.5 every step, staircase: 1 then 0.5.
        (dict(schedule="step", decay_every=1, decay_factor=0.5), 0.5),
        (dict(schedule="constant"), 1.0),
    ],
)
def test_schedules(fields, second_lr):
    one, two = _two_steps(name="sgd", learning_rate=1.0, momentum=0.0, **fields)
    first_lr = 0.0 if fields["schedule"] == "warmup_cosine" else 1.0
    np.testing.assert_allclose(one, P - first_lr * G1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(two, P - first_lr * G1 - second_lr * G2, rtol=1e-6, atol=1e-7)


def test_gradient_clipping_by_global_norm():
    one, _ = _two_steps(name="sgd", learning_rate=1.0, momentum=0.0, grad_clip_norm=0.1)
    np.testing.assert_allclose(one, P - G1 * 0.1 / np.linalg.norm(G1), rtol=1e-6)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(default_optimizer_config(name="lamb"), 10)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        make_optimizer(default_optimizer_config(schedule="linear"), 10)


# ---------------------------------------------------------------------------------- groups


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _groups():
    transforms = {
        "a": make_optimizer(default_optimizer_config(learning_rate=0.1, weight_decay=0.1), 10),
        "b": make_optimizer(
            default_optimizer_config(name="sgd", learning_rate=0.1, weight_decay=0.1), 10
        ),
    }
    return Optimizers(transforms, lambda path: path[0])


def test_updating_one_group_leaves_the_other_bit_identical():
    optimizer = _groups()
    # -0.0 would turn into +0.0 under an added zero update: the frozen group is not touched.
    params = {"a": {"w": jnp.array([1.0, -0.0])}, "b": {"w": jnp.array([-0.0, 2.0])}}
    grads = jax.tree.map(jnp.ones_like, params)
    state = optimizer.init(params)
    for _ in range(3):  # momentum and weight decay would make a touched group drift
        new_params, new_state = optimizer.apply(params, state, grads, groups=("a",))
        assert _bits(new_params["b"]) == _bits(params["b"])
        assert _bits(new_state["b"]) == _bits(state["b"])
        assert not np.array_equal(new_params["a"]["w"], params["a"]["w"])
        params, state = new_params, new_state
    both, _ = optimizer.apply(params, state, grads)
    assert all(not np.array_equal(both[g]["w"], params[g]["w"]) for g in "ab")


def test_group_assignment_errors_name_the_parameter_and_groups():
    optimizer = _groups()
    with pytest.raises(ValueError, match="parameter c/w is in group 'c', which has no optimizer"):
        optimizer.init({"a": {"w": jnp.ones(1)}, "b": {"w": jnp.ones(1)}, "c": {"w": jnp.ones(1)}})
    with pytest.raises(ValueError, match=r"groups \['b'\] hold no parameters"):
        optimizer.init({"a": {"w": jnp.ones(1)}})
    with pytest.raises(ValueError, match="unknown optimizer groups"):
        params = {"a": {"w": jnp.ones(1)}, "b": {"w": jnp.ones(1)}}
        optimizer.apply(params, optimizer.init(params), params, groups=("d",))


def test_groups_need_a_method_that_declares_them():
    config = toy_configs.get_config("prepared")
    config.optimizers.extra = default_optimizer_config()
    with pytest.raises(ValueError, match="declares no parameter groups"):
        run.Setup(config)


def _toy_batch(config, seed=0):
    rng = np.random.default_rng(seed)
    h = w = config.data.crop_size
    one = {
        "image": rng.normal(size=(2, h, w, 3)).astype(np.float32),
        "image_mask": np.ones((2, h, w), bool),
        "density": rng.uniform(0, 0.1, (2, h, w)).astype(np.float32),
    }
    return {"source": one, "target": {"image": one["image"][::-1], "image_mask": one["image_mask"]}}


@pytest.mark.parametrize("frozen", ["generator", "critic"])
def test_two_player_step_updates_only_its_groups(frozen):
    """The toy two-player method's own step, jitted by the engine: the frozen player's
    parameters and optimizer state stay bit-identical, the other player's move."""
    config = toy_configs.get_config("two_player")
    config.toy.groups = tuple({"generator", "critic"} - {frozen})
    setup = run.Setup(config, devices=jax.devices()[:1])
    state = setup.init(jax.random.key(0))
    for step in range(2):  # the second step has non-zero momentum and Adam moments
        before = jax.device_get(state)
        state, metrics = setup.train_step(state, _toy_batch(config, step))
        after = jax.device_get(state)
        assert _bits(after.params[frozen]) == _bits(before.params[frozen])
        assert _bits(after.opt_state[frozen]) == _bits(before.opt_state[frozen])
        (moving,) = config.toy.groups
        assert _bits(after.params[moving]) != _bits(before.params[moving])
        assert np.isfinite(metrics["loss"])
