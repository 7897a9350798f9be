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


def with_xla_flags(flags: str) -> str:
    """`flags` after the session's XLA flags (tests/conftest.py), for a subprocess's XLA_FLAGS."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def run_script(args: list[str], *, env_extra: dict | None = None, timeout: int = 600, **kwargs):
    """Runs a Python script of the repo in a fresh process, returns the process. An XLA_FLAGS of
    `env_extra` is added to the session's flags."""
    env_extra = dict(env_extra or {})
    if "XLA_FLAGS" in env_extra:
        env_extra["XLA_FLAGS"] = with_xla_flags(env_extra["XLA_FLAGS"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": REPO, **env_extra}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


# Small builders with random images (tests/data/test_pipeline.py): one with a region of interest.
EXTRA = ("pipeline_test_crowd/a", "pipeline_test_roi_crowd/a")


@pytest.fixture(scope="session")
def extra_data_dir(tiny_data_dir) -> str:
    """The tiny data plus two more data sets in the same directory (registered for the session;
    evaluation tests use them as other data sets and as a data set with an ROI)."""
    from tests.data import test_pipeline

    with pytest.MonkeyPatch.context() as mp:
        for builder in (test_pipeline.PipelineTestCrowd, test_pipeline.PipelineTestRoiCrowd):
            mp.setitem(datasets.BUILDER_MODULES, builder.name, test_pipeline.__name__)
        for name in EXTRA:
            datasets.build(name, data_dir=tiny_data_dir)
        yield tiny_data_dir
