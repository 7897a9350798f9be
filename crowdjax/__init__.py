"""crowdjax: crowd counting in JAX/Flax.

Importing the package works around a wrong-result bug of XLA's CPU backend in jaxlib 0.10.2
(the class of jax-ml/jax#39103): jitted, batched reductions over maps of about 112 x 112 and
more can return wrong values (a vmapped DCE loss equal to cross-entropy; 10 lines of plain jnp
reproduce it, `tests/test_xla_cpu_workaround.py`). Disabling the YNNPACK reduce fusion fixes every
case seen. The flag is appended to `XLA_FLAGS` before JAX starts its backends, so import
crowdjax before the first JAX computation (the entry points and the tests do).

Where JAX has no GPU or TPU plugin (a CPU-only install), importing also keeps `jax.checkpoint`'s
optimization barriers through XLA's CPU pipeline: without that, XLA:CPU expands them away before
common-subexpression elimination, which merges the backward pass's recomputation into the forward
pass and makes `model.remat` a no-op (72 convolutions in the lowered UOT step, 56 compiled, and
the same memory). Programs without `jax.checkpoint` hold no barriers and are unchanged.
"""

import importlib.metadata as _metadata
import os as _os

_XLA_CPU_FIX = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
_AFFECTED_JAXLIB = ("0.10.2",)


def _apply_xla_cpu_workaround() -> None:
    try:
        version = _metadata.version("jaxlib")
    except _metadata.PackageNotFoundError:
        return
    flags = _os.environ.get("XLA_FLAGS", "")
    if version in _AFFECTED_JAXLIB and "xla_cpu_experimental_ynn_fusion_type" not in flags:
        _os.environ["XLA_FLAGS"] = f"{flags} {_XLA_CPU_FIX}".strip()


_apply_xla_cpu_workaround()

_KEEP_REMAT = "--xla_disable_hlo_passes=cse_barrier_expander"


def _accelerator_plugin_installed() -> bool:
    """Whether JAX may start a GPU or TPU backend (its plugins, libtpu)."""
    if _metadata.entry_points(group="jax_plugins"):
        return True
    for package in ("libtpu", "libtpu-nightly", "jax-cuda12-plugin", "jax-cuda13-plugin"):
        try:
            _metadata.version(package)
            return True
        except _metadata.PackageNotFoundError:
            pass
    return False


def _keep_remat_on_cpu() -> None:
    flags = _os.environ.get("XLA_FLAGS", "")
    platforms = _os.environ.get("JAX_PLATFORMS", "")
    cpu_only = platforms == "cpu" or (not platforms and not _accelerator_plugin_installed())
    # A user's own list of disabled passes is left as it is (a second flag would replace it).
    if cpu_only and "xla_disable_hlo_passes" not in flags:
        _os.environ["XLA_FLAGS"] = f"{flags} {_KEEP_REMAT}".strip()


_keep_remat_on_cpu()
