"""The training stream: grain over `tfds.data_source` (no TensorFlow), numpy batches.

Two streams share one data order. The crop stream is `source -> shuffle -> repeat ->
random_map(TrainTransform) -> batch` (several data sets are concatenated before the shuffle, or
shuffled and repeated each and then mixed round robin with `balanced_domains`): batch i of the
global stream is a pure function of (seed, i). Each process reads only its slice of every global
batch, and a run resumed at step k starts at global batch k, so it continues the same data
order. The whole-image stream (`whole_image`) visits the images in the same order, without
crops: each global batch is padded to one size bucket (of its largest image or tile), so the
train step compiles once per bucket. `train_density_maps` gives the ground truth the stream
trains on, unaugmented, for a method's data-set-wide preparation.

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

The sizes must be divisible by the output stride (`crowdjax.data.settings.check_geometry`, which
`crowdjax.run.Setup` runs).

Example:
  config = settings.default_data_config()
  config.name = "shanghaitech/part_b"
  batches = train_iterator(config, global_batch_size=8, seed=0)
  batch = next(batches)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence

import grain
import ml_collections
import numpy as np

from crowdjax.data import batching, datasets, settings, sources, transforms
from crowdjax.data.decode import text
from crowdjax.data.io import DataError


def train_iterator(
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
) -> Iterator[dict]:
    """Infinite iterator of this process's training batches, from global batch `start_step`.

    Global batch i is the same function of (seed, i) for any process count: process p's batch
    is the p-th of `process_count` equal slices of it (with whole images, padded to the bucket of
    the whole global batch), and `start_step` skips exactly the first global batches.

    Args:
      data_config: see `crowdjax.data.settings.default_data_config`.
      global_batch_size: examples (crops, whole images or tiles) per step over all processes
        (divisible by `process_count`, and with `train_tiles` T by T*T*process_count).
      seed: data order and augmentation seed.
      start_step: index of the first global batch (a resumed run passes its step).
      process_index, process_count: this process and the number of processes (multi-host).
      output_stride: overrides `data_config.output_stride` (the method's stride).
      domain_offset: added to every data set's domain index (a target stream's domains are
        numbered after the source's).
      domain_labels: optional {data set: {image_id: label}} giving every training image the
        `domain` label of a preparation (e.g. DKPNet's clusters) instead of its data set index;
        an image without a label is an error naming it.
    """
    local_batch = batching.local_batch_size(global_batch_size, process_index, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    settings.validate(data_config)
    tiles = settings.train_tiles(data_config)
    if global_batch_size % (tiles * tiles * process_count):
        raise ValueError(
            f"global batch size {global_batch_size} counts tiles: it must be divisible by "
            f"data.train_tiles**2 * process count = {tiles}**2 * {process_count}"
        )
    stride = int(output_stride or data_config.output_stride)
    parts, steps = _tagged_sources(data_config, stride, domain_offset, domain_labels)
    shares = _Shares(seed, bool(data_config.balanced_domains), process_index, process_count)
    if data_config.whole_image:
        ds = _whole_image_stream(
            data_config, parts, steps, shares, images=global_batch_size // (tiles * tiles)
        )
    else:
        ds = _crop_stream(parts, steps, shares, local_batch=local_batch)
    ds = ds[start_step:]
    return iter(batching.to_iter(ds, data_config, processes=int(data_config.worker_processes)))


def paired_train_iterator(
    source_config,
    target_config,
    *,
    seed: int,
    domain_labels=None,
    target_keys: Sequence[str] | None = None,
    **layout,
) -> Iterator[dict]:
    """Source and target streams in step (ASNet): yields `{"source": batch, "target": batch}`.

    Target domains are numbered after the source ones; the target stream has its own seed.
    `target_keys` keeps only those fields of the target batches (the trainer keeps "image" and
    "image_mask": a method never sees the target's labels). `domain_labels` apply to the source.
    `layout`: the batch size, start step, processes and output stride of `train_iterator`, the
    same for both streams. `data.worker_processes` are the run's: the source stream takes the
    larger half, the target the rest (each taking them all oversubscribes the cores).
    """
    processes = int(source_config.worker_processes)
    source_config = _with_worker_processes(source_config, processes - processes // 2)
    target_config = _with_worker_processes(target_config, processes // 2)
    source = train_iterator(source_config, seed=seed, domain_labels=domain_labels, **layout)
    target = train_iterator(
        target_config,
        seed=_derive_seed(seed, 3),
        domain_offset=len(settings.dataset_names(source_config)),
        **layout,
    )
    keep = (lambda b: {k: b[k] for k in target_keys}) if target_keys else (lambda b: b)
    return ({"source": s, "target": keep(t)} for s, t in zip(source, target, strict=True))


def _with_worker_processes(data_config, processes: int):
    """A copy of `data_config` with `worker_processes` set."""
    config = ml_collections.ConfigDict(data_config.to_dict(), type_safe=False)
    config.worker_processes = processes
    return config


def train_density_maps(data_config, *, output_stride: int) -> Iterator[np.ndarray]:
    """The ground-truth density of every training example as the stream computes it, unaugmented.

    Per image of the training split of every data set (in `data.name` order; held-out images
    excluded): its full-resolution map at scale 1, after `min_short_side`, with the stream's
    kernel (the stored map, or regenerated with `density_sigma` and `density_truncate`); with
    `whole_image` cut into its `train_tiles` x `train_tiles` tiles (row by row, empty tiles
    skipped), as the stream cuts them. float32 [h, w] each.
    """
    settings.validate(data_config)
    tiles = settings.train_tiles(data_config)
    for name in settings.dataset_names(data_config):
        step = _train_transform(data_config, name, output_stride)
        source = sources.split_source(data_config, name, data_config.train_split)
        for i in range(len(source)):
            density = step.unaugmented_density(source[i])
            for y0, x0, h, w in transforms.tile_windows(*density.shape, tiles, output_stride):
                if h > 0 and w > 0:
                    yield density[y0 : y0 + h, x0 : x0 + w]


def _derive_seed(seed: int, *path: int) -> int:
    """An independent uint32 seed for one random stage (shuffle, augmentation, ...)."""
    return int(np.random.SeedSequence([int(seed), *path]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class _Shares:
    """How the stream draws and splits its global batches: the seed, the data sets' shares
    (`balanced_domains`: equal) and this process's slice."""

    seed: int
    balanced: bool
    process_index: int
    process_count: int


def _tagged_sources(data_config, stride: int, domain_offset: int, domain_labels):
    """(raw sources tagged with data set and domain, their transforms), one per data set."""
    parts, steps = [], []
    for index, name in enumerate(settings.dataset_names(data_config)):
        source = grain.MapDataset.source(
            sources.split_source(data_config, name, data_config.train_split)
        )
        labels = None
        if domain_labels is not None:
            if name not in domain_labels:
                raise DataError(f"domain_labels has no labels for data set {name!r}")
            labels = dict(domain_labels[name])
        tag = functools.partial(
            _tag, dataset=name, index=index, domain=index + domain_offset, labels=labels
        )
        parts.append(source.map(tag))
        steps.append(_train_transform(data_config, name, stride))
    with_roi = all(step.with_roi for step in steps)  # One key set for every example of a batch.
    steps = tuple(dataclasses.replace(step, with_roi=with_roi) for step in steps)
    return parts, steps


def _crop_stream(parts, steps, shares: _Shares, *, local_batch: int) -> grain.MapDataset:
    """This process's crop batches, global batch i at index i."""
    ds = _shuffled_stream(parts, seed=shares.seed, balanced=shares.balanced)
    ds = ds.random_map(_ByDataset(steps), seed=_derive_seed(shares.seed, 2))
    # Consecutive local batches i*P, ..., i*P + P - 1 make up global batch i; process p keeps
    # the p-th of them, so global batch i is the same function of (seed, i) for any P.
    ds = ds.batch(local_batch, drop_remainder=True)
    return ds[shares.process_index :: shares.process_count]


def _whole_image_stream(data_config, parts, steps, shares: _Shares, *, images: int):
    """This process's whole-image batches (`images` images a global batch), global batch i at
    index i.

    The stream holds (data set, position) items, in the order of the crop stream, each with its
    augmentation seed. A global batch of items is one grain batch; its batch_fn transforms this
    process's part only, but pads it to the bucket of the whole global batch (the other images'
    sizes come from the split's shape index, without decoding them).
    """
    items = [
        grain.MapDataset.range(len(part)).map(functools.partial(_item, dataset=d))
        for d, part in enumerate(parts)
    ]
    items = _shuffled_stream(items, seed=shares.seed, balanced=shares.balanced)
    items = items.random_map(_with_seed, seed=_derive_seed(shares.seed, 2))
    shapes = None
    if shares.process_count > 1:
        shapes = tuple(
            sources.view_index(data_config, name, data_config.train_split)[0]
            for name in settings.dataset_names(data_config)
        )
    batch_fn = _WholeImageBatch(
        sources=tuple(parts),
        steps=steps,
        shapes=shapes,
        tiles=settings.train_tiles(data_config),
        output_stride=steps[0].output_stride,
        max_points=int(data_config.max_points),
        buckets=settings.buckets(data_config.train_buckets),
        multiple=int(data_config.train_bucket_multiple),
        process_index=shares.process_index,
        process_count=shares.process_count,
    )
    return items.batch(images, drop_remainder=True, batch_fn=batch_fn)


def _shuffled_stream(parts, *, seed: int, balanced: bool) -> grain.MapDataset:
    """The infinite shuffled stream of the data sets' elements (one part per data set)."""
    if balanced and len(parts) > 1:
        # Round robin over per-domain infinite streams: equal shares in every batch.
        parts = [s.shuffle(seed=_derive_seed(seed, 1, d)).repeat() for d, s in enumerate(parts)]
        return grain.MapDataset.mix(parts)
    ds = grain.MapDataset.concatenate(parts) if len(parts) > 1 else parts[0]
    return ds.shuffle(seed=_derive_seed(seed, 1)).repeat()


def _train_transform(data_config, name: str, stride: int) -> transforms.TrainTransform:
    """The training transform of one data set (its builder's kernel, maps and ROI)."""
    crop = None if data_config.whole_image else settings.crop_shape(data_config)
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
        scale_range=settings.scale_range(data_config),
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
        image_id = text(record["image_id"])
        if image_id not in labels:
            raise DataError(f"{dataset}/{image_id}: the preparation gave no domain label to it")
        record["domain"] = int(labels[image_id])
    return record


@dataclasses.dataclass(frozen=True)
class _ByDataset:
    """Applies each data set's transform (its builder's kernel) to that data set's records."""

    steps: tuple[transforms.TrainTransform, ...]

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        return self.steps[record["dataset_index"]](record, rng)


def _item(position: int, *, dataset: int) -> tuple[int, int]:
    return dataset, int(position)


def _with_seed(item: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """(data set, position) -> (data set, position, augmentation seed of this draw)."""
    return *item, int(rng.integers(2**63))


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
    steps: tuple[transforms.TrainTransform, ...]  # crop_size None
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
            example = self.steps[d](self.sources[d][position], np.random.default_rng(seed))
            parts.extend(transforms.split_tiles(example, self.tiles, self.output_stride))
        sizes = [part.shape for part in parts]
        if self.shapes is not None:
            planned = []
            for d, position, seed in items:
                height, width = (int(v) for v in self.shapes[d][position])
                hs, ws = self.steps[d].scaled_shape(height, width, np.random.default_rng(seed))
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
        bucket = batching.bucket_shape(
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
