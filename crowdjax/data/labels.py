"""Ground-truth maps from head points: density maps, distance-label maps and their inverses.

Numpy in, numpy out (used by the TFDS builders, the input pipeline for online regeneration after
random scaling, the tests and notebooks).

Conventions (whole module):
  * ``points: [N, 2]`` are (x, y) float pixels; pixel (row r, col c) covers [c, c+1) x [r, r+1).
  * A head at (x, y) belongs to pixel (floor(y), floor(x)); its kernel is centred on that pixel's
    centre (c + 0.5, r + 0.5). Sub-pixel offsets are dropped, so all maps are exactly reproducible
    from the integer head pixels (this is what the reference tests use too).
  * Points outside [0, W) x [0, H) (or NaN) are ignored: clipping or dropping them is the caller's
    decision.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

DEFAULT_DISTANCE_EDGES = (0, 1, 2, 3, 4, 5, 6, 8, 12, 18, 28)  # lower edges in px (AutoScale 3.5)

_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _as_points(points) -> np.ndarray:
    """Returns ``points`` as float64 [N, 2]; an empty input of any shape gives [0, 2]."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [N, 2] (x, y), got shape {points.shape}")
    return points


def _as_shape(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    return shape


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[N] bool: the point lies in [0, W) x [0, H) (NaN compares False: outside)."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x < w) & (y >= 0) & (y < h)


def _head_pixels(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (rows, cols) int64 [M] of the points inside the image (M <= N)."""
    inside = _inside(points, shape)
    return np.floor(points[inside, 1]).astype(np.int64), np.floor(points[inside, 0]).astype(
        np.int64
    )


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    """Kernel half-width in px, as scipy.ndimage.gaussian_filter: int(truncate * sigma + 0.5)."""
    return int(truncate * float(sigma) + 0.5)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Sampled Gaussian [2R + 1] float64 summing to 1, R = gaussian_radius (scipy's kernel)."""
    radius = gaussian_radius(sigma, truncate)
    if radius == 0 or sigma <= 0:
        return np.ones((1,), np.float64)
    j = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (j / sigma) ** 2)
    return g / g.sum()


def _inside_mass(centres: np.ndarray, size: int, cumsum: np.ndarray, radius: int) -> np.ndarray:
    """Mass of a centred 1D kernel (cumsum = [0, cumsum(g)]) that falls inside [0, size)."""
    lo = np.maximum(-radius, -centres) + radius  # first kernel index inside
    hi = np.minimum(radius, size - 1 - centres) + radius + 1  # one past the last index inside
    return cumsum[hi] - cumsum[lo]


def adaptive_sigmas(
    points, *, beta: float = 0.3, k: int = 3, fallback_sigma: float = 15.0
) -> np.ndarray:
    """Geometry-adaptive kernel widths (MCNN): sigma_i = beta * mean distance to k nearest heads.

    With fewer than k + 1 heads the mean runs over all N - 1 other heads. A single head has no
    neighbour and gets ``fallback_sigma`` (default 15 px, about the head size in the crowd data
    sets at the resolutions used here; it only changes the kernel shape, never the count).
    Coincident heads get sigma 0, i.e. a one-pixel delta.

    Args:
      points: [N, 2] (x, y) pixels; all finite ones count as neighbours (inside the image or
        not); a non-finite point gets a NaN sigma and is nobody's neighbour.
      beta: scale factor (MCNN: 0.3).
      k: number of neighbours.
      fallback_sigma: sigma of a lone head, in pixels.

    Returns:
      [N] float32 sigmas in pixels.
    """
    points = _as_points(points)
    finite = np.isfinite(points).all(axis=1)
    out = np.full(points.shape[0], np.nan, np.float32)
    pts = points[finite]
    n = pts.shape[0]
    if n == 1:
        out[finite] = fallback_sigma
    elif n > 1:
        kk = min(int(k), n - 1)
        dist, _ = cKDTree(pts).query(pts, k=kk + 1)
        # Column 0 is the head itself (distance 0; a coincident twin has distance 0 as well).
        out[finite] = beta * dist[:, 1:].mean(axis=1)
    return out


def _splat_fixed(rows, cols, shape, sigma, truncate) -> np.ndarray:
    """Fixed-sigma map: weighted delta image convolved with a separable truncated Gaussian."""
    h, w = shape
    g = gaussian_kernel1d(sigma, truncate)
    radius = g.size // 2
    cumsum = np.concatenate([[0.0], np.cumsum(g)])
    # Renormalise each head so its truncated kernel keeps mass 1 (exact: kernel is separable and
    # the image is a rectangle, so mass inside = row mass * column mass).
    mass = _inside_mass(rows, h, cumsum, radius) * _inside_mass(cols, w, cumsum, radius)
    delta = np.bincount(rows * w + cols, weights=1.0 / mass, minlength=h * w)
    delta = delta.reshape(h, w).astype(np.float32)
    if radius == 0:
        return delta
    g32 = g.astype(np.float32)
    return cv2.sepFilter2D(
        delta, cv2.CV_32F, g32, g32, anchor=(-1, -1), delta=0, borderType=cv2.BORDER_CONSTANT
    )


def _axis_profiles(centres, sigmas, radii, size, tile):
    """Per-tile 1D Gaussian profiles along one axis, each head normalised to 1 inside [0, size).

    Returns a list over tiles [t0, t0 + tile) of (head indices [n], profiles [n, tile] float32).
    """
    inv = np.where(sigmas > 0, 1.0 / np.where(sigmas > 0, sigmas, 1.0), 0.0).astype(np.float32)
    tiles, total = [], np.zeros(centres.shape, np.float64)
    for t0 in range(0, size, tile):
        t1 = min(t0 + tile, size)
        idx = np.nonzero((centres + radii >= t0) & (centres - radii < t1))[0]
        d = np.arange(t0, t1, dtype=np.float32)[None, :] - centres[idx, None].astype(np.float32)
        prof = np.exp(-0.5 * np.square(d * inv[idx, None]))
        prof *= np.abs(d) <= radii[idx, None]  # truncate at the kernel radius
        total[idx] += prof.sum(axis=1)
        tiles.append((idx, prof))
    for idx, prof in tiles:
        prof /= total[idx, None].astype(np.float32)
    return tiles


def _splat_adaptive(rows, cols, sigmas, shape, truncate, tile=128) -> np.ndarray:
    """Adaptive map: sum of per-head separable kernels, each factor normalised inside the image.

    On each tile the map is sum_i gy_i (x) gx_i over the heads touching it, i.e. one small matmul.
    """
    h, w = shape
    out = np.zeros(shape, np.float32)
    if rows.size == 0:
        return out
    radii = np.floor(truncate * sigmas + 0.5).astype(np.int64)  # as gaussian_radius
    ys = _axis_profiles(rows, sigmas, radii, h, tile)
    xs = _axis_profiles(cols, sigmas, radii, w, tile)
    slots = []  # slot[i] = row of head i in that column tile's profiles, or -1
    for ix, _ in xs:
        slot = np.full(rows.shape, -1, np.int64)
        slot[ix] = np.arange(ix.size)
        slots.append(slot)
    for (iy, py), y0 in zip(ys, range(0, h, tile), strict=True):
        for (_, px), slot, x0 in zip(xs, slots, range(0, w, tile), strict=True):
            s = slot[iy]
            both = s >= 0
            if both.any():
                # cv2.gemm: single-threaded-friendly, unlike OpenBLAS on tiny busy matmuls.
                out[y0 : y0 + tile, x0 : x0 + tile] = cv2.gemm(
                    py[both], px[s[both]], 1.0, None, 0.0, flags=cv2.GEMM_1_T
                )
    return out


def density_map(
    points,
    shape,
    *,
    sigma: float = 4.0,
    adaptive: bool = False,
    beta: float = 0.3,
    k: int = 3,
    truncate: float = 4.0,
    fallback_sigma: float = 15.0,
) -> np.ndarray:
    """Count-preserving Gaussian density map.

    Each head inside the image adds a sampled Gaussian centred on its pixel centre, truncated at
    ``truncate * sigma`` (radius int(truncate * sigma + 0.5), as scipy.ndimage.gaussian_filter) and
    renormalised so that the part inside the image sums to 1 (heads on or near the border keep
    their full count). Hence ``density.sum()`` = number of points inside [0, W) x [0, H).

    Args:
      points: [N, 2] (x, y) pixels.
      shape: (H, W) of the map.
      sigma: fixed kernel width in pixels (ignored when ``adaptive``).
      adaptive: geometry-adaptive widths from ``adaptive_sigmas`` (k-NN over all given points).
      beta, k, fallback_sigma: see ``adaptive_sigmas``.
      truncate: kernel half-width in units of sigma.

    Returns:
      density: [H, W] float32, people per pixel.
    """
    points = _as_points(points)
    shape = _as_shape(shape)
    if adaptive:
        sigmas = adaptive_sigmas(points, beta=beta, k=k, fallback_sigma=fallback_sigma)
        inside = _inside(points, shape)
        rows, cols = _head_pixels(points, shape)
        return _splat_adaptive(rows, cols, sigmas[inside].astype(np.float64), shape, truncate)
    rows, cols = _head_pixels(points, shape)
    if rows.size == 0:
        return np.zeros(shape, np.float32)
    return _splat_fixed(rows, cols, shape, float(sigma), truncate)


def sum_pool(density, stride: int) -> np.ndarray:
    """Sum-pools the last two axes by ``stride`` (zero-padded at the bottom/right: count kept).

    Args:
      density: [..., H, W].
      stride: pooling factor s >= 1.

    Returns:
      [..., ceil(H / s), ceil(W / s)], same dtype; output pixel (r, c) covers input rows
      [s r, s r + s) and columns [s c, s c + s).
    """
    density = np.asarray(density)
    if density.ndim < 2:
        raise ValueError(f"density must be [..., H, W], got shape {density.shape}")
    s = int(stride)
    if s < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    h, w = density.shape[-2:]
    hp, wp = -(-h // s), -(-w // s)
    pad = [(0, 0)] * (density.ndim - 2) + [(0, hp * s - h), (0, wp * s - w)]
    padded = np.pad(density, pad)
    blocks = padded.reshape(*density.shape[:-2], hp, s, wp, s)
    return blocks.sum(axis=(-3, -1), dtype=density.dtype)


def distance_transform(points, shape) -> np.ndarray:
    """Exact Euclidean distance (px) from each pixel centre to the nearest head pixel centre.

    Head pixel = (floor(y), floor(x)) of a point inside the image. With no head inside the image
    every pixel is +inf (``distance_label_map`` maps it to the last class).

    Returns:
      [H, W] float32.
    """
    points = _as_points(points)
    shape = _as_shape(shape)
    rows, cols = _head_pixels(points, shape)
    if rows.size == 0:
        return np.full(shape, np.inf, np.float32)
    src = np.ones(shape, np.uint8)
    src[rows, cols] = 0  # cv2 measures the distance to the nearest zero pixel.
    return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def distance_label_map(points, shape, *, edges=DEFAULT_DISTANCE_EDGES) -> np.ndarray:
    """AutoScale distance-label map (Sec 3.5): class = (number of edges <= distance) - 1.

    Args:
      points: [N, 2] (x, y) pixels.
      shape: (H, W).
      edges: increasing lower class edges in px, starting at 0 (default: 11 classes).

    Returns:
      [H, W] uint8 classes in [0, len(edges) - 1]; 0 on head pixels.
    """
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or edges.size == 0 or edges[0] > 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be increasing and start at <= 0, got {edges}")
    if edges.size > 256:
        raise ValueError(f"at most 256 classes fit in uint8, got {edges.size}")
    dist = distance_transform(points, shape)
    if edges[0] == 0 and edges[-1] <= 255 and np.all(edges == np.round(edges)):
        # Integer edges: e <= d iff e <= floor(d), so a lookup on floor(min(d, last edge)) is exact
        # (and 3x faster than searchsorted). The cast truncates, i.e. floors d >= 0; inf -> last.
        last = int(edges[-1])
        lut = (np.searchsorted(edges, np.arange(last + 1), side="right") - 1).astype(np.uint8)
        return lut[np.minimum(dist, last).astype(np.uint8)]
    return (np.searchsorted(edges, dist, side="right") - 1).astype(np.uint8)


def local_minima(label_map, *, max_label: float | None = None) -> np.ndarray:
    """Centroids of the 4-connected regional minima of a label map (AutoScale head recovery).

    A regional minimum is a 4-connected plateau of equal values none of whose pixels has a lower
    4-neighbour. A map that is constant everywhere is one plateau (one minimum at its centre).

    Args:
      label_map: [H, W] integer or finite float labels.
      max_label: if given, plateaus with a value above it are dropped (e.g. to ignore a
        background plateau of the last class in a predicted map).

    Returns:
      [K, 2] float32 (x, y) plateau centroids of pixel centres (c + 0.5, r + 0.5), ordered by
      the first pixel of each plateau in raster order.
    """
    lab = np.asarray(label_map)
    if lab.ndim != 2:
        raise ValueError(f"label_map must be [H, W], got shape {lab.shape}")
    # Candidate = no lower 4-neighbour. Two adjacent candidates always have equal values, so the
    # components of the candidate mask lie inside plateaus; a plateau is a minimum iff its
    # component has no equal-valued non-candidate neighbour ("leak").
    cand = np.ones(lab.shape, bool)
    for a, b in _neighbour_pairs():
        cand[a] &= ~(lab[b] < lab[a])
        cand[b] &= ~(lab[a] < lab[b])
    leak = np.zeros(lab.shape, bool)
    for a, b in _neighbour_pairs():
        same = lab[a] == lab[b]
        leak[a] |= same & cand[a] & ~cand[b]
        leak[b] |= same & cand[b] & ~cand[a]
    comp, num = ndimage.label(cand, structure=_FOUR_CONNECTED)
    pix = np.flatnonzero(cand)  # statistics over candidate pixels only: usually few
    ids = comp.ravel()[pix]
    keep = np.bincount(ids, weights=leak.ravel()[pix], minlength=num + 1) == 0
    keep[0] = False
    if max_label is not None:
        value = np.zeros(num + 1, lab.dtype)
        value[ids] = lab.ravel()[pix]
        keep &= value <= max_label
    rr, cc = np.divmod(pix, lab.shape[1])
    count = np.bincount(ids, minlength=num + 1)
    sx = np.bincount(ids, weights=cc + 0.5, minlength=num + 1)
    sy = np.bincount(ids, weights=rr + 0.5, minlength=num + 1)
    idx = np.nonzero(keep)[0]
    return np.stack([sx[idx] / count[idx], sy[idx] / count[idx]], axis=1).astype(np.float32)


def _neighbour_pairs():
    """(a, b) index pairs selecting every vertical, then every horizontal, 4-neighbour pair."""
    return [
        ((slice(0, -1), slice(None)), (slice(1, None), slice(None))),
        ((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
    ]


def closeness(points) -> float:
    """Mean distance from each head to its nearest other head (AutoScale Eq. 1), in pixels.

    Returns 0.0 for fewer than two heads (no pair to measure; also the value for a single person).
    """
    points = _as_points(points)
    if points.shape[0] < 2:
        return 0.0
    dist, _ = cKDTree(points).query(points, k=2)
    return float(dist[:, 1].mean())
