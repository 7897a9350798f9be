"""JAX's persistent compilation cache, on by default for every crowdjax command.

A re-run or resumed job (and eval.py / predict.py after training) loads the compiled train step,
evaluation and prediction programs from disk instead of compiling them again. Where it lives:

  --compilation_cache=<dir>           this command's cache (a local path or any epath URL)
  --compilation_cache=off             no persistent cache
  CROWDJAX_COMPILATION_CACHE=<dir|off> the default for every command
  otherwise                           $XDG_CACHE_HOME/crowdjax/jax (~/.cache/crowdjax/jax)

A `JAX_COMPILATION_CACHE_DIR` set by the user wins over all of these (JAX reads it itself). JAX
only stores programs that took at least `jax_persistent_cache_min_compile_time_secs` (1 s) to
compile, so the many tiny helper programs stay out. Each host of a multi-host run keeps its own
cache; entries are keyed by the program, the devices and the jaxlib version, so a stale entry is
never used.
"""

from __future__ import annotations

import os

import jax

ENV = "CROWDJAX_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false", "")


def default_dir() -> str | None:
    """The cache directory when no flag is given, or None when the environment turns it off."""
    if ENV in os.environ:
        value = os.environ[ENV].strip()
        return None if value.lower() in OFF else value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "crowdjax", "jax")


def enable(cache_dir: str | None) -> str | None:
    """Points JAX's persistent compilation cache at `cache_dir` (None or "off": leave it off).

    Returns the directory in use (the user's JAX_COMPILATION_CACHE_DIR if set), or None.
    Call it before the first compilation."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if cache_dir is None or cache_dir.strip().lower() in OFF:
        return None
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    return cache_dir
