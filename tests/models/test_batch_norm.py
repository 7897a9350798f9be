"""Tests of the BatchNorm convention (crowdjax.models.batch_norm) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.models.batch_norm import MaskedBatchNorm, mask_to_features


def _stats(x, mask, variables=None):
    bn = MaskedBatchNorm(momentum=0.1)
    variables = variables or bn.init(jax.random.key(0), x, train=False)
    y, updates = bn.apply(variables, x, train=True, mask=mask, mutable=["batch_stats"])
    return np.asarray(y), jax.tree.map(np.asarray, updates["batch_stats"]), variables


def test_training_statistics_are_those_of_the_real_pixels():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (3, 6, 8, 4)).astype(np.float32)
    mask = np.zeros((3, 12, 16), bool)  # image resolution, twice the features'
    mask[0, :10, :12] = True
    mask[1] = True  # the third example is all padding
    y, stats, _ = _stats(jnp.asarray(x), jnp.asarray(mask))
    feature_mask = mask.reshape(3, 6, 2, 8, 2).any(axis=(2, 4))
    real = x[feature_mask]
    # PyTorch momentum 0.1 from mean 0 / var 1: running = 0.9 running + 0.1 batch (biased var).
    np.testing.assert_allclose(stats["mean"], 0.1 * real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * real.var(0), rtol=1e-5)
    normalised = (x - real.mean(0)) / np.sqrt(real.var(0) + 1e-5)
    np.testing.assert_allclose(y, normalised, rtol=1e-4, atol=1e-4)


def test_padding_does_not_change_the_statistics():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    padded = rng.normal(10.0, 5.0, (3, 8, 12, 3)).astype(np.float32)  # garbage in the padding
    padded[:2, :5, :7] = real
    mask = np.zeros((3, 8, 12), bool)
    mask[:2, :5, :7] = True  # a padded third example, and padded pixels
    y_real, stats_real, variables = _stats(jnp.asarray(real), None)
    y_pad, stats_pad, _ = _stats(jnp.asarray(padded), jnp.asarray(mask), variables)
    for key in ("mean", "var"):
        np.testing.assert_allclose(stats_pad[key], stats_real[key], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y_pad[:2, :5, :7], y_real, rtol=1e-5, atol=1e-6)
    # Without the mask the padding would enter (the check above can fail).
    _, stats_unmasked, _ = _stats(jnp.asarray(padded), None, variables)
    assert not np.allclose(stats_unmasked["mean"], stats_real["mean"], atol=1e-3)


def test_evaluation_uses_the_running_averages_only():
    bn = MaskedBatchNorm()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 4, 3)), jnp.float32)
    variables = bn.init(jax.random.key(0), x, train=False)
    variables = {
        "params": {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, 1.0, -1.0])},
        "batch_stats": {"mean": jnp.array([0.5, -1.0, 0.0]), "var": jnp.array([4.0, 1.0, 0.25])},
    }
    y = bn.apply(variables, x, train=False)
    bs, p = variables["batch_stats"], variables["params"]
    want = (np.asarray(x) - bs["mean"]) / np.sqrt(bs["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6)
    # The same image gives the same output whatever else is in the batch.
    np.testing.assert_allclose(bn.apply(variables, x[:1], train=False), y[:1], rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 5), (3, 7), (12, 20)])
def test_mask_to_features_marks_blocks_with_a_real_pixel(shape):
    rng = np.random.default_rng(3)
    mask = rng.uniform(size=(2, 12, 20)) < 0.05
    got = np.asarray(mask_to_features(jnp.asarray(mask), shape))
    h, w = shape
    if 12 % h == 0 and 20 % w == 0:
        sh, sw = 12 // h, 20 // w
        want = np.array(
            [
                [
                    [mask[b, i * sh : (i + 1) * sh, j * sw : (j + 1) * sw].any() for j in range(w)]
                    for i in range(h)
                ]
                for b in range(2)
            ]
        )
    else:  # nearest input pixel
        rows, cols = (np.arange(h) * 12) // h, (np.arange(w) * 20) // w
        want = mask[:, rows][:, :, cols]
    np.testing.assert_array_equal(got, want)
