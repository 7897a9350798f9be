"""The jaxlib 0.10.2 CPU reduction bug stays worked around (see `crowdjax/__init__.py`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

import crowdjax


def _batched_reduction(labels, shifts):
    p = jax.nn.softmax(
        8.0 * jax.nn.one_hot(jnp.minimum(labels[None] + shifts[:, None, None], 10), 11)
    )
    w = jnp.sum(jnp.abs(labels[..., None] - jnp.arange(11.0)) * p, axis=-1)
    return (w * p[..., 0]).sum(axis=(1, 2))


def test_jit_equals_numpy_on_the_reduction_that_broke():
    labels = np.random.default_rng(0).integers(0, 11, (128, 128))
    shifts = np.arange(3)
    # The same computation in numpy, independent of XLA.
    onehot = np.eye(11)[np.minimum(labels[None] + shifts[:, None, None], 10)] * 8.0
    p = np.exp(onehot - onehot.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    w = (np.abs(labels[..., None] - np.arange(11.0)) * p).sum(-1)
    expected = (w * p[..., 0]).sum(axis=(1, 2))
    got = jax.jit(_batched_reduction)(jnp.asarray(labels, jnp.int32), jnp.asarray(shifts))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4)


def test_the_flag_is_set_for_the_affected_jaxlib():
    import importlib.metadata

    if importlib.metadata.version("jaxlib") in crowdjax._AFFECTED_JAXLIB:
        assert crowdjax._XLA_CPU_FIX in os.environ.get("XLA_FLAGS", "")
