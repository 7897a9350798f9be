"""The tiny synthetic data set of the engine tests."""

from tests.engine.conftest import tiny_data_dir  # noqa: F401
