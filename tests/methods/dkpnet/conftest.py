"""The tiny synthetic data set of the engine tests, and two more small data sets beside it."""

from tests.engine.conftest import extra_data_dir, tiny_data_dir  # noqa: F401
