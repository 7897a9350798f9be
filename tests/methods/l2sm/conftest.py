"""The tiny synthetic data set of the engine tests, for the preparation test."""

from tests.engine.conftest import tiny_data_dir  # noqa: F401
