"""Input pipeline: grain over `tfds.data_source` (no TensorFlow), numpy batches for the trainer.

Training stream: `source -> shuffle -> repeat -> random_map(TrainTransform) -> batch` (several
data sets are concatenated before the shuffle, or shuffled and repeated each and then mixed round
robin with `balanced_domains`): batch i of the global stream is a pure function of (seed, i).
Each process reads only its slice of every global batch, and a run resumed at step k starts at
global batch k, so it continues the same data order. Whole-image training (`whole_image`) visits
the images in the same order, without crops: each global batch is padded to one size bucket (of
its largest image or tile), so the train step compiles once per bucket.

Batch contract (numpy dict, this process's part of the global batch, b = global / processes):
  image           float32 [b, h, w, 3]  ImageNet-normalised RGB (0 on padding); h, w = the
                                          crop size, or the batch's bucket with `whole_image`
  density         float32 [b, h/s, w/s] density sum-pooled to the output stride s
  points          float32 [b, P, 2]     (x, y) in crop (image, tile) pixels, zeros past the
                                          real ones
  point_mask      bool    [b, P]
  count           float32 [b]           points in the crop (image, tile)
  domain          int32   [b]           index of the example's data set in `name`, or the
                                          label a preparation gave the image (`domain_labels`)
  image_mask      bool    [b, h, w]     True on real image pixels, False on padding
  distance_label  uint8   [b, h, w]     only with `with_distance_label`
  roi             uint8   [b, h, w]     only when every data set has a region of interest

Evaluation batches (`eval_iterator`) hold whole images padded to size buckets; see there.

Example:
  config = default_data_config()
  config.name = "shanghaitech/part_b"
  batches = train_iterator(config, global_batch_size=8, seed=0)
  batch = next(batches)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterator, Sequence

import grain
import ml_collections
import numpy as np

from crowdjax.data import datasets, splits, transforms
from crowdjax.data.io import DataError


def default_data_config() -> ml_collections.ConfigDict:
    """Data config with defaults (not type-safe: `name` may be a str or a list of names).

    Fields:
      name: data set `builder[/config]`, or a list (or comma-separated string) of several mixed
        in one training stream; example domain = position in the list.
      data_dir: root of the prepared data sets ("" or None: `datasets.default_data_dir()`).
      train_split: the training split ("+" joins several, e.g. UCF_CC_50 folds).
      test_split: the test split (model selection may read it only when asked by name).
      holdout_fraction, holdout_seed, holdout_mode: a data set without an official validation
        split gets one held out of `train_split` (`crowdjax.data.splits`): that fraction, drawn
        with that seed, as "random" images or a "block" of consecutive frames; 0 = none.
      target: domain adaptation: a data set whose training images (never their labels) are
        paired with every training batch ("" = none).
      crop_size: training crop, int or (h, w) px; smaller images are padded (`image_mask`).
      hflip: random horizontal flip (p = 0.5).
      scale_range: (lo, hi) random image scale factor, uniform; (1, 1) = off. Ground truth is then
        regenerated from the scaled points (the builder's kernel, or `density_sigma`).
      color_jitter: brightness/contrast/saturation strength (torchvision semantics); 0 = off.
      max_points: points per crop (whole image, tile) after padding; more is an error naming
        the image.
      output_stride: the density is sum-pooled by this factor (trainer may override).
      density_sigma: None or 0 = the stored map (builder's kernel); > 0 = regenerate the density
        with this fixed Gaussian sigma (px).
      density_truncate: the regenerated kernel's half-width in sigmas (4 as scipy; 1.75 with
        sigma 4 gives the 15 x 15 kernel of DKPNet).
      min_short_side: images (training and evaluation) with a shorter short side are scaled
        up to it, aspect kept, before anything else; 0 = off.
      with_distance_label: add AutoScale distance-label maps (builder's class edges).
      balanced_domains: with several data sets, draw them in equal shares (round robin) instead
        of in proportion to their sizes.
      whole_image: train on whole images instead of `crop_size` crops (scale_range, hflip and
        color_jitter still apply). Every batch is padded (bottom/right; `image_mask`) to one
        shape, `bucket_shape` of its largest image (tile) with `train_buckets` and
        `train_bucket_multiple`, so a train step compiles once per bucket.
      train_buckets: list of (h, w) whole-image training sizes; a batch goes to the smallest that
        fits its largest image (tile). Sides must be divisible by the output stride.
      train_bucket_multiple: batches fitting no training bucket are padded to multiples of this
        (px; divisible by the output stride).
      train_tiles: T; with `whole_image`, every (scaled) image is split into T x T tiles, each an
        example of the batch (the T*T tiles of an image consecutive, row by row); inner tile
        edges lie on multiples of the output stride (`transforms.tile_edges`). The global batch
        size counts tiles: it must be divisible by T*T times the process count. 1 = no tiling.
      eval_buckets: list of (h, w) evaluation sizes; an image goes to the smallest that fits.
      eval_bucket_multiple: images fitting no bucket are padded to multiples of this (px).
      worker_threads: grain read threads (0 = one per CPU core).
      prefetch: batches prepared ahead.
      worker_processes: grain worker processes for training (0 = threads only).
    """
    return ml_collections.ConfigDict(
        {
            "name": "synthetic_crowd/street",
            "data_dir": "",
            "train_split": "train",
            "test_split": "test",
            "holdout_fraction": 0.1,
            "holdout_seed": 0,
            "holdout_mode": "random",
            "target": "",
            "crop_size": 512,
            "hflip": True,
            "scale_range": (1.0, 1.0),
            "color_jitter": 0.0,
            "max_points": 2048,
            "output_stride": 8,
            "density_sigma": 0.0,
            "density_truncate": 4.0,
            "min_short_side": 0,
            "with_distance_label": False,
            "balanced_domains": False,
            "whole_image": False,
            "train_buckets": (),
            "train_bucket_multiple": 64,
            "train_tiles": 1,
            "eval_buckets": (),
            "eval_bucket_multiple": 64,
            "worker_threads": 0,
            "prefetch": 4,
            "worker_processes": 0,
        },
        type_safe=False,
    )


def dataset_names(data_config) -> list[str]:
    """The data set names of `data_config.name` (a str, comma-separated str or list)."""
    name = data_config.name
    names = name.split(",") if isinstance(name, str) else list(name)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError(f"data.name names no data set: {name!r}")
    return names


def crop_shape(data_config) -> tuple[int, int]:
    """`crop_size` as (h, w)."""
    size = data_config.crop_size
    h, w = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"data.crop_size must be positive, got {size}")
    return h, w


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


# ---------------------------------------------------------------------------------- training


def train_iterator(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    output_stride: int | None = None,
    domain_labels=None,
) -> Iterator[dict]:
    """Infinite iterator of this process's training batches, from global batch `start_step`.

    Args:
      data_config: see `default_data_config`.
      global_batch_size: examples (crops, whole images or tiles) per step over all processes
        (divisible by `process_count`, and with `train_tiles` T by T*T*process_count).
      seed: data order and augmentation seed.
      start_step: index of the first global batch (a resumed run passes its step).
      process_index, process_count: this process and the number of processes (multi-host).
      output_stride: overrides `data_config.output_stride` (the method's stride).
      domain_labels: optional {data set: {image_id: label}} giving every training image the
        `domain` label of a preparation (e.g. DKPNet's clusters) instead of its data set index;
        an image without a label is an error naming it.
    """
    return iter(
        train_dataset(
            data_config,
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
            output_stride=output_stride,
            domain_labels=domain_labels,
        )
    )


def target_config(data_config) -> ml_collections.ConfigDict:
    """The data config of `data_config.target` (same settings, the target's name)."""
    if not data_config.target:
        raise ValueError("data.target names no data set")
    config = ml_collections.ConfigDict(data_config.to_dict(), type_safe=False)
    config.name, config.target = data_config.target, ""
    return config


def paired_train_iterator(
    source_config,
    target_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    output_stride: int | None = None,
    domain_labels=None,
    target_keys: Sequence[str] | None = None,
) -> Iterator[dict]:
    """Source and target streams in step (ASNet): yields `{"source": batch, "target": batch}`.

    Target domains are numbered after the source ones; the target stream has its own seed.
    `target_keys` keeps only those fields of the target batches (the trainer keeps "image" and
    "image_mask": a method never sees the target's labels). `domain_labels` apply to the source.
    """
    kwargs = dict(
        global_batch_size=global_batch_size,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
        output_stride=output_stride,
    )
    source = train_dataset(source_config, seed=seed, domain_labels=domain_labels, **kwargs)
    target = train_dataset(
        target_config,
        seed=_derive(seed, 3),
        domain_offset=len(dataset_names(source_config)),
        **kwargs,
    )
    keep = (lambda b: {k: b[k] for k in target_keys}) if target_keys else (lambda b: b)
    return ({"source": s, "target": keep(t)} for s, t in zip(source, target, strict=True))


def train_dataset(
    data_config,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    output_stride: int | None = None,
    domain_offset: int = 0,
    domain_labels=None,
) -> grain.IterDataset:
    """The grain dataset behind `train_iterator` (same arguments; `domain_offset` shifts ids).

    Global batch i is the same function of (seed, i) for any process count: process p's batch
    is the p-th of `process_count` equal slices of it (with whole images, padded to the bucket of
    the whole global batch), and `start_step` skips exactly the first global batches.
    """
    local_batch = _local_batch_size(global_batch_size, process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    tiles = _train_tiles(data_config)
    if global_batch_size % (tiles * tiles * process_count):
        raise ValueError(
            f"global batch size {global_batch_size} counts tiles: it must be divisible by "
            f"data.train_tiles**2 * process count = {tiles}**2 * {process_count}"
        )
    names = dataset_names(data_config)
    stride = int(output_stride or data_config.output_stride)
    sources, maps = [], []
    for index, name in enumerate(names):
        source = grain.MapDataset.source(split_source(data_config, name, data_config.train_split))
        labels = None
        if domain_labels is not None:
            if name not in domain_labels:
                raise DataError(f"domain_labels has no labels for data set {name!r}")
            labels = dict(domain_labels[name])
        tag = functools.partial(
            _tag, dataset=name, index=index, domain=index + domain_offset, labels=labels
        )
        sources.append(source.map(tag))
        maps.append(_train_transform(data_config, name, stride))
    with_roi = all(m.with_roi for m in maps)  # One key set for every example of a batch.
    maps = tuple(dataclasses.replace(m, with_roi=with_roi) for m in maps)
    balanced = bool(data_config.balanced_domains)

    if not _whole_image(data_config):
        ds = _shuffled_stream(sources, seed=seed, balanced=balanced)
        ds = ds.random_map(_ByDataset(maps), seed=_derive(seed, 2))
        # Consecutive local batches i*P, ..., i*P + P - 1 make up global batch i; process p keeps
        # the p-th of them, so global batch i is the same function of (seed, i) for any P.
        ds = ds.batch(local_batch, drop_remainder=True)[process_index::process_count][start_step:]
        return _to_iter(ds, data_config, processes=int(data_config.worker_processes))

    # Whole images: the stream holds (data set, position) items, in the order of the crop stream,
    # each with its augmentation seed. A global batch of items is one grain batch; its batch_fn
    # transforms this process's part only, but pads it to the bucket of the whole global batch
    # (the other images' sizes come from the split's shape index, without decoding them).
    multiple = int(data_config.train_bucket_multiple)
    buckets = tuple(tuple(int(v) for v in b) for b in data_config.train_buckets)
    if multiple < 1:
        raise ValueError(f"data.train_bucket_multiple must be >= 1, got {multiple}")
    for h, w in [*buckets, (multiple, multiple)]:
        if h % stride or w % stride:
            raise ValueError(
                f"training bucket size {(h, w)} is not divisible by the output stride {stride}"
            )
    items = [
        grain.MapDataset.range(len(source)).map(functools.partial(_item, dataset=d))
        for d, source in enumerate(sources)
    ]
    items = _shuffled_stream(items, seed=seed, balanced=balanced)
    items = items.random_map(_with_seed, seed=_derive(seed, 2))
    shapes = None
    if process_count > 1:
        shapes = tuple(_train_shapes(data_config, name) for name in names)
    batch_fn = _WholeImageBatch(
        sources=tuple(sources),
        maps=maps,
        shapes=shapes,
        tiles=tiles,
        output_stride=stride,
        max_points=int(data_config.max_points),
        buckets=buckets,
        multiple=multiple,
        process_index=process_index,
        process_count=process_count,
    )
    images = global_batch_size // (tiles * tiles)
    ds = items.batch(images, drop_remainder=True, batch_fn=batch_fn)[start_step:]
    return _to_iter(ds, data_config, processes=int(data_config.worker_processes))


def _shuffled_stream(parts, *, seed: int, balanced: bool) -> grain.MapDataset:
    """The infinite shuffled stream of the data sets' elements (one part per data set)."""
    if balanced and len(parts) > 1:
        # Round robin over per-domain infinite streams: equal shares in every batch.
        parts = [s.shuffle(seed=_derive(seed, 1, d)).repeat() for d, s in enumerate(parts)]
        return grain.MapDataset.mix(parts)
    ds = grain.MapDataset.concatenate(parts) if len(parts) > 1 else parts[0]
    return ds.shuffle(seed=_derive(seed, 1)).repeat()


def _whole_image(data_config) -> bool:
    return bool(data_config.get("whole_image", False))


def _train_tiles(data_config) -> int:
    tiles = int(data_config.get("train_tiles", 1))
    if tiles < 1:
        raise ValueError(f"data.train_tiles must be >= 1, got {tiles}")
    if tiles > 1 and not _whole_image(data_config):
        raise ValueError(f"data.train_tiles = {tiles} needs data.whole_image (tiles of images)")
    return tiles


def _train_transform(data_config, name: str, stride: int):
    crop = None
    if not _whole_image(data_config):
        crop = crop_shape(data_config)
        if crop[0] % stride or crop[1] % stride:
            raise ValueError(
                f"data.crop_size {crop} is not divisible by the output stride {stride}"
            )
    lo, hi = (float(s) for s in data_config.scale_range)
    if not 0 < lo <= hi:
        raise ValueError(f"data.scale_range must satisfy 0 < lo <= hi, got {(lo, hi)}")
    if int(data_config.max_points) < 1:
        raise ValueError(f"data.max_points must be >= 1, got {data_config.max_points}")
    if float(data_config.color_jitter) < 0:
        raise ValueError(f"data.color_jitter must be >= 0, got {data_config.color_jitter}")
    builder = datasets.get_builder(name, data_dir=data_config.data_dir or None)
    recipe = builder.builder_config
    sigma = data_config.density_sigma
    if sigma:  # None or 0: the builder's kernel (0 can be set from the command line).
        kernel = transforms.Kernel(sigma=float(sigma), truncate=float(data_config.density_truncate))
    else:
        kernel = transforms.Kernel(
            sigma=float(recipe.sigma),
            adaptive=bool(recipe.adaptive),
            beta=float(recipe.beta),
            k=int(recipe.k),
        )
    edges = None
    if data_config.with_distance_label:
        edges = tuple(recipe.distance_edges)
    return transforms.TrainTransform(
        crop_size=crop,
        max_points=int(data_config.max_points),
        output_stride=stride,
        hflip=bool(data_config.hflip),
        scale_range=(lo, hi),
        color_jitter=float(data_config.color_jitter),
        kernel=kernel,
        regenerate=bool(sigma),
        distance_edges=edges,
        with_roi="roi" in builder.info.features,
        min_short_side=int(data_config.min_short_side),
    )


def _tag(record: dict, *, dataset: str, index: int, domain: int, labels) -> dict:
    """Marks a record with its data set (which transform) and its domain label."""
    record["dataset_index"] = index
    if labels is None:
        record["domain"] = domain
    else:
        image_id = transforms.text(record["image_id"])
        if image_id not in labels:
            raise DataError(f"{dataset}/{image_id}: the preparation gave no domain label to it")
        record["domain"] = int(labels[image_id])
    return record


@dataclasses.dataclass(frozen=True)
class _ByDataset:
    """Applies each data set's transform (its builder's kernel) to that data set's records."""

    maps: tuple[transforms.TrainTransform, ...]

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        return self.maps[record["dataset_index"]](record, rng)


def _item(position: int, *, dataset: int) -> tuple[int, int]:
    return dataset, int(position)


def _with_seed(item: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """(data set, position) -> (data set, position, augmentation seed of this draw)."""
    return *item, int(rng.integers(2**63))


def _train_shapes(data_config, name: str) -> np.ndarray:
    """Stored (H, W) of every training image of a data set, in `split_source` order."""
    view = splits.resolve(data_config, name, data_config.train_split)
    shapes, _ = split_index(name, view.source_split, data_config.data_dir or None)
    return shapes if view.indices is None else shapes[list(view.indices)]


@dataclasses.dataclass(frozen=True)
class _WholeImageBatch:
    """grain `batch_fn` of whole-image training: a global batch of items (data set, position,
    seed) -> this process's batch.

    This process's images (its slice of the items) are transformed unpadded, split into tiles,
    padded to the bucket of the largest image (tile) of the whole global batch and stacked. With
    one process the bucket comes from the examples; with several, every image's size is derived
    from the split's stored shapes and its seed's scale draw (the same on every process), and this
    process's examples are checked against it.
    """

    sources: tuple[grain.MapDataset, ...]  # tagged raw records, per data set
    maps: tuple[transforms.TrainTransform, ...]  # crop_size None
    shapes: tuple[np.ndarray, ...] | None  # stored (H, W) per data set, with several processes
    tiles: int
    output_stride: int
    max_points: int
    buckets: tuple[tuple[int, int], ...]
    multiple: int
    process_index: int
    process_count: int

    def __call__(self, items) -> dict:
        n = len(items) // self.process_count
        own = items[self.process_index * n : (self.process_index + 1) * n]
        parts = []
        for d, position, seed in own:
            example = self.maps[d](self.sources[d][position], np.random.default_rng(seed))
            parts.extend(transforms.split_tiles(example, self.tiles, self.output_stride))
        sizes = [part.shape for part in parts]
        if self.shapes is not None:
            planned = []
            for d, position, seed in items:
                height, width = (int(v) for v in self.shapes[d][position])
                hs, ws = self.maps[d].scaled_shape(height, width, np.random.default_rng(seed))
                windows = transforms.tile_windows(hs, ws, self.tiles, self.output_stride)
                planned.extend((h, w) for _, _, h, w in windows)
            per_process = n * self.tiles * self.tiles
            mine = planned[self.process_index * per_process :][:per_process]
            if mine != sizes:
                raise DataError(
                    f"the stored shapes of the training split disagree with its images "
                    f"({', '.join(part.name for part in parts)}): {mine} != {sizes}"
                )
            sizes = planned
        bucket = bucket_shape(
            max(h for h, _ in sizes),
            max(w for _, w in sizes),
            buckets=self.buckets,
            multiple=self.multiple,
        )
        padded = [
            transforms.pad_example(
                part, *bucket, output_stride=self.output_stride, max_points=self.max_points
            )
            for part in parts
        ]
        return {key: np.stack([example[key] for example in padded]) for key in padded[0]}


def _derive(seed: int, *path: int) -> int:
    """An independent uint32 seed for one random stage (shuffle, augmentation, ...)."""
    return int(np.random.SeedSequence([int(seed), *path]).generate_state(1)[0])


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count), got {process_index} of {process_count}"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be positive and divisible by the "
            f"process count {process_count}"
        )
    return global_batch_size // process_count


def _to_iter(ds: grain.MapDataset, data_config, *, processes: int = 0) -> grain.IterDataset:
    threads = int(data_config.worker_threads) or min(16, os.cpu_count() or 1)
    options = grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=max(1, int(data_config.prefetch))
    )
    it = ds.to_iter_dataset(options)
    if processes > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice).
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=processes))
    return it


# -------------------------------------------------------------------------------- evaluation


def bucket_shape(
    height: int, width: int, *, buckets: Sequence[Sequence[int]] = (), multiple: int = 64
) -> tuple[int, int]:
    """Padded size of an image (evaluation), or of a whole-image training batch's largest image.

    Returns:
      The smallest-area bucket (h, w) that fits the image, else each side rounded up to a multiple
      of `multiple`.
    """
    fits = [(int(h), int(w)) for h, w in buckets if h >= height and w >= width]
    if fits:
        return min(fits, key=lambda b: (b[0] * b[1], b))
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


@functools.lru_cache(maxsize=32)
def split_index(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(shapes int64 [N, 2] as (H, W), counts int64 [N]) of every image of a split (cached)."""
    source = datasets.raw_source(name, split, data_dir=data_dir)
    shapes, counts = np.zeros((len(source), 2), np.int64), np.zeros(len(source), np.int64)
    for i in range(len(source)):
        record = source[i]
        shapes[i] = record["density"]["shape"]
        counts[i] = len(record["points"])
    return shapes, counts


def eval_plan(
    shapes: np.ndarray, *, batch_size: int, buckets=(), multiple: int = 64
) -> list[tuple[tuple[int, int], list[int]]]:
    """Global evaluation batches: `[(bucket, indices)]`, index -1 = padding (invalid) example.

    Images are grouped by bucket (buckets in increasing size, images in split order inside), so a
    batch has one shape; the last batch of each bucket is padded to `batch_size`.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(shapes):
        groups.setdefault(bucket_shape(h, w, buckets=buckets, multiple=multiple), []).append(i)
    plan = []
    for bucket in sorted(groups):
        members = groups[bucket]
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            plan.append((bucket, chunk + [-1] * (batch_size - len(chunk))))
    return plan


def eval_iterator(
    data_config,
    split: str,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    output_stride: int | None = None,
    name: str | None = None,
) -> Iterator[dict]:
    """Every image of a split once, whole, padded to size buckets (this process's slices).

    Every process gets the same number of batches with the same shapes. Each batch (numpy dict,
    b = batch_size / process_count) holds: image float32 [b, H, W, 3], image_mask bool [b, H, W],
    valid bool [b] (False: padding example after the last image of a bucket), image_id str [b],
    count float32 [b], points float32 [b, P, 2] with point_mask bool [b, P] (P: the split's
    largest count rounded up to 64), roi uint8 [b, H, W] if the data set has one, one array per
    category label (scalar data-set specific features such as `weather`) and `category_keys`,
    the tuple of their names.

    Args:
      data_config: see `default_data_config` (eval_buckets, eval_bucket_multiple, threads).
      split: split name, as `crowdjax.data.splits` resolves it (e.g. "validation" held out of
        the training split).
      batch_size: global evaluation batch size (divisible by `process_count`).
      output_stride: bucket sides must be divisible by it (default `data_config.output_stride`).
      name: the data set (default: the first of `data_config.name`); any prepared data set
        (cross-data-set evaluation).
    """
    local = _local_batch_size(batch_size, process_index, process_count)
    name = name or dataset_names(data_config)[0]
    data_dir = data_config.data_dir or None
    stride = int(output_stride or data_config.output_stride)
    multiple = int(data_config.eval_bucket_multiple)
    buckets = [tuple(int(s) for s in b) for b in data_config.eval_buckets]
    for h, w in [*buckets, (multiple, multiple)]:
        if h % stride or w % stride:
            raise ValueError(
                f"evaluation bucket size {(h, w)} is not divisible by the output stride {stride}"
            )
    view = splits.resolve(data_config, name, split)
    shapes, counts = split_index(name, view.source_split, data_dir)
    if view.indices is not None:
        shapes, counts = shapes[list(view.indices)], counts[list(view.indices)]
    min_side = int(data_config.get("min_short_side", 0))
    shapes = np.array([transforms.min_side_shape(int(h), int(w), min_side) for h, w in shapes])
    shapes = shapes.reshape(-1, 2)
    max_points = max(64, math.ceil(int(counts.max(initial=0)) / 64) * 64)
    features = datasets.get_builder(name, data_dir=data_dir).info.features
    category_keys = tuple(
        key
        for key, feature in features.items()
        if key not in ("image_id", "count") and tuple(getattr(feature, "shape", (None,))) == ()
    )
    slots = []
    for bucket, indices in eval_plan(
        shapes, batch_size=batch_size, buckets=buckets, multiple=multiple
    ):
        for i in indices[process_index * local : (process_index + 1) * local]:
            slots.append((bucket, i if i >= 0 else indices[0], i >= 0))
    load = functools.partial(
        _eval_slot,
        source=split_source(data_config, name, split),
        max_points=max_points,
        category_keys=category_keys,
        with_roi="roi" in features,
        min_short_side=min_side,
    )
    ds = grain.MapDataset.source(slots).map(load).batch(local)
    ds = ds.map(functools.partial(_with_keys, category_keys=category_keys))
    return iter(_to_iter(ds, data_config))


def _eval_slot(slot, *, source, max_points, category_keys, with_roi, min_short_side) -> dict:
    bucket, index, valid = slot
    example = transforms.eval_example(
        source[index],
        bucket=bucket,
        max_points=max_points,
        category_keys=category_keys,
        with_roi=with_roi,
        min_short_side=min_short_side,
    )
    return example if valid else transforms.invalid_like(example)


def _with_keys(batch: dict, *, category_keys: tuple[str, ...]) -> dict:
    return {**batch, "category_keys": category_keys}
