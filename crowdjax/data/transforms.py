"""Per-example geometry and augmentation of the input pipeline: pure numpy / cv2, no framework.

Crop windows, scaling, ground-truth maps of a window, flips, colour jitter, normalisation,
padding and tiles, and their compositions: `TrainTransform` (raw record -> training example)
and `eval_example` (raw record -> padded whole image). Decoding the stored bytes is
`crowdjax.data.decode`'s.

Conventions (whole project): points are (x, y) pixels, pixel (row r, col c) covers
[c, c+1) x [r, r+1). A crop window is `(y0, x0, h, w)` in pixels of the (possibly rescaled)
image; a point belongs to it iff x0 <= x < x0 + w and y0 <= y < y0 + h, the same half-open rule
`labels.density_map` uses, so counts of points and of regenerated maps always agree.

Crops of ground-truth maps are computed on the crop window plus a margin instead of the whole image
(`density_crop`, `distance_label_crop`); both equal the crop of the full-image map (see their
docstrings for why) and cost a fraction of it.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from crowdjax.data import labels
from crowdjax.data.decode import decode_bgr, decode_rgb, decode_tensor, text
from crowdjax.data.io import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD))).astype(np.float32)
_OFFSET = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)
_LUT = (np.arange(256, dtype=np.float32)[None, :, None] * _SCALE + _OFFSET).astype(np.float32)


def random_window(
    rng: np.random.Generator, height: int, width: int, crop: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Uniform crop window `(y0, x0, h, w)`; h = min(crop_h, height) (the rest is padding)."""
    ch, cw = crop
    y0 = int(rng.integers(0, max(height - ch, 0) + 1))
    x0 = int(rng.integers(0, max(width - cw, 0) + 1))
    return y0, x0, min(ch, height - y0), min(cw, width - x0)


def crop_points(points: np.ndarray, window) -> np.ndarray:
    """Points inside the window, in window pixels: float64 [M, 2] (M <= N).

    Kept points are clamped below the largest float32 under (w, h), so that casting them to
    float32 cannot round a point onto the far border (outside).
    """
    y0, x0, h, w = window
    shifted = np.asarray(points, np.float64).reshape(-1, 2) - (x0, y0)
    x, y = shifted[:, 0], shifted[:, 1]
    kept = shifted[(x >= 0) & (x < w) & (y >= 0) & (y < h)]
    top = np.nextafter(np.array([w, h], np.float32), np.float32(0))
    return np.minimum(kept, top.astype(np.float64))


def scaled_crop(image: np.ndarray, scaled_shape: tuple[int, int], window, *, nearest=False):
    """The window of `image` resized to `scaled_shape`, without resizing the whole image.

    Bilinear (default): equal to `cv2.resize(image, scaled_shape[::-1])[y0:y0+h, x0:x0+w]`
    (half-pixel centres: source index = (target index + 0.5) * size ratio - 0.5), computed by one
    warpAffine on the window only. `nearest` (masks such as the ROI): the source pixel under each
    target pixel's centre, floor((target index + 0.5) * size ratio), in exact integers (warpAffine's
    nearest rounds on a 1/32 px grid), so a mask stays aligned with the bilinear image. `image`
    may be a reduced decode of the original: only the ratio matters.

    Args:
      image: [H, W] or [H, W, C].
      scaled_shape: (Hs, Ws) of the virtual resized image.
      window: (y0, x0, h, w) in the resized image.
      nearest: nearest-neighbour instead of bilinear.
    """
    y0, x0, h, w = window
    ay, ax = image.shape[0] / scaled_shape[0], image.shape[1] / scaled_shape[1]
    if ay == 1.0 and ax == 1.0:
        return image[y0 : y0 + h, x0 : x0 + w]
    if nearest:  # floor((i + 1/2) H / Hs) in integers: exact, ties included
        (big_h, big_w), (hs, ws) = image.shape[:2], scaled_shape
        rows = (2 * np.arange(y0, y0 + h) + 1) * big_h // (2 * hs)
        cols = (2 * np.arange(x0, x0 + w) + 1) * big_w // (2 * ws)
        return image[np.minimum(rows, big_h - 1)][:, np.minimum(cols, big_w - 1)]
    m = np.array([[ax, 0.0, (x0 + 0.5) * ax - 0.5], [0.0, ay, (y0 + 0.5) * ay - 0.5]])
    return cv2.warpAffine(
        image,
        m,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def density_crop(
    points,
    shape: tuple[int, int],
    window,
    *,
    sigma: float = 4.0,
    adaptive: bool = False,
    beta: float = 0.3,
    k: int = 3,
    truncate: float = 4.0,
) -> np.ndarray:
    """`labels.density_map(points, shape, ...)[y0:y0+h, x0:x0+w]`, computed near the window only.

    The map is computed on the window grown by two kernel radii R (clipped to the image). A head
    farther than R from the window does not reach it; a head within R has its whole kernel inside
    the grown window or cut by the same image border, so its renormalisation (mass 1 inside the
    image) is the same as on the full image. Adaptive sigmas come from all points (k-NN), as on
    the full image.

    Returns:
      [h, w] float32.
    """
    y0, x0, h, w = window
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if adaptive:
        sig = labels.adaptive_sigmas(points, beta=beta, k=k)
        sig = sig[np.isfinite(sig)]
        radius = labels.gaussian_radius(float(sig.max()), truncate) if sig.size else 0
    else:
        radius = labels.gaussian_radius(sigma, truncate)
    wy0, wx0 = max(0, y0 - 2 * radius), max(0, x0 - 2 * radius)
    wy1, wx1 = min(shape[0], y0 + h + 2 * radius), min(shape[1], x0 + w + 2 * radius)
    if not adaptive:  # Only heads in the grown window matter (k-NN needs all of them).
        points = crop_points(points, (wy0, wx0, wy1 - wy0, wx1 - wx0)) + (wx0, wy0)
    grown = labels.density_map(
        points - (wx0, wy0),
        (wy1 - wy0, wx1 - wx0),
        sigma=sigma,
        adaptive=adaptive,
        beta=beta,
        k=k,
        truncate=truncate,
    )
    return grown[y0 - wy0 : y0 - wy0 + h, x0 - wx0 : x0 - wx0 + w]


def distance_label_crop(points, shape: tuple[int, int], window, *, edges) -> np.ndarray:
    """`labels.distance_label_map(points, shape, edges)` cropped to the window, computed nearby.

    Classes saturate at the last edge e: a head more than e + 2 px outside the window is farther
    than e from every window pixel, so it cannot change any class there.

    Returns:
      [h, w] uint8.
    """
    y0, x0, h, w = window
    margin = int(np.ceil(float(edges[-1]))) + 2
    wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
    wy1, wx1 = min(shape[0], y0 + h + margin), min(shape[1], x0 + w + margin)
    near = crop_points(points, (wy0, wx0, wy1 - wy0, wx1 - wx0))
    grown = labels.distance_label_map(near, (wy1 - wy0, wx1 - wx0), edges=edges)
    return grown[y0 - wy0 : y0 - wy0 + h, x0 - wx0 : x0 - wx0 + w]


def flip_points(points: np.ndarray, width: int) -> np.ndarray:
    """Horizontal flip of points in an image of `width` px: x -> width - x.

    Pixel c maps to pixel width - 1 - c (as `array[:, ::-1]`); a point exactly on the left border
    (x = 0) would land on x = width, outside, so it is kept just inside instead.
    """
    out = np.array(points, np.float64).reshape(-1, 2)
    out[:, 0] = np.minimum(width - out[:, 0], np.nextafter(np.float32(width), 0))
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator, *, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation (torchvision ColorJitter(s, s, s) semantics).

    Each factor is uniform in [max(0, 1 - s), 1 + s], applied in random order, clipped to [0, 255]
    after each step. Contrast blends with the mean luma, saturation with the per-pixel luma
    (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).

    Args:
      image: RGB [H, W, 3] in [0, 255] (uint8 or float).

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
    out = np.ascontiguousarray(image, np.float32)
    for op in rng.permutation(3):
        f = float(factors[op])
        if op == 0:
            out = out * np.float32(f)
        elif op == 1:
            mean = float(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).mean())
            out = out * np.float32(f) + np.float32((1.0 - f) * mean)
        else:
            gray = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            out = cv2.addWeighted(out, f, gray, 1.0 - f, 0.0)
        out = np.clip(out, 0.0, 255.0, out=out)
    return out


def normalize(image: np.ndarray) -> np.ndarray:
    """ImageNet normalisation of RGB [..., 3] in [0, 255]: (x / 255 - mean) / std, float32.

    uint8 input goes through a per-channel lookup table (same float32 values, ~8x faster than
    numpy broadcasting over a last axis of 3).
    """
    image = np.asarray(image)
    if image.shape[-1] != 3:
        raise ValueError(f"expected RGB [..., 3], got shape {image.shape}")
    # cv2 sees [rows, cols, 3]; a [N, 1, 3] view would make it loop over N rows of one pixel.
    flat = np.ascontiguousarray(image).reshape(-1, image.shape[-2] if image.ndim > 2 else 1, 3)
    if image.dtype == np.uint8:
        return cv2.LUT(flat, _LUT).reshape(image.shape)
    out = cv2.multiply(flat.astype(np.float32), tuple(float(s) for s in _SCALE) + (0.0,))
    return cv2.add(out, tuple(float(o) for o in _OFFSET) + (0.0,)).reshape(image.shape)


def pad_to(array: np.ndarray, height: int, width: int, fill=0) -> np.ndarray:
    """Pads [h, w, ...] at the bottom/right to [height, width, ...] with `fill`."""
    h, w = array.shape[:2]
    if h > height or w > width:
        raise ValueError(f"cannot pad shape {array.shape} to ({height}, {width})")
    if (h, w) == (height, width):
        return array
    out = np.full((height, width) + array.shape[2:], fill, array.dtype)
    out[:h, :w] = array
    return out


def image_mask(height: int, width: int, real_h: int, real_w: int) -> np.ndarray:
    """bool [height, width]: True on the real image pixels [0, real_h) x [0, real_w)."""
    mask = np.zeros((height, width), bool)
    mask[:real_h, :real_w] = True
    return mask


def pad_points(points, max_points: int, *, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Pads points to a fixed count with a mask.

    Returns:
      points float32 [max_points, 2] (zeros past the real ones), point_mask bool [max_points].

    Raises:
      ValueError: more than `max_points` points; names the image.
    """
    points = np.asarray(points, np.float32).reshape(-1, 2)
    n = points.shape[0]
    if n > max_points:
        raise ValueError(
            f"{image_id}: {n} points exceed max_points={max_points}; raise data.max_points"
        )
    out = np.zeros((max_points, 2), np.float32)
    out[:n] = points
    return out, np.arange(max_points) < n


# ------------------------------------------------------------------------------ compositions


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Density kernel of `labels.density_map`: fixed `sigma` px, or geometry-adaptive."""

    sigma: float = 4.0
    adaptive: bool = False
    beta: float = 0.3
    k: int = 3
    truncate: float = 4.0  # Half-width in sigmas (1.75 with sigma 4: a 15 x 15 kernel).


def min_side_shape(height: int, width: int, min_side: int) -> tuple[int, int]:
    """(H, W) scaled up, aspect kept, so that the short side is at least `min_side` (0: off)."""
    short = min(height, width)
    if min_side <= 0 or short >= min_side:
        return height, width
    scale = min_side / short
    return max(min_side, round(height * scale)), max(min_side, round(width * scale))


@dataclasses.dataclass(frozen=True)
class Unpadded:
    """A training example before padding: its real pixels only (h, w = `shape`).

    Attributes:
      name: image id (error messages).
      image: float32 [h, w, 3], ImageNet-normalised.
      density: float32 [h, w] at full resolution (pooled only after padding).
      points: float64 [M, 2], (x, y) in example pixels.
      domain: the example's domain label.
      maps: "distance_label" and/or "roi", uint8 [h, w] each (when the transform makes them).
      distance_fill: distance-label class of padding (the last: far from every head).
    """

    name: str
    image: np.ndarray
    density: np.ndarray
    points: np.ndarray
    domain: int
    maps: dict = dataclasses.field(default_factory=dict)
    distance_fill: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def crop(self, window) -> Unpadded:
        """The part in window `(y0, x0, h, w)` (points shifted and kept by `crop_points`)."""
        y0, x0, h, w = window
        rows, cols = slice(y0, y0 + h), slice(x0, x0 + w)
        return dataclasses.replace(
            self,
            image=self.image[rows, cols],
            density=self.density[rows, cols],
            points=crop_points(self.points, window),
            maps={key: m[rows, cols] for key, m in self.maps.items()},
        )


def pad_example(example: Unpadded, height: int, width: int, *, output_stride: int, max_points: int):
    """Unpadded example -> padded training example (the dict `TrainTransform` documents).

    Image, density and maps are padded at the bottom/right to (height, width) (image and density
    0, distance label `distance_fill`, roi 0; `image_mask` marks the real pixels), then the density
    is sum-pooled by `output_stride` (exact when both sides are multiples of it); points are padded
    to `max_points` (more is a ValueError naming the image).
    """
    h, w = example.shape
    density = pad_to(np.ascontiguousarray(example.density, np.float32), height, width)
    points, point_mask = pad_points(example.points, max_points, image_id=example.name)
    out = {
        "image": pad_to(example.image, height, width),
        "density": labels.sum_pool(density, output_stride),
        "points": points,
        "point_mask": point_mask,
        "count": np.float32(point_mask.sum()),
        "domain": np.int32(example.domain),
        "image_mask": image_mask(height, width, h, w),
    }
    if "distance_label" in example.maps:
        out["distance_label"] = pad_to(
            np.ascontiguousarray(example.maps["distance_label"]),
            height,
            width,
            example.distance_fill,
        )
    if "roi" in example.maps:
        out["roi"] = pad_to(np.ascontiguousarray(example.maps["roi"]), height, width)
    return out


def tile_edges(size: int, tiles: int, stride: int) -> list[int]:
    """Edges of `tiles` tiles along a side of `size` px: floor(k size / tiles / stride) stride for
    k = 0 .. tiles - 1, then `size` (inner edges on multiples of the stride; a side shorter than
    `tiles` strides gets empty tiles)."""
    return [k * size // (tiles * stride) * stride for k in range(tiles)] + [size]


def tile_windows(
    height: int, width: int, tiles: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """The `tiles x tiles` windows `(y0, x0, h, w)` of a height x width image, row by row."""
    rows, cols = tile_edges(height, tiles, stride), tile_edges(width, tiles, stride)
    return [
        (rows[i], cols[j], rows[i + 1] - rows[i], cols[j + 1] - cols[j])
        for i in range(tiles)
        for j in range(tiles)
    ]


def split_tiles(example: Unpadded, tiles: int, stride: int) -> list[Unpadded]:
    """The `tile_windows` of an example, each an example of its own (1 tile: the example)."""
    if tiles == 1:
        return [example]
    return [example.crop(window) for window in tile_windows(*example.shape, tiles, stride)]


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """Raw record -> training example (a grain random map: `transform(record, rng)`).

    The record is a TFDS example read with `SkipDecoding` for image and maps (see
    `datasets.raw_source`), so only what a crop needs is decoded. Order of operations: random
    scale (image size x s, s uniform in `scale_range`), random crop window of the scaled image
    (smaller images: whole image, padded; `crop_size` None: the whole image, no draw), ground
    truth (stored maps cropped when unscaled and `regenerate` is off; else regenerated from the
    scaled points with `kernel`), horizontal flip (p = 0.5), colour jitter, ImageNet
    normalisation; then (`pad_example`) padding to `crop_size` with `image_mask`, density
    sum-pooled to `output_stride`, points padded to `max_points`.

    Returns a dict: image float32 [h, w, 3], density float32 [h/s, w/s], points float32 [P, 2]
    (crop pixels), point_mask bool [P], count float32 (points in the crop), domain int32 (the
    record's "domain" when it has one, else `domain`),
    image_mask bool [h, w]; distance_label uint8 [h, w] when `distance_edges` is set (padding:
    last class); roi uint8 [h, w] when `with_roi`. With `crop_size` None (whole-image training)
    it returns the `Unpadded` example instead: the batch pads it (`pad_example`).
    """

    crop_size: tuple[int, int] | None
    max_points: int
    output_stride: int = 1
    hflip: bool = False
    scale_range: tuple[float, float] = (1.0, 1.0)
    color_jitter: float = 0.0
    kernel: Kernel = Kernel()
    regenerate: bool = False
    distance_edges: tuple[float, ...] | None = None
    with_roi: bool = False
    domain: int = 0
    min_short_side: int = 0

    def __call__(self, record: dict, rng: np.random.Generator) -> dict | Unpadded:
        example = self.example(record, rng)
        if self.crop_size is None:
            return example
        return pad_example(
            example, *self.crop_size, output_stride=self.output_stride, max_points=self.max_points
        )

    def scaled_shape(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """The image size after `min_short_side` and the random scale (the transform's first
        draw from `rng`)."""
        height, width = min_side_shape(height, width, self.min_short_side)
        lo, hi = self.scale_range
        scale = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def unaugmented_density(self, record: dict) -> np.ndarray:
        """The whole image's full-resolution density as `example` computes it, without the random
        steps (scale 1, no crop, no flip): after `min_short_side`, with `kernel` when the image
        is scaled or `regenerate` is set, else the stored map. float32 [H, W]."""
        height, width = (int(s) for s in record["density"]["shape"])
        hs, ws = min_side_shape(height, width, self.min_short_side)
        points = _scaled_points(record, hs, ws)
        return self._density(record, points, (hs, ws), (0, 0, hs, ws))

    def _density(self, record: dict, points: np.ndarray, scaled_shape, window) -> np.ndarray:
        """The density of `window` of the image scaled to `scaled_shape` (`points` scaled too)."""
        rescaled = tuple(scaled_shape) != tuple(int(s) for s in record["density"]["shape"])
        if rescaled or self.regenerate:
            return density_crop(points, scaled_shape, window, **dataclasses.asdict(self.kernel))
        return decode_tensor(record["density"], np.float32, window=window)

    def example(self, record: dict, rng: np.random.Generator) -> Unpadded:
        """The unpadded example: the crop (or whole image) after every random step."""
        name = text(record["image_id"])
        height, width = (int(s) for s in record["density"]["shape"])
        hs, ws = self.scaled_shape(height, width, rng)
        rescaled = (hs, ws) != (height, width)
        if self.crop_size is None:
            window = (0, 0, hs, ws)
        else:
            window = random_window(rng, hs, ws, self.crop_size)
        flip = self.hflip and rng.random() < 0.5
        y0, x0, h, w = window

        # Decoding at 1/2 or 1/4 size (JPEG DCT scaling) is exact enough and much cheaper.
        reduce = max([1] + [r for r in (2, 4) if r * hs <= height and r * ws <= width])
        bgr = decode_bgr(record["image"], reduce=reduce, name=name)
        if reduce == 1 and bgr.shape[:2] != (height, width):
            raise DataError(f"{name}: image {bgr.shape[:2]} != density map {(height, width)}")
        crop = scaled_crop(bgr, (hs, ws), window)
        points = _scaled_points(record, hs, ws)
        maps = {"density": self._density(record, points, (hs, ws), window)}
        if self.distance_edges is not None:
            if rescaled:
                dist = distance_label_crop(points, (hs, ws), window, edges=self.distance_edges)
            else:
                dist = decode_tensor(record["distance_label"], np.uint8, rows=y0 + h)
                dist = dist[y0:, x0 : x0 + w]
            maps["distance_label"] = dist
        if self.with_roi:
            roi = decode_tensor(record["roi"], np.uint8)
            maps["roi"] = scaled_crop(roi, (hs, ws), window, nearest=True)
        points = crop_points(points, window)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        if flip:
            rgb = rgb[:, ::-1]
            maps = {key: m[:, ::-1] for key, m in maps.items()}
            points = flip_points(points, w)
        if self.color_jitter > 0:
            rgb = color_jitter(rgb, rng, strength=self.color_jitter)
        density = maps.pop("density")
        return Unpadded(
            name=name,
            image=normalize(rgb),
            density=density,
            points=points,
            domain=int(record.get("domain", self.domain)),
            maps=maps,
            # padding is far from every head
            distance_fill=len(self.distance_edges) - 1 if self.distance_edges is not None else 0,
        )


def _scaled_points(record: dict, height: int, width: int) -> np.ndarray:
    """A record's points float64 [N, 2] in the pixels of its image scaled to height x width."""
    stored_h, stored_w = (int(s) for s in record["density"]["shape"])
    points = np.asarray(record["points"], np.float64).reshape(-1, 2)
    return points * (width / stored_w, height / stored_h)


def eval_example(
    record: dict,
    *,
    bucket: tuple[int, int],
    max_points: int,
    category_keys: tuple[str, ...] = (),
    with_roi: bool = False,
    min_short_side: int = 0,
    with_boxes: bool = False,
) -> dict:
    """Raw record -> whole-image evaluation example padded to `bucket` (bottom/right); an image
    with a short side under `min_short_side` is first scaled up to it (bilinear, aspect kept;
    points scaled with it, the count stays the annotated one).

    Returns a dict: image float32 [H, W, 3] (H, W = bucket), image_mask bool [H, W], points float32
    [P, 2], point_mask bool [P], count float32 (annotated points), valid bool (True), image_id
    str; roi uint8 [H, W] (0 on padding) when `with_roi`; boxes float32 [P, 4] (each point's
    head box, scaled as the points, zeros past them) and original_size int32 [2] (the release
    image's (H, W)) when `with_boxes`; one scalar per category key.
    """
    name = text(record["image_id"])
    rgb = decode_rgb(record["image"], apply_exif=False, name=name)
    stored = rgb.shape[:2]
    h, w = min_side_shape(*stored, min_short_side)
    points = np.asarray(record["points"], np.float32).reshape(-1, 2)
    if (h, w) != stored:
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        points = points * np.float32((w / stored[1], h / stored[0]))
    points, point_mask = pad_points(points, max_points, image_id=name)
    out = {
        "image": pad_to(normalize(rgb), *bucket),
        "image_mask": image_mask(*bucket, h, w),
        "points": points,
        "point_mask": point_mask,
        "count": np.float32(point_mask.sum()),
        "valid": np.bool_(True),
        "image_id": np.str_(name),
    }
    if with_boxes:
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        if (h, w) != stored:
            boxes = boxes * np.float32((w / stored[1], h / stored[0]) * 2)
        out["boxes"] = np.zeros((max_points, 4), np.float32)
        out["boxes"][: len(boxes)] = boxes
        out["original_size"] = np.asarray(record["original_size"], np.int32).reshape(2)
    if with_roi:
        roi = decode_tensor(record["roi"], np.uint8)
        if (h, w) != stored:
            roi = cv2.resize(roi, (w, h), interpolation=cv2.INTER_NEAREST)
        out["roi"] = pad_to(roi, *bucket)
    for key in category_keys:
        value = record[key]
        out[key] = np.str_(text(value)) if isinstance(value, bytes | str) else np.asarray(value)
    return out


def invalid_like(example: dict) -> dict:
    """A padding example with the structure of `example`: zeros, valid False, image_id ''."""
    out = {key: np.zeros_like(value) for key, value in example.items()}
    out["valid"] = np.bool_(False)
    out["image_id"] = np.str_("")
    return out
