"""What a split name means: official splits, and a validation split held out of training.

Model selection must not look at a test split. A data set with an official validation split
(NWPU-Crowd, JHU-Crowd++, TRANCOS, synthetic_crowd) uses it as "validation". For the others
(ShanghaiTech, UCF-QNRF, the UCF_CC_50 folds, Mall, UCSD), "validation" is a deterministic
`data.holdout_fraction` of the training split (`data.train_split`), drawn by a permutation seeded
by `data.holdout_seed` and the data set's name; the training split then means the remaining
images everywhere (the training stream, evaluation, the mean-count baseline), so a held-out image
never reaches training. `data.holdout_fraction = 0` keeps the whole training split (and leaves
such a data set without "validation").

Split names are TFDS names, joined with "+" for several (e.g. "fold1+fold2+fold3+fold4").
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from crowdjax.data import datasets, decode, io
from crowdjax.data.io import DataError

VALIDATION = "validation"


@dataclasses.dataclass(frozen=True)
class SplitView:
    """The examples that a split name of a data set stands for.

    Attributes:
      dataset: data set name, `builder[/config]`.
      split: the name used in the config ("validation", "train", "test", "fold1+fold2", ...).
      source_split: the TFDS split that is read.
      indices: positions in `source_split` (sorted), or None for all of it.
      size: number of examples.
      description: how the split was made, for logs and eval JSONs.
    """

    dataset: str
    split: str
    source_split: str
    indices: tuple[int, ...] | None
    size: int
    description: str


HOLDOUT_MODES = ("random", "block")


def holdout_size(size: int, fraction: float) -> int:
    """k, the examples held out of a split of `size`: round(fraction * size), at least 1 and at
    most size - 1 (both sides keep an example)."""
    return min(max(1, round(fraction * size)), size - 1)


def holdout_indices(
    dataset: str,
    split: str,
    size: int,
    *,
    fraction: float,
    seed: int,
    mode: str = "random",
    order=None,
):
    """Sorted positions [k] of the held-out part of a split of `size` examples.

    k = `holdout_size(size, fraction)`. "random": k positions of a
    permutation; "block": k consecutive examples from a random start, consecutive in `order`
    (positions in time order, e.g. of the frames' names: a built split is shuffled; default the
    positions themselves), so that near-duplicate neighbouring video frames do not leak into
    training. The draw depends only on (seed, dataset, split), so every run and process holds out
    the same images.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"data.holdout_fraction must be in (0, 1), got {fraction}")
    if mode not in HOLDOUT_MODES:
        raise ValueError(f"data.holdout_mode must be one of {HOLDOUT_MODES}, got {mode!r}")
    if size < 2:
        raise DataError(f"{dataset}/{split}: {size} image(s), too few to hold some out")
    k = holdout_size(size, fraction)
    key = zlib.crc32(f"{dataset}:{split}".encode())
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), key]))
    if mode == "block":
        start = int(rng.integers(0, size - k + 1))
        order = np.arange(size) if order is None else np.asarray(order)
        return np.sort(order[start : start + k])
    return np.sort(rng.permutation(size)[:k])


@functools.lru_cache(maxsize=256)
def _resolve(
    dataset: str,
    split: str,
    train_split: str,
    fraction: float,
    seed: int,
    mode: str,
    data_dir: str | None,
) -> SplitView:
    builder = datasets.get_builder(dataset, data_dir=data_dir)
    official = builder.info.splits if builder.is_prepared() else {}
    holdout = VALIDATION not in official and fraction > 0
    if split == VALIDATION and VALIDATION not in official and not holdout:
        raise DataError(
            f"data set {dataset!r} has no validation split and data.holdout_fraction is 0: "
            "set data.holdout_fraction > 0 to hold one out of the training split"
        )
    if holdout and split in (VALIDATION, train_split):
        size = len(datasets.data_source(dataset, train_split, data_dir=data_dir))
        order = _name_order(dataset, train_split, data_dir) if mode == "block" else None
        held = holdout_indices(
            dataset, train_split, size, fraction=fraction, seed=seed, mode=mode, order=order
        )
        if split == VALIDATION:
            indices, what = held, "held out"
        else:
            indices, what = np.setdiff1d(np.arange(size), held), "kept (the rest is validation)"
        return SplitView(
            dataset,
            split,
            train_split,
            tuple(int(i) for i in indices),
            len(indices),
            f"{len(indices)} of the {size} images of {train_split!r} {what}; fraction "
            f"{fraction:g}, seed {seed}, {mode}",
        )
    size = len(datasets.data_source(dataset, split, data_dir=data_dir))
    return SplitView(dataset, split, split, None, size, f"the official {split!r} split")


def _name_order(dataset: str, split: str, data_dir: str | None) -> np.ndarray:
    """Positions of a split's examples in the natural order of their image names (frames in
    time order: "seq_000002.jpg" before "seq_000010.jpg")."""
    source = datasets.raw_source(dataset, split, data_dir=data_dir)
    names = [io.natural_key(decode.text(source[i]["image_id"])) for i in range(len(source))]
    return np.asarray(sorted(range(len(names)), key=names.__getitem__), np.int64)


def resolve(data_config, dataset: str, split: str) -> SplitView:
    """The examples of `split` of `dataset` under `data_config`'s holdout rule (module doc)."""
    return _resolve(
        dataset,
        split,
        str(data_config.train_split),
        float(data_config.holdout_fraction),
        int(data_config.holdout_seed),
        str(data_config.holdout_mode),
        data_config.data_dir or None,
    )


def is_test_split(data_config, split: str) -> bool:
    """Whether `split` reads test images: the data config's `test_split`, or any split whose
    name contains "test" (so a selection on it must be asked for by name)."""
    parts = split.split("+")
    return split == data_config.test_split or any("test" in part for part in parts)
