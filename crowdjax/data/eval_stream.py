"""The evaluation stream: every image of a split once, whole, padded to size buckets.

`eval_plan` groups a split's images by bucket (from the stored sizes, without decoding an
image), so a jitted prediction compiles once per bucket; `eval_iterator` reads the planned
batches, each process its slice of every global batch. The bucket sizes must be divisible by the
output stride (`crowdjax.data.settings.check_geometry`, which `crowdjax.run.Setup` runs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import grain
import numpy as np

from crowdjax.data import batching, datasets, settings, sources, transforms


def eval_plan(
    shapes: np.ndarray, *, batch_size: int, buckets=(), multiple: int = 64
) -> list[tuple[tuple[int, int], list[int]]]:
    """Global evaluation batches: `[(bucket, indices)]`, index -1 = padding (invalid) example.

    Images are grouped by bucket (buckets in increasing size, images in split order inside), so a
    batch has one shape; the last batch of each bucket is padded to `batch_size`.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(shapes):
        bucket = batching.bucket_shape(h, w, buckets=buckets, multiple=multiple)
        groups.setdefault(bucket, []).append(i)
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
      data_config: see `crowdjax.data.settings.default_data_config` (eval_buckets,
        eval_bucket_multiple, min_short_side, threads).
      split: split name, as `crowdjax.data.splits` resolves it (e.g. "validation" held out of
        the training split).
      batch_size: global evaluation batch size (divisible by `process_count`).
      name: the data set (default: the first of `data_config.name`); any prepared data set
        (cross-data-set evaluation).
    """
    local = batching.local_batch_size(batch_size, process_index, process_count)
    name = name or settings.dataset_names(data_config)[0]
    multiple = int(data_config.eval_bucket_multiple)
    buckets = settings.buckets(data_config.eval_buckets)
    shapes, counts = sources.view_index(data_config, name, split)
    min_side = int(data_config.min_short_side)
    shapes = np.array([transforms.min_side_shape(int(h), int(w), min_side) for h, w in shapes])
    shapes = shapes.reshape(-1, 2)
    max_points = max(64, math.ceil(int(counts.max(initial=0)) / 64) * 64)
    features = datasets.get_builder(name, data_dir=data_config.data_dir or None).info.features
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
        source=sources.split_source(data_config, name, split),
        max_points=max_points,
        category_keys=category_keys,
        with_roi="roi" in features,
        min_short_side=min_side,
        with_boxes="boxes" in features,
    )
    ds = grain.MapDataset.source(slots).map(load).batch(local)
    ds = ds.map(functools.partial(_with_keys, category_keys=category_keys))
    return iter(batching.to_iter(ds, data_config))


def _eval_slot(
    slot, *, source, max_points, category_keys, with_roi, min_short_side, with_boxes
) -> dict:
    bucket, index, valid = slot
    example = transforms.eval_example(
        source[index],
        bucket=bucket,
        max_points=max_points,
        category_keys=category_keys,
        with_roi=with_roi,
        min_short_side=min_short_side,
        with_boxes=with_boxes,
    )
    return example if valid else transforms.invalid_like(example)


def _with_keys(batch: dict, *, category_keys: tuple[str, ...]) -> dict:
    return {**batch, "category_keys": category_keys}
