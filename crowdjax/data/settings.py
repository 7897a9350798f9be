"""The data config: its fields and defaults, and its one validation.

`default_data_config` documents every field. `validate` checks the values the training stream
reads; `check_geometry` checks that every size a model sees (the training crop, the training and
evaluation buckets) is divisible by a stride: `crowdjax.run.Setup` runs it once, with the
method's output stride, before anything is built.

Example:
  config = default_data_config()
  config.name = "shanghaitech/part_b"
  check_geometry(config, 8)
"""

from __future__ import annotations

import ml_collections


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
      worker_processes: grain worker processes for training (0 = threads only); a paired
        run's (ASNet) source and target streams share them.
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


def target_config(data_config) -> ml_collections.ConfigDict:
    """The data config of `data_config.target` (same settings, the target's name)."""
    if not data_config.target:
        raise ValueError("data.target names no data set")
    config = ml_collections.ConfigDict(data_config.to_dict(), type_safe=False)
    config.name, config.target = data_config.target, ""
    return config


def train_tiles(data_config) -> int:
    """`data.train_tiles`: tiles a side of every whole training image is cut into (1: none)."""
    tiles = int(data_config.train_tiles)
    if tiles < 1:
        raise ValueError(f"data.train_tiles must be >= 1, got {tiles}")
    if tiles > 1 and not data_config.whole_image:
        raise ValueError(f"data.train_tiles = {tiles} needs data.whole_image (tiles of images)")
    return tiles


def scale_range(data_config) -> tuple[float, float]:
    """`data.scale_range` as (lo, hi) with 0 < lo <= hi."""
    lo, hi = (float(s) for s in data_config.scale_range)
    if not 0 < lo <= hi:
        raise ValueError(f"data.scale_range must satisfy 0 < lo <= hi, got {(lo, hi)}")
    return lo, hi


def validate(data_config) -> None:
    """Checks the values of the training stream's settings (`check_geometry`: the sizes).

    Raises:
      ValueError: naming the field.
    """
    dataset_names(data_config)
    train_tiles(data_config)
    scale_range(data_config)
    if int(data_config.max_points) < 1:
        raise ValueError(f"data.max_points must be >= 1, got {data_config.max_points}")
    if float(data_config.color_jitter) < 0:
        raise ValueError(f"data.color_jitter must be >= 0, got {data_config.color_jitter}")
    if data_config.whole_image and int(data_config.train_bucket_multiple) < 1:
        raise ValueError(
            f"data.train_bucket_multiple must be >= 1, got {data_config.train_bucket_multiple}"
        )


def buckets(value) -> tuple[tuple[int, int], ...]:
    """A config's list of (h, w) buckets as a tuple of int pairs."""
    return tuple((int(h), int(w)) for h, w in value)


def check_geometry(
    data_config, stride: int, *, stride_name: str = "the output stride", hint: str = ""
) -> None:
    """Checks that every size a model is given is divisible by `stride`.

    The sizes: the training crop (unless `whole_image`), the evaluation buckets and bucket
    multiple, and with `whole_image` the training buckets and bucket multiple.

    Args:
      data_config: see `default_data_config`.
      stride: the stride the sizes must be multiples of (the method's output stride, or a
        stricter one of its network).
      stride_name, hint: how the error message names the stride (e.g. "G's stride",
        " (model.pools)").

    Raises:
      ValueError: naming the field and the size.
    """
    sizes = {}
    if not data_config.whole_image:
        sizes["data.crop_size"] = crop_shape(data_config)
    multiple = int(data_config.eval_bucket_multiple)
    sizes["data.eval_bucket_multiple"] = (multiple, multiple)
    sizes.update({f"data.eval_buckets {b}": b for b in buckets(data_config.eval_buckets)})
    if data_config.whole_image:
        multiple = int(data_config.train_bucket_multiple)
        sizes["data.train_bucket_multiple"] = (multiple, multiple)
        sizes.update({f"data.train_buckets {b}": b for b in buckets(data_config.train_buckets)})
    for field, (h, w) in sizes.items():
        if h % stride or w % stride:
            raise ValueError(f"{field}: {h} x {w} is not divisible by {stride_name} {stride}{hint}")
