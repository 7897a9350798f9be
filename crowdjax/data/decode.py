"""Decoding bytes: encoded images to RGB (or BGR) uint8, stored ZLIB tensors to arrays, TFDS text.

One image decoder, `decode_rgb`, serves the data-set builders, the evaluation and preparation
passes over stored images, and the prediction of a user's pictures; they differ only in
`apply_exif`. Annotations refer to the stored pixel grid, so every reader of data-set images
ignores a JPEG's EXIF orientation (applying it would rotate some photos away from their points);
a user's phone picture is counted upright, the way viewers show it, so prediction applies it.
`decode_bgr` is the training stream's fast path: the stored grid, optionally decoded at 1/2 or
1/4 size.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from crowdjax.data.io import DataError

_EXIF_IGNORED = cv2.IMREAD_IGNORE_ORIENTATION
_REDUCED = {
    r: flag | _EXIF_IGNORED
    for r, flag in [
        (1, cv2.IMREAD_COLOR),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
    ]
}


def decode_rgb(data: bytes, *, apply_exif: bool, name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> RGB uint8 [H, W, 3].

    Gray, gray + alpha, RGB and RGBA, 8 or 16 bits per channel, all become RGB uint8 (16 bits
    scaled by 1/257, alpha dropped: the colour channels are kept as they are).

    Args:
      data: the encoded image (JPEG, PNG, BMP, WebP, TIFF, ...).
      apply_exif: rotate/flip by the EXIF orientation (True: as viewers show the picture; False:
        the stored pixel grid, which data-set annotations refer to).
      name: used in error messages.

    Raises:
      DataError: empty, corrupt or unsupported data, naming `name`.
    """
    if not data:
        raise DataError(f"{name}: empty image file")
    # One decode: COLOR makes gray and alpha images 3-channel BGR; ANYDEPTH keeps 16 bits for
    # `to_rgb`'s 1/257 scaling.
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | (0 if apply_exif else _EXIF_IGNORED)
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if raw is None or raw.size == 0:
        raise DataError(f"{name}: corrupt or unreadable image")
    if raw.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{name}: unsupported image type {raw.dtype} (use 8 or 16 bits)")
    return to_rgb(raw, name=name)


def to_rgb(image: np.ndarray, *, name: str = "<array>") -> np.ndarray:
    """Converts a cv2-decoded (BGR, BGRA or gray) uint8/uint16 image to RGB uint8 [H, W, 3]."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DataError(f"{name}: unsupported image dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise DataError(f"{name}: unsupported image shape {image.shape}")


def decode_bgr(data: bytes, *, reduce: int = 1, name: str = "<bytes>") -> np.ndarray:
    """A stored image's bytes -> BGR uint8 [H', W', 3] on its stored pixel grid (EXIF ignored).

    Args:
      data: encoded image.
      reduce: 1, 2 or 4; decode at about 1/reduce size (JPEG: DCT scaling, much faster).
      name: used in the error message.
    """
    if reduce not in _REDUCED:
        raise ValueError(f"reduce must be one of {sorted(_REDUCED)}, got {reduce}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduce])
    if image is None or image.size == 0:
        raise DataError(f"{name}: corrupt or unreadable image")
    return image


def decode_tensor(feature, dtype, *, rows: int | None = None, window=None) -> np.ndarray:
    """Decodes an undecoded TFDS ZLIB tensor `{"shape": [H, W], "value": bytes}` to `dtype`.

    The stored dtype is `feature["dtype"]` (`datasets.raw_source` adds it: density maps are float16
    since builder version 1.1.0, float32 before), else `dtype`; the result is cast to `dtype` after
    cropping, so only the kept pixels are converted.

    Args:
      feature: the feature as read with `datasets.raw_source` (or `tfds.decode.SkipDecoding()`).
      dtype: wanted dtype (float32 for density, uint8 for label maps).
      rows: decode only the first `rows` rows (a prefix of the stream: less work).
      window: `(y0, x0, h, w)`: decode the rows up to y0 + h and return that window only.

    Returns:
      [min(rows, H), W] of `dtype`, or [h, w] with `window`.
    """
    stored = np.dtype(feature.get("dtype", dtype))
    shape = tuple(int(s) for s in feature["shape"])
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * stored.itemsize
    if window is not None:
        rows = window[0] + window[2]
    rows = shape[0] if rows is None else min(int(rows), shape[0])
    buf = zlib.decompressobj().decompress(feature["value"], rows * row_bytes)
    out = np.frombuffer(buf, stored).reshape((rows,) + shape[1:])
    if window is not None:
        y0, x0, h, w = window
        out = out[y0 : y0 + h, x0 : x0 + w]
    return out if out.dtype == dtype else out.astype(dtype)


def text(value) -> str:
    """A TFDS text feature (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)
