"""Every command turns on JAX's persistent compilation cache (`crowdjax.compilation_cache`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from crowdjax import compilation_cache

# A command built like train.py / eval.py / predict.py: its main runs under cli.run.
COMMAND = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from crowdjax import cli

    def main(argv):
        del argv
        print("result", float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8)))))

    cli.run(main)
    """
)
HIT = "Persistent compilation cache hit"


def run_command(tmp_path, *args, env_cache=None):
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop(compilation_cache.ENV, None)
    if env_cache is not None:
        env[compilation_cache.ENV] = env_cache
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",  # cache even this tiny program
        JAX_DEBUG_LOG_MODULES="jax._src.compiler",  # logs each cache hit
        PYTHONPATH=os.getcwd(),
    )
    out = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "result 64.0" in out.stdout or "result 63.9" in out.stdout, out.stdout
    return out.stderr


def test_on_by_default_and_a_rerun_loads_from_it(tmp_path):
    first = run_command(tmp_path)
    cache = tmp_path / "xdg" / "crowdjax" / "jax"
    assert any(cache.iterdir()), "the default cache directory stays empty"
    assert HIT not in first
    assert HIT in run_command(tmp_path)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_off_and_elsewhere(tmp_path, how):
    elsewhere = tmp_path / "elsewhere"
    if how == "flag":
        run_command(tmp_path, f"--compilation_cache={elsewhere}")
        run_command(tmp_path, "--compilation_cache=off")
    else:
        run_command(tmp_path, env_cache=str(elsewhere))
        run_command(tmp_path, env_cache="off")
    assert any(elsewhere.iterdir())
    assert not (tmp_path / "xdg").exists()


def test_default_dir_follows_the_environment(monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.default_dir() is None
    monkeypatch.setenv(compilation_cache.ENV, "/somewhere/cache")
    assert compilation_cache.default_dir() == "/somewhere/cache"
    monkeypatch.delenv(compilation_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert compilation_cache.default_dir() == os.path.join("/xdg", "crowdjax", "jax")
