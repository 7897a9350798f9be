"""Shared machinery of the crowd-counting TFDS builders.

Every builder yields examples with the same features, made by `CrowdBuilder.make_example`:

  image           encoded JPEG/PNG, RGB [H, W, 3] of the stored (possibly resized) image
  image_id        original file name (e.g. "IMG_12.jpg")
  points          float32 [N, 2], (x, y) pixels of the stored image; pixel (r, c) covers
                  [c, c+1) x [r, r+1)
  count           int32, number of annotated heads kept (= N)
  density         float32 [H, W] when read, density map of the builder config's kernel, sums to N;
                  stored as ZLIB float16 (`DensityMap`, `to_float16_map`)
  distance_label  uint8 [H, W], AutoScale distance-label map (classes of the config's edges)
  roi             uint8 [H, W] (only data sets with a region of interest), 1 inside
  boxes           float32 [N, 4] (only data sets with head boxes, `HAS_HEAD_BOXES`): each
                  point's head box (x1, y1, x2, y2) in stored-image pixels (scaled as the points;
                  NaN where the release gives none)
  original_size   int32 [2] (with boxes): the release image's (H, W), before any resize

plus data-set specific labels. A builder config carries the ground-truth recipe (kernel, distance
edges), the resize rule and the rule for points outside the image. Files are written as
`array_record` and read with `tfds.data_source` (no TensorFlow needed).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import decode, io
from crowdjax.data.labels import DEFAULT_DISTANCE_EDGES, density_map, distance_label_map

OUT_OF_IMAGE_RULES = ("clip", "drop", "error")

# The stored float16 map must sum to the point count within this fraction of max(count, 1).
# Rounding to float16 moves a normal value by at most 2^-11 of it (4.9e-4), so only maps that lose
# mass to float16's range (kernels so wide that whole heads fall under 6e-5, the subnormals) fail.
DENSITY_COUNT_RTOL = 1e-3

# The build's closing report names at most this many images (the metadata has them all).
REPORTED_IMAGES = 20

# Guards the metadata counters: builders may run `make_example` in worker threads.
_METADATA_LOCK = threading.Lock()


@dataclasses.dataclass
class CrowdConfig(tfds.core.BuilderConfig):
    """Ground-truth recipe and preprocessing of a crowd-counting builder config.

    Attributes:
      sigma: Gaussian kernel width in pixels (fixed kernel); ignored when `adaptive`.
      adaptive: geometry-adaptive kernels, sigma_i = beta * mean distance to the k nearest heads.
      beta: adaptive kernel factor.
      k: adaptive kernel neighbours.
      distance_edges: lower edges (px) of the distance-label classes.
      max_long_side: images whose long side exceeds it are downscaled (points scaled too).
      min_short_side: images whose short side is below it are upscaled (points scaled too).
      max_box: (long side, short side), e.g. (1920, 1080): an image that does not fit the box
        (in either orientation) is downscaled to fit it, aspect ratio kept (points scaled too);
        applied after the two rules above (`resize_scale`).
      out_of_image: what to do with annotated points outside the image: "clip" them to the
        border, "drop" them, or raise an "error". Every clip or drop is logged and counted in the
        data set's metadata: per split (`points_outside_image`) and per image
        (`images_with_points_outside`); a build ends with one line naming the images.
    """

    sigma: float = 4.0
    adaptive: bool = False
    beta: float = 0.3
    k: int = 3
    distance_edges: tuple[int, ...] = DEFAULT_DISTANCE_EDGES
    max_long_side: int | None = None
    min_short_side: int | None = None
    max_box: tuple[int, int] | None = None
    out_of_image: str = "clip"

    def __post_init__(self):
        if self.out_of_image not in OUT_OF_IMAGE_RULES:
            raise ValueError(f"out_of_image must be one of {OUT_OF_IMAGE_RULES}")
        if self.max_box is not None:
            long, short = self.max_box
            if not 0 < short <= long:
                raise ValueError(
                    f"max_box must be (long side, short side) with 0 < short <= long, got "
                    f"{self.max_box}"
                )


def bounded_config(sigma: float) -> CrowdConfig:
    """The `default` config of the large data sets (UCF-QNRF, JHU-Crowd++, NWPU-Crowd): short side
    >= 512 and long side <= 2048 (the Bayesian-loss / UOT and AutoScale practice, see
    docs/datasets.md) and a fixed Gaussian of `sigma` px."""
    return CrowdConfig(
        name="default",
        sigma=sigma,
        max_long_side=2048,
        min_short_side=512,
        description=f"Short side >= 512, long side <= 2048; fixed Gaussian, sigma {sigma:g} px.",
    )


def resize_scale(height: int, width: int, cfg: CrowdConfig) -> float:
    """Scale factor of the resize rule.

    In order: upscale an image whose short side is below `min_short_side`, else downscale one
    whose long side exceeds `max_long_side`; then `max_box` caps the result, so that the scaled
    image fits the box: scale = min(rule scale, box long / long side, box short / short side)
    (equal to the rule's scale times min(1, the box's factors for the rule's image)).
    """
    short, long = min(height, width), max(height, width)
    scale = 1.0
    if cfg.min_short_side and short < cfg.min_short_side:
        scale = cfg.min_short_side / short
    elif cfg.max_long_side and long > cfg.max_long_side:
        scale = cfg.max_long_side / long
    if cfg.max_box is not None:
        box_long, box_short = cfg.max_box
        scale = min(scale, box_long / long, box_short / short)
    return scale


def _inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def apply_out_of_image_rule(
    points: np.ndarray, height: int, width: int, rule: str, *, name: str
) -> tuple[np.ndarray, int]:
    """Applies the out-of-image rule; returns the kept points and how many were outside."""
    inside = _inside(points, height, width)
    outside = int((~inside).sum())
    if outside == 0:
        return points, 0
    if rule == "error":
        raise io.DataError(
            f"{name}: {outside} annotated points lie outside the {width}x{height} image"
        )
    if rule == "drop":
        return points[inside], outside
    # Clip into [0, W) x [0, H): the largest float32 below the border stays in the last pixel.
    hi = np.array([np.nextafter(np.float32(width), 0), np.nextafter(np.float32(height), 0)])
    return np.clip(points, 0, hi).astype(np.float32), outside


class DensityMap(tfds.features.Tensor):
    """Density map feature: stored as ZLIB float16 [H, W], decoded to float32 [H, W].

    float16 halves the raw bytes and, without float32's noisy low mantissa bits, zlib packs it to
    0.42x the float32 stream (ShanghaiTech B, README "Disk size"). Undecoded reads
    (`datasets.raw_source`) get the stored dtype with the bytes, so `decode.decode_tensor`
    decodes both this and older float32 maps.
    """

    def __init__(self, *, shape=(None, None), dtype=np.float16, encoding=None, **kwargs):
        super().__init__(
            shape=shape, dtype=dtype, encoding=encoding or tfds.features.Encoding.ZLIB, **kwargs
        )

    def decode_example_np(self, example_data):
        return np.asarray(super().decode_example_np(example_data), np.float32)


def to_float16_map(density: np.ndarray, count: int, *, name: str) -> np.ndarray:
    """The map to store: float16 [H, W], checked to sum to `count` (`DENSITY_COUNT_RTOL`).

    Raises:
      DataError: naming the image, when float16 loses the count (or a value overflows).
    """
    with np.errstate(over="ignore"):  # an overflow (inf) fails the check below
        stored = np.asarray(density, np.float32).astype(np.float16)
    total = float(stored.sum(dtype=np.float64))
    tolerance = DENSITY_COUNT_RTOL * max(int(count), 1)
    if not np.isfinite(total) or abs(total - count) > tolerance:
        raise io.DataError(
            f"{name}: the float16 density map sums to {total:.6g}, not the {count} annotated "
            f"heads (tolerance {tolerance:.3g}); float16 cannot hold this map (kernel too wide or "
            "values out of range)"
        )
    return stored


class CrowdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: subclasses list their splits and call `make_example` per image.

    Every builder shares one version history (the density-map storage changed for all at once);
    a builder with another history (`user_crowd`) overrides both attributes. The version names
    the prepared data's folder, so changing it makes existing prepared data invisible.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Density maps stored as ZLIB float16 (read as float32): ~1.7x smaller on disk.",
    }
    HAS_ROI = False
    HAS_HEAD_BOXES = False  # Stores `boxes` and `original_size` (NWPU-Crowd's localization).
    IMAGE_FORMAT = "jpeg"
    # Turn each image upright by its EXIF orientation, as prediction reads a user's pictures
    # (`crowdjax.media.read_image`), so that points annotated on the upright picture (as viewers
    # and annotation tools show it) fit. The public releases keep their stored pixel grid, which
    # their annotations refer to (`crowdjax.data.decode`).
    APPLY_EXIF = False

    def extra_features(self) -> Mapping[str, tfds.features.FeatureConnector]:
        """Data-set specific features (labels such as weather); override in subclasses."""
        return {}

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=self.IMAGE_FORMAT),
            "image_id": tfds.features.Text(),
            "points": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "count": tfds.features.Scalar(dtype=np.int32),
            "density": DensityMap(),
            "distance_label": tfds.features.Tensor(
                shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
            ),
        }
        if self.HAS_ROI:
            features["roi"] = tfds.features.Tensor(
                shape=(None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
            )
        if self.HAS_HEAD_BOXES:
            features["boxes"] = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
            features["original_size"] = tfds.features.Tensor(shape=(2,), dtype=np.int32)
        features.update(self.extra_features())
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(),
            homepage=getattr(self, "HOMEPAGE", None),
            citation=getattr(self, "CITATION", None),
        )

    def count_in_metadata(self, key: str, split: str, n: int) -> None:
        """Adds `n` to `info.metadata[key][split]` (thread-safe; n = 0 creates the entry)."""
        with _METADATA_LOCK:
            counts = self.info.metadata.setdefault(key, {})
            counts[split] = counts.get(split, 0) + int(n)

    def _record_outside(self, split: str, image_id: str, n: int) -> None:
        # Also records zeros, so the metadata shows the rule was applied to every split.
        self.count_in_metadata("points_outside_image", split, n)
        with _METADATA_LOCK:
            by_split = self.info.metadata.setdefault("images_with_points_outside", {})
            in_split = by_split.setdefault(split, {})
            if n:
                in_split[image_id] = int(n)
        if n == 0:
            return
        logging.warning(
            "%s/%s: %d annotated points outside the image were %sed (rule out_of_image=%r)",
            split,
            image_id,
            n,
            "clipp" if self.builder_config.out_of_image == "clip" else "dropp",
            self.builder_config.out_of_image,
        )

    def _record_turned(self, split: str, image_id: str, turned: bool) -> None:
        """Lists the images an EXIF orientation turned upright (`APPLY_EXIF`) per split."""
        with _METADATA_LOCK:
            names = self.info.metadata.setdefault("images_turned_upright", {}).setdefault(split, [])
            if turned:
                bisect.insort(names, image_id, key=io.natural_key)

    def build_report(self) -> list[str]:
        """What the build changed in the user's data, one line each: the points outside their
        image (clipped or dropped) and the images turned upright, naming the images."""
        metadata = self.info.metadata or {}
        where = f"{self.name}/{self.builder_config.name}"
        lines = []
        outside = [
            (f"{split}/{image_id}", images[image_id])
            for split, images in (metadata.get("images_with_points_outside") or {}).items()
            for image_id in sorted(images, key=io.natural_key)  # worker threads' order otherwise
        ]
        if outside:
            rule = self.builder_config.out_of_image
            done = {"clip": "clipped", "drop": "dropped"}.get(rule, rule)
            lines.append(
                f"{where}: out_of_image={rule!r} {done} {sum(n for _, n in outside)} annotated "
                f"points outside their image, in {len(outside)} images: "
                + _named(f"{name} ({n})" for name, n in outside)
                + " (metadata: images_with_points_outside)"
            )
        turned = [
            f"{split}/{image_id}"
            for split, names in (metadata.get("images_turned_upright") or {}).items()
            for image_id in names
        ]
        if turned:
            lines.append(
                f"{where}: {len(turned)} images turned upright by their EXIF orientation, as "
                "predict.py reads them (their points are taken on the upright picture): "
                + _named(turned)
                + " (metadata: images_turned_upright)"
            )
        return lines

    def download_and_prepare(self, *args, **kwargs):
        built_now = not self.is_prepared()
        result = super().download_and_prepare(*args, **kwargs)
        if built_now:
            for line in self.build_report():
                logging.warning("%s", line)
        return result

    def make_example(
        self,
        *,
        split: str,
        image_id: str,
        image: bytes | np.ndarray,
        points: np.ndarray,
        roi: np.ndarray | None = None,
        extra: Mapping[str, Any] | None = None,
        name: str | None = None,
        boxes: np.ndarray | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Builds one example: resize rule, out-of-image rule, ground-truth maps.

        Args:
          split: split name (for the out-of-image report).
          image_id: original file name; also the example key.
          image: encoded image bytes (kept as they are when no re-encoding is needed) or RGB uint8.
          points: float [N, 2] (x, y) pixels of the original image (upright with `APPLY_EXIF`).
          roi: optional [H, W] mask of the original image (non-zero inside).
          extra: data-set specific features.
          name: path used in error messages (defaults to image_id).
          boxes: float [N, 4] head boxes (x1, y1, x2, y2) of the original image, one per point
            (builders with `HAS_HEAD_BOXES`); resized and dropped with their points.

        Returns:
          (key, example) for `_generate_examples`.
        """
        cfg: CrowdConfig = self.builder_config
        name = name or image_id
        encoded = image if isinstance(image, bytes) else None
        if encoded is not None:
            rgb, passthrough, turned = _decode(
                encoded, self.IMAGE_FORMAT, name=name, apply_exif=self.APPLY_EXIF
            )
            if self.APPLY_EXIF:
                self._record_turned(split, image_id, turned)
        else:
            rgb, passthrough = image, False
        points = io.as_points(points, name=name)
        height, width = rgb.shape[:2]
        original_size = np.array([height, width], np.int32)
        if self.HAS_HEAD_BOXES:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            if len(boxes) != len(points):
                raise io.DataError(f"{name}: {len(points)} points but {len(boxes)} head boxes")
        if roi is not None and roi.shape[:2] != (height, width):
            raise io.DataError(f"{name}: ROI mask shape {roi.shape} != image shape {rgb.shape[:2]}")

        scale = resize_scale(height, width, cfg)
        if scale != 1.0:
            new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
            points = points * np.array([new_w / width, new_h / height], np.float32)
            if self.HAS_HEAD_BOXES:
                boxes = boxes * np.array([new_w / width, new_h / height] * 2, np.float32)
            if roi is not None:
                roi = cv2.resize(
                    roi.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST
                )
            height, width, passthrough = new_h, new_w, False

        if self.HAS_HEAD_BOXES and cfg.out_of_image == "drop":
            boxes = boxes[_inside(points, height, width)]  # Dropped with their points.
        points, outside = apply_out_of_image_rule(
            points, height, width, cfg.out_of_image, name=name
        )
        self._record_outside(split, image_id, outside)

        if not passthrough:
            ext = ".jpg" if self.IMAGE_FORMAT == "jpeg" else ".png"
            encoded = io.encode_image(rgb, ext=ext)

        shape = (height, width)
        example = {
            "image": encoded,
            "image_id": image_id,
            "points": points,
            "count": np.int32(len(points)),
            "density": to_float16_map(
                density_map(
                    points, shape, sigma=cfg.sigma, adaptive=cfg.adaptive, beta=cfg.beta, k=cfg.k
                ),
                len(points),
                name=name,
            ),
            "distance_label": distance_label_map(points, shape, edges=cfg.distance_edges),
        }
        if self.HAS_ROI:
            example["roi"] = (
                np.ones(shape, np.uint8) if roi is None else (np.asarray(roi) != 0).astype(np.uint8)
            )
        if self.HAS_HEAD_BOXES:
            example["boxes"] = boxes
            example["original_size"] = original_size
        example.update(extra or {})
        return image_id, example


def _is_format(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        return data[:2] == b"\xff\xd8"
    return data[:8] == b"\x89PNG\r\n\x1a\n"


def _named(items) -> str:
    """The first `REPORTED_IMAGES` of `items`, comma-separated, with how many more there are."""
    items = list(items)
    more = len(items) - REPORTED_IMAGES
    return ", ".join(items[:REPORTED_IMAGES]) + (f", ... and {more} more" if more > 0 else "")


def _decode(
    data: bytes, fmt: str, *, name: str, apply_exif: bool = False
) -> tuple[np.ndarray, bool, bool]:
    """Decodes: (RGB uint8 [H, W, 3], whether `data` can be stored as it is, whether an EXIF
    orientation turned it).

    The probe (IMREAD_UNCHANGED) reads the stored pixel grid, EXIF orientation ignored. `data` is
    stored as is only when it is already 8-bit, 3-channel and in the builder's format and, with
    `apply_exif`, when the upright picture is that grid: every reader of stored images ignores
    EXIF (`decode.decode_bgr`), so a turned JPEG kept as is would be read on its grid, away from
    points annotated on the upright picture; it is encoded again, upright.
    """
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if raw is None or raw.size == 0:
        # Raises DataError naming the file.
        return decode.decode_rgb(data, apply_exif=apply_exif, name=name), False, False
    passthrough = (
        raw.dtype == np.uint8 and raw.ndim == 3 and raw.shape[2] == 3 and _is_format(data, fmt)
    )
    grid = decode.to_rgb(raw, name=name)
    if not apply_exif:
        return grid, passthrough, False
    # A second decode, with prediction's reader: the probe's grid as RGB is what
    # decode_rgb(apply_exif=False) gives (JPEG, PNG, BMP, WebP, TIFF), so any difference is the
    # EXIF orientation's doing.
    upright = decode.decode_rgb(data, apply_exif=True, name=name)
    turned = upright.shape != grid.shape or not np.array_equal(upright, grid)
    return upright, passthrough and not turned, turned


def require_nonempty(items: list, *, what: str, where: str | os.PathLike) -> list:
    """Raises `DataError` naming the directory when a split would be empty."""
    if not items:
        raise io.DataError(f"{os.fspath(where)}: empty split, no {what} found")
    return items
