"""Session-wide test settings.

XLA compilations are cached on disk for the session (a fresh directory each run, shared with the
subprocesses the tests start): the tiny variants of configs that differ only in data settings
compile the same programs, and a cache hit turns a 70 s CPU compile into a few seconds. Results
are unaffected: the cache key is the full program and the compiler options.
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

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="crowdjax-xla-cache-")
    atexit.register(functools.partial(shutil.rmtree, _cache, ignore_errors=True))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
