"""Localization evaluation: density peaks, greedy point matching, precision / recall / F.

Protocol (UOT Sec. 4.3 / Table 5; AutoScale Sec. 4.1, Tables 5-7):
  * Peaks: 3x3 non-maximum suppression of the density map (a pixel is a peak when it equals the
    max of its 3x3 window, borders padded with -inf) and is strictly above a threshold (absolute,
    or relative to the map's max). Every pixel of a flat plateau of maxima is a peak. Output pixel
    (r, c) at stride s maps to the image point (s*c + s/2, s*r + s/2).
  * Matching: greedy one-to-one, by increasing Euclidean distance over all (pred, gt) pairs, each
    point used at most once; a pair may match only when its distance is <= the threshold (ties
    are broken by predicted index, then GT index). Since pairs are taken in order of distance,
    one matching at the largest threshold gives the matches at every smaller threshold (those at
    distance <= t): the sweep 1..100 px costs one matching per image.
  * TP = matched pairs, FP = predictions - TP, FN = GT points - TP. Counts are summed over the
    data set, then P_t = TP_t / #pred and R_t = TP_t / #gt (0 when the denominator is 0).
    Averaged over thresholds: AP = mean_t P_t, AR = mean_t R_t and F = 2 AP AR / (AP + AR), which
    reproduces UOT Table 5 (e.g. 71.41%, 78.41% -> 74.75%). ``mean_f`` (mean of F_t) is also given.
  * Per-point thresholds (AutoScale's "KNN distance" on SHA, NWPU's sigma_s / sigma_l per box):
    pass ``gt_sigmas`` with one threshold per GT point; a pair (i, j) may match when d <= sigma_j.

Points are (x, y) float pixels of the image, ``[N, 2]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

DEFAULT_THRESHOLDS = tuple(range(1, 101))  # px, UOT Table 5 / AutoScale Table 6
DEFAULT_SIGMAS = (4, 8, 16)  # px, AutoScale Table 5


def _as_points(points, mask=None, *, name: str = "points") -> np.ndarray:
    """Returns float64 [N, 2] of the valid points; empty input of any shape gives [0, 2]."""
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 2), np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be [N, 2] (x, y), got shape {points.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != points.shape[:1]:
            raise ValueError(f"{name} mask must be [{points.shape[0]}], got shape {mask.shape}")
        points = points[mask]
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} has non-finite coordinates (mask padded points instead)")
    return points


def peak_mask(density: jax.Array, *, threshold: float, relative: bool = False) -> jax.Array:
    """3x3 NMS peaks of density maps (jittable).

    Args:
      density: [H, W] or [B, H, W] density map(s).
      threshold: a peak must be strictly above this value, or above ``threshold * max(density)``
        (per map) when ``relative``.
      relative: interpret ``threshold`` relative to each map's maximum.

    Returns:
      bool, same shape as ``density``: True at peaks.
    """
    density = jnp.asarray(density)
    if not jnp.issubdtype(density.dtype, jnp.floating):
        density = density.astype(jnp.float32)  # the -inf window padding needs a float
    if density.ndim not in (2, 3):
        raise ValueError(f"density must be [H, W] or [B, H, W], got shape {density.shape}")
    window = (3, 3) if density.ndim == 2 else (1, 3, 3)
    # -inf padding: a border pixel only competes with its in-image neighbours.
    local_max = jax.lax.reduce_window(
        density, -jnp.inf, jax.lax.max, window, (1,) * density.ndim, "SAME"
    )
    level = jnp.asarray(threshold, density.dtype)
    if relative:
        level = level * jnp.max(density, axis=(-2, -1), keepdims=True)
    return (density >= local_max) & (density > level)


def density_to_points(
    density, *, threshold: float, relative: bool = False, stride: int = 1
) -> np.ndarray:
    """Peaks of one density map as image points.

    Args:
      density: [h, w] density at output stride ``stride``.
      threshold: see ``peak_mask``.
      relative: see ``peak_mask``.
      stride: output stride s; pixel (r, c) maps to (s*c + s/2, s*r + s/2).

    Returns:
      float64 [K, 2] (x, y) image pixels of the K peaks, in row-major order.
    """
    density = np.asarray(density, np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be [h, w], got shape {density.shape}")
    # Host-side numpy twin of ``peak_mask`` (keeps float64 and avoids a device round trip).
    local_max = ndimage.maximum_filter(density, size=3, mode="constant", cval=-np.inf)
    level = threshold * density.max(initial=-np.inf) if relative else threshold
    rows, cols = np.nonzero((density >= local_max) & (density > level))
    return np.stack([stride * cols + stride / 2, stride * rows + stride / 2], 1).astype(np.float64)


def _candidate_pairs(pred: np.ndarray, gt: np.ndarray, radius: float):
    """(i, j) index pairs that may be within ``radius`` (a superset, distances recomputed)."""
    if not np.isfinite(radius):
        i, j = np.meshgrid(np.arange(len(pred)), np.arange(len(gt)), indexing="ij")
        return i.ravel(), j.ravel()
    # Slightly larger radius: the exact test is redone with the distance formula we report.
    pairs = cKDTree(pred).sparse_distance_matrix(
        cKDTree(gt), radius * (1 + 1e-9) + 1e-9, output_type="ndarray"
    )
    return pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)


def _greedy_band(pred, gt, pred_free, gt_free, limit, low, high, out) -> None:
    """Greedy step over the pairs of still-free points with low < distance <= high (in place)."""
    pi, gi = np.flatnonzero(pred_free), np.flatnonzero(gt_free)
    i, j = _candidate_pairs(pred[pi], gt[gi], high)
    i, j = pi[i], gi[j]
    dist = np.hypot(pred[i, 0] - gt[j, 0], pred[i, 1] - gt[j, 1])
    keep = (dist > low) & (dist <= np.minimum(limit[j], high))
    i, j, dist = i[keep], j[keep], dist[keep]
    # By distance, then pred index, then gt index (two stable sorts: np.lexsort is ~3x slower).
    order = np.argsort(i * len(gt) + j, kind="stable")
    order = order[np.argsort(dist[order], kind="stable")]
    i, j, dist = i[order].tolist(), j[order].tolist(), dist[order].tolist()
    # Plain Python in the loop: it may run over millions of candidate pairs on dense crowds.
    pred_used, gt_used = set(), set()
    for a, b, d in zip(i, j, dist, strict=True):
        if a not in pred_used and b not in gt_used:
            pred_used.add(a)
            gt_used.add(b)
            out.append((a, b, d))
    pred_free[list(pred_used)] = False
    gt_free[list(gt_used)] = False


def match_points(pred_points, gt_points, *, max_distance) -> tuple[np.ndarray, ...]:
    """Greedy one-to-one matching by increasing distance, within a distance threshold.

    Pairs are visited in increasing distance in bands (0, 4], (4, 16], (16, 64], ... up to the
    largest threshold, each band only over the points still free: the same result as one sorted
    pass over all pairs, without listing the many long pairs of dense crowds.

    Args:
      pred_points: [P, 2] predicted (x, y) pixels.
      gt_points: [G, 2] ground-truth (x, y) pixels.
      max_distance: scalar threshold in px (``np.inf`` for none), or [G] one per GT point; pair
        (i, j) is allowed when ``||pred_i - gt_j||_2 <= max_distance_j``.

    Returns:
      (pred_index, gt_index, distance): [M] int64, int64, float64, the M matched pairs in the
      order they were taken (non-decreasing distance).
    """
    pred = _as_points(pred_points, name="pred_points")
    gt = _as_points(gt_points, name="gt_points")
    limit = np.asarray(max_distance, np.float64)
    if limit.shape not in ((), (len(gt),)):
        raise ValueError(f"max_distance must be a scalar or [{len(gt)}], got shape {limit.shape}")
    limit = np.broadcast_to(limit, (len(gt),))
    out: list[tuple[int, int, float]] = []
    radius = float(np.max(limit, initial=-1.0))
    if len(pred) and len(gt) and radius >= 0:
        pred_free, gt_free = np.ones(len(pred), bool), np.ones(len(gt), bool)
        edges = [e for e in (4.0, 16.0, 64.0, 256.0, 1024.0) if e < radius] + [radius]
        low = -1.0
        for high in edges:
            _greedy_band(pred, gt, pred_free, gt_free, limit, low, high, out)
            low = high
            if not pred_free.any() or not gt_free.any():
                break
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    i, j, d = zip(*out, strict=True)
    return np.array(i, np.int64), np.array(j, np.int64), np.array(d, np.float64)


def true_positives(pred_points, gt_points, *, thresholds: Sequence[float]) -> np.ndarray:
    """TP count at each scalar threshold from one greedy matching at the largest: [T] int64."""
    thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    if thresholds.size == 0:
        return np.zeros(0, np.int64)
    _, _, dist = match_points(pred_points, gt_points, max_distance=float(np.max(thresholds)))
    return np.searchsorted(np.sort(dist), thresholds, side="right").astype(np.int64)


def knn_sigma(gt_points, *, k: int = 3, default: float = np.inf) -> np.ndarray:
    """Per-point threshold: mean distance to the k nearest other GT points ([G] float64).

    Choice (AutoScale's "sigma = KNN distance" on SHA does not give k): k = 3 as in the
    geometry-adaptive kernels. Images with fewer than k + 1 points use the neighbours they have;
    a lone point gets ``default``.
    """
    gt = _as_points(gt_points, name="gt_points")
    if len(gt) < 2:
        return np.full(len(gt), default, np.float64)
    kk = min(k, len(gt) - 1)
    dist, _ = cKDTree(gt).query(gt, k=kk + 1)
    return np.asarray(dist, np.float64).reshape(len(gt), kk + 1)[:, 1:].mean(axis=1)


def _ratio(num, den) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _f_measure(p, r) -> np.ndarray:
    p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
    return _ratio(2 * p * r, p + r)


class LocalizationMetrics:
    """Accumulates localization TP / #pred / #gt over images; ``result`` gives P / R / F.

    Args:
      thresholds: distance thresholds (px) averaged into ``ap``, ``ar``, ``af``, ``mean_f``.
      sigmas: fixed thresholds (px) reported one by one as ``precision@4`` etc.
    """

    def __init__(
        self,
        *,
        thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
        sigmas: Iterable[float] = DEFAULT_SIGMAS,
    ):
        self.thresholds = np.asarray(list(thresholds), np.float64)
        self.sigmas = np.asarray(list(sigmas), np.float64)
        self.reset()

    def reset(self) -> None:
        self._tp = np.zeros(self.thresholds.size, np.int64)
        self._tp_sigma = np.zeros(self.sigmas.size, np.int64)
        self._tp_named: dict[str, int] = {}
        self._gt_named: dict[str, int] = {}
        self._pred_named: dict[str, int] = {}
        self.num_pred = self.num_gt = self.num_images = 0
        self.records: list[dict] = []

    def update(
        self,
        pred_points,
        gt_points,
        *,
        pred_mask=None,
        gt_mask=None,
        gt_sigmas: Mapping[str, np.ndarray] | None = None,
        name: str | None = None,
    ) -> None:
        """Adds one image.

        Args:
          pred_points: [P, 2] predicted (x, y) pixels (e.g. ``density_to_points`` or the head
            locations of a localization model).
          gt_points: [G, 2] annotated (x, y) pixels.
          pred_mask: optional [P] bool, False for padding.
          gt_mask: optional [G] bool, False for padding.
          gt_sigmas: optional {label: [G] per-point thresholds}, e.g. {"knn": knn_sigma(gt)},
            reported as ``precision@label`` etc. (thresholds of masked points are dropped too).
          name: optional image name for the per-image record.
        """
        pred = _as_points(pred_points, pred_mask, name="pred_points")
        gt = _as_points(gt_points, gt_mask, name="gt_points")
        all_t = np.concatenate([self.thresholds, self.sigmas])
        tp = true_positives(pred, gt, thresholds=all_t)
        self._tp += tp[: self.thresholds.size]
        self._tp_sigma += tp[self.thresholds.size :]
        record = {"name": name, "num_pred": len(pred), "num_gt": len(gt)}
        tp_sigma = tp[self.thresholds.size :]
        record.update({f"tp@{s:g}": int(v) for s, v in zip(self.sigmas, tp_sigma, strict=True)})
        for label, sigma in (gt_sigmas or {}).items():
            sigma = np.asarray(sigma, np.float64).reshape(-1)
            if gt_mask is not None and sigma.size == np.size(gt_mask):
                sigma = sigma[np.asarray(gt_mask, bool)]
            if sigma.size != len(gt):
                raise ValueError(f"gt_sigmas[{label!r}] must be [{len(gt)}], got {sigma.shape}")
            hits = len(match_points(pred, gt, max_distance=sigma)[0])
            self._tp_named[label] = self._tp_named.get(label, 0) + hits
            self._pred_named[label] = self._pred_named.get(label, 0) + len(pred)
            self._gt_named[label] = self._gt_named.get(label, 0) + len(gt)
            record[f"tp@{label}"] = hits
        self.num_pred += len(pred)
        self.num_gt += len(gt)
        self.num_images += 1
        self.records.append(record)

    def result(self) -> dict:
        """Returns ap, ar, af, mean_f (over thresholds) and precision/recall/f @ each sigma."""
        p = _ratio(self._tp, self.num_pred)
        r = _ratio(self._tp, self.num_gt)
        ap = float(p.mean()) if p.size else float("nan")
        ar = float(r.mean()) if r.size else float("nan")
        out = {
            "ap": ap,
            "ar": ar,
            "af": float(_f_measure(ap, ar)),
            "mean_f": float(_f_measure(p, r).mean()) if p.size else float("nan"),
            "num_images": self.num_images,
            "num_pred": self.num_pred,
            "num_gt": self.num_gt,
        }
        ps, rs = _ratio(self._tp_sigma, self.num_pred), _ratio(self._tp_sigma, self.num_gt)
        for s, pv, rv in zip(self.sigmas, ps, rs, strict=True):
            out.update({f"precision@{s:g}": float(pv), f"recall@{s:g}": float(rv)})
            out[f"f@{s:g}"] = float(_f_measure(pv, rv))
        for label, tp in self._tp_named.items():
            pv, rv = _ratio(tp, self._pred_named[label]), _ratio(tp, self._gt_named[label])
            out.update({f"precision@{label}": float(pv), f"recall@{label}": float(rv)})
            out[f"f@{label}"] = float(_f_measure(pv, rv))
        out["records"] = list(self.records)
        return out


def localization_metrics(
    pred_points: Sequence,
    gt_points: Sequence,
    *,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    sigmas: Iterable[float] = DEFAULT_SIGMAS,
    gt_sigmas: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> dict:
    """Data-set localization metrics from per-image point lists (see ``LocalizationMetrics``).

    Args:
      pred_points: N arrays [P_n, 2] of predicted (x, y) pixels.
      gt_points: N arrays [G_n, 2] of annotated (x, y) pixels.
      thresholds: distance thresholds averaged into ap / ar / af.
      sigmas: fixed thresholds reported one by one.
      gt_sigmas: optional N mappings {label: [G_n] per-point thresholds}.
    """
    if len(pred_points) != len(gt_points):
        raise ValueError(f"{len(pred_points)} predicted images but {len(gt_points)} GT images")
    metrics = LocalizationMetrics(thresholds=thresholds, sigmas=sigmas)
    for n, (pred, gt) in enumerate(zip(pred_points, gt_points, strict=True)):
        metrics.update(pred, gt, gt_sigmas=None if gt_sigmas is None else gt_sigmas[n])
    return metrics.result()
