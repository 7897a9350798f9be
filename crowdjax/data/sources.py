"""Sources: random access to the raw records of a split, and an index of their sizes.

A split name resolves (`crowdjax.data.splits`) to a stored split, or a subset of one (the
training split without its held-out validation images); `split_source` gives its raw records
(`datasets.raw_source`: image and maps undecoded). `split_index` lists the stored size and count
of every image of a stored split without decoding an image (the streams plan their buckets from
it).
"""

from __future__ import annotations

import functools

import numpy as np

from crowdjax.data import datasets, splits


class _Subset:
    """Random access to some positions of a source (a split held out of, or kept from, train)."""

    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[int(self.indices[i])]


def view_source(view: splits.SplitView, *, data_dir: str | None = None):
    """Raw source (`datasets.raw_source`) of the examples of a resolved split."""
    source = datasets.raw_source(view.dataset, view.source_split, data_dir=data_dir)
    return source if view.indices is None else _Subset(source, view.indices)


def split_source(data_config, name: str, split: str):
    """Raw source of the examples that `split` means (`crowdjax.data.splits`: e.g. "train"
    without its held-out validation part)."""
    data_dir = data_config.data_dir or None
    return view_source(splits.resolve(data_config, name, split), data_dir=data_dir)


@functools.lru_cache(maxsize=32)
def split_index(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(shapes int64 [N, 2] as (H, W), counts int64 [N]) of every image of a stored split
    (cached)."""
    source = datasets.raw_source(name, split, data_dir=data_dir)
    shapes, counts = np.zeros((len(source), 2), np.int64), np.zeros(len(source), np.int64)
    for i in range(len(source)):
        record = source[i]
        shapes[i] = record["density"]["shape"]
        counts[i] = len(record["points"])
    return shapes, counts


def view_index(data_config, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`split_index` of the examples that `split` means, in `split_source` order."""
    view = splits.resolve(data_config, name, split)
    shapes, counts = split_index(name, view.source_split, data_config.data_dir or None)
    if view.indices is None:
        return shapes, counts
    return shapes[list(view.indices)], counts[list(view.indices)]
