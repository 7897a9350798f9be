"""Session-wide test settings.

XLA compilations are cached on disk for the session (a fresh directory each run, shared with the
subprocesses the tests start): the tiny variants of configs that differ only in data settings
compile the same programs, and a cache hit turns a 70 s CPU compile into a few seconds. Results
are unaffected: the cache key is the full program and the compiler options.

XLA's CPU backend compiles at LLVM optimisation level 0 here (`TEST_XLA_FLAGS`, in `XLA_FLAGS`,
which the subprocesses inherit): the tests compile hundreds of small programs and run each only a
few times, and level 0 halves the CPU time of a tiny training run (quickstart:tiny, 4 steps: 29 s
to 14 s), nearly all of it compilation. XLA's HLO passes (fusion included) run as at the default
level, so the jaxlib 0.10.2 fusion bug of `crowdjax/__init__.py` still shows without its fix.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import crowdjax  # noqa: F401  (first: its XLA CPU workaround must precede every computation)

# gs:// through fsspec's gcsfs, which the tests point at a local GCS emulator
# (tests/gcs_emulator.py), even where TensorFlow is installed: epath would take TensorFlow's GCS
# filesystem, which cannot reach the emulator, and it decides once, at its first path. gcsfs reads
# its variable when imported: no bucket-type look-up through the storage control API, which the
# emulator lacks.
os.environ.setdefault("EPATH_USE_TF", "false")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="crowdjax-xla-cache-")
    atexit.register(functools.partial(shutil.rmtree, _cache, ignore_errors=True))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
