"""crowdjax: crowd counting in JAX/Flax.

Importing the package works around a wrong-result bug of XLA's CPU backend in jaxlib 0.10.2
(the class of jax-ml/jax#39103): jitted, batched reductions over maps of about 112 x 112 and
more can return wrong values (a vmapped DCE loss equal to cross-entropy; 10 lines of plain jnp
reproduce it, `tests/test_xla_cpu_workaround.py`). Disabling the YNNPACK reduce fusion fixes every
case seen. The flag is appended to `XLA_FLAGS` before JAX starts its backends, so import
crowdjax before the first JAX computation (the entry points and the tests do).
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
