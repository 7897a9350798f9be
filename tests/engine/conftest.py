"""Fixtures for engine tests: the tiny synthetic data set, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crowdjax.data import datasets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "synthetic_crowd/tiny"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("data"))
    datasets.build(TINY, data_dir=data_dir)
    return data_dir


def run_script(args: list[str], *, env_extra: dict | None = None, timeout: int = 600, **kwargs):
    """Runs a Python script of the repo in a fresh process (own XLA flags), returns the process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
