"""The synthetic data sets that crowdjax renders itself, built on first use.

A run (train.py, `python -m crowdjax.preparation`) calls `build_embedded_data` before anything
reads data: the `synthetic_crowd/*` data sets it uses and that are not built yet are rendered
(by process 0, while the other processes wait; JAX must be initialized first, see
`crowdjax.sharding.maybe_initialize_distributed`). Real data sets must be built by the user
(`python -m crowdjax.data.build`); their absence raises an error quoting the build command where
they are first read.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax

from crowdjax import sharding
from crowdjax.data import datasets, settings
from crowdjax.metric_writers import log


def build_embedded_data(config, eval_datasets: Iterable[str]) -> None:
    """Builds every synthetic data set of the run not built yet: its training data sets, its
    adaptation target and `eval_datasets` (those of its evaluations)."""
    names = set(settings.dataset_names(config.data))
    names |= {config.data.target} - {""}
    names |= set(eval_datasets) - {""}
    data_dir = config.data.data_dir or None
    missing = [
        name
        for name in sorted(names)
        if name.startswith("synthetic_crowd") and not datasets.is_prepared(name, data_dir=data_dir)
    ]
    if missing and jax.process_index() == 0:  # One writer; the other processes wait for it.
        for name in missing:
            log(f"building {name} (first use)...")
            datasets.build(name, data_dir=data_dir)
    sharding.barrier("crowdjax-embedded-data")
