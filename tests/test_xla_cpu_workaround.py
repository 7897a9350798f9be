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


def test_remat_barriers_are_kept_only_where_jax_runs_on_the_cpu(monkeypatch):
    def flags_after(env: dict, plugin: bool) -> str:
        for key in ("XLA_FLAGS", "JAX_PLATFORMS"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(crowdjax, "_accelerator_plugin_installed", lambda: plugin)
        crowdjax._keep_remat_on_cpu()
        return os.environ.get("XLA_FLAGS", "")

    assert crowdjax._KEEP_REMAT in flags_after({}, plugin=False)
    assert crowdjax._KEEP_REMAT in flags_after({"JAX_PLATFORMS": "cpu"}, plugin=True)
    assert crowdjax._KEEP_REMAT not in flags_after({}, plugin=True)  # A GPU or TPU may run.
    assert crowdjax._KEEP_REMAT not in flags_after({"JAX_PLATFORMS": "cuda"}, plugin=False)
    # A user's own list of disabled passes is not replaced.
    mine = "--xla_disable_hlo_passes=foo"
    assert flags_after({"XLA_FLAGS": mine}, plugin=False) == mine
    other = "--xla_dump_to=x"
    assert flags_after({"XLA_FLAGS": other}, plugin=False) == f"{other} {crowdjax._KEEP_REMAT}"
