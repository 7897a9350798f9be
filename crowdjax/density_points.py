"""Head points from density maps: the named protocols that localization numbers come from.

A density method predicts no heads; its localization numbers (AP / AR / F) depend entirely on how
points are read off its map, so every such number is reported with its protocol
(``config.eval.localization``):

  * ``""`` (default): none; density methods report no localization numbers.
  * ``"stride_peaks"``: 3x3 peaks of the map at its output stride s (``localization.peak_mask``),
    above ``eval.peak_threshold`` (people per output pixel); output pixel (r, c) is the image
    point (s*c + s/2, s*r + s/2). At most one head per 3 x 3 output pixels (24 x 24 image pixels
    at s = 8): crowdjax's earlier (unlabelled) reading, kept for comparison.
  * ``"input_peaks"``: UOT Sec. 4.3 ("we adopt the non-maximal suppression (NMS) to find local
    peaks of density maps as the predicted points", Table 5) and AutoScale Sec. 4.4 / Table 12
    ("person locations correspond to local maxima of density maps"). Neither paper states the
    window, the threshold or the resolution; the choices taken: the map is brought to the input
    resolution by bilinear interpolation (half-pixel centres, edges clamped, as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``) divided by s^2 so
    that it keeps its count; a pixel is a peak when it equals the maximum of its
    ``eval.peak_window`` x ``eval.peak_window`` window (image borders padded with -inf) and is
    strictly above ``eval.peak_threshold / s^2`` (the same people per output pixel as
    ``stride_peaks``); each 8-connected group of peak pixels (a plateau: with an even stride the
    interpolated maximum falls between pixels) is one head at the group's mean pixel centre.

Localization methods (AutoScale's distance-label head) report their own heads under the protocol
name ``"heads"``. Points are (x, y) float pixels of the input image, ``[N, 2]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from crowdjax import localization

PROTOCOLS = ("", "stride_peaks", "input_peaks")
METHOD_HEADS = "heads"  # The protocol name of a localization method's own points.


def check_protocol(name: str) -> str:
    """Returns `name` if it is a density-to-points protocol, else raises naming the valid ones."""
    if name not in PROTOCOLS:
        raise ValueError(
            f"config.eval.localization={name!r}; use one of {list(PROTOCOLS)} "
            '("" reports no localization numbers for density methods)'
        )
    return name


def _interpolation_weights(size_out: int, size_in: int, stride: int):
    """Rows of the linear interpolation matrix [size_out, size_in] (half-pixel centres)."""
    src = (np.arange(size_out, dtype=np.float64) + 0.5) / stride - 0.5
    src = np.clip(src, 0.0, size_in - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    weights = np.zeros((size_out, size_in), np.float64)
    np.add.at(weights, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(weights, (np.arange(size_out), high), frac)
    return weights


def upsample_to_input(density, *, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """The map at input resolution: bilinear, divided by stride^2 (float64 [H, W]).

    Args:
      density: [h, w] map at output stride ``stride`` (h = ceil(H / s), w = ceil(W / s)).
      stride: the output stride s.
      shape: the input image's (H, W).
    """
    density = np.asarray(density, np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be [h, w], got shape {density.shape}")
    height, width = (int(v) for v in shape)
    if density.size == 0 or height == 0 or width == 0:
        return np.zeros((height, width), np.float64)
    rows = _interpolation_weights(height, density.shape[0], stride)
    cols = _interpolation_weights(width, density.shape[1], stride)
    return rows @ density @ cols.T / float(stride) ** 2


def peak_groups(density, *, threshold: float, window: int) -> np.ndarray:
    """Local maxima of a map, one point per 8-connected group of peak pixels.

    Args:
      density: [H, W] map.
      threshold: a peak must be strictly above it.
      window: odd window side (px); a peak equals the maximum of its window (borders -inf).

    Returns:
      float64 [K, 2] (x, y) mean pixel centres (c + 0.5, r + 0.5) of the K groups, ordered by
      their first pixel in row-major order.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"config.eval.peak_window must be an odd number >= 1, got {window}")
    density = np.asarray(density, np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be [H, W], got shape {density.shape}")
    if density.size == 0:
        return np.zeros((0, 2), np.float64)
    local_max = ndimage.maximum_filter(density, size=window, mode="constant", cval=-np.inf)
    peaks = (density >= local_max) & (density > threshold)
    labels, count = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros((0, 2), np.float64)
    rows, cols = np.nonzero(labels)
    group = labels[rows, cols] - 1  # ndimage labels groups in row-major order of first pixel
    sizes = np.bincount(group, minlength=count)
    x = np.bincount(group, weights=cols + 0.5, minlength=count) / sizes
    y = np.bincount(group, weights=rows + 0.5, minlength=count) / sizes
    return np.stack([x, y], 1)


def density_points(
    density,
    *,
    protocol: str,
    stride: int,
    shape: tuple[int, int],
    threshold: float,
    window: int = 3,
) -> np.ndarray:
    """Head points of one density map under a named protocol (see the module doc).

    Args:
      density: [h, w] predicted density at output stride ``stride``.
      protocol: "stride_peaks" or "input_peaks".
      stride: the output stride s.
      shape: the input image's (H, W).
      threshold: ``eval.peak_threshold``, people per output pixel.
      window: ``eval.peak_window`` (input_peaks only).

    Returns:
      float64 [K, 2] (x, y) image pixels.
    """
    if protocol == "stride_peaks":
        return localization.density_to_points(density, threshold=threshold, stride=stride)
    if protocol == "input_peaks":
        upsampled = upsample_to_input(density, stride=stride, shape=shape)
        return peak_groups(upsampled, threshold=threshold / float(stride) ** 2, window=window)
    raise ValueError(f"no density-to-points protocol {protocol!r}; use one of {PROTOCOLS[1:]}")


def describe(protocol: str, *, threshold: float, window: int) -> dict:
    """The protocol of a run's localization numbers, as its eval JSON records it."""
    if protocol == METHOD_HEADS:
        return {"protocol": METHOD_HEADS}
    out = {"protocol": protocol, "peak_threshold": float(threshold)}
    if protocol == "input_peaks":
        out["peak_window"] = int(window)
    return out


def label(description: dict) -> str:
    """A short label, e.g. "input_peaks (window 3, threshold 0.1)", for the console line."""
    details = []
    if "peak_window" in description:
        details.append(f"window {description['peak_window']}")
    if "peak_threshold" in description:
        details.append(f"threshold {description['peak_threshold']:g}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{description['protocol']}{suffix}"
