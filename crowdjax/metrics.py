"""Counting metrics: MAE / RMSE / NAE (overall and per category) and GAME(L).

Definitions (docs/methods/README.md, all five papers):
  * MAE = mean_n |pred_n - gt_n|; RMSE = sqrt(mean_n (pred_n - gt_n)^2) (the papers' "MSE");
    NAE = mean over images with gt_n > 0 of |pred_n - gt_n| / gt_n. Images with gt_n = 0 are
    skipped for NAE only and counted in ``nae_skipped``; NAE is NaN if every image is skipped.
    The GT count is the number of annotated points, not the sum of a blurred map.
  * GAME(L) (ASNet Eq. 11, after Guerrero-Gomez-Olmedo et al.): per image, split the density grid
    into 2^L x 2^L cells and sum |predicted count - GT count| over the 4^L cells; mean over images.
    Cell edges are taken on the density grid (output stride s): with n = 2^L, rows
    [floor(k h / n), floor((k+1) h / n)) for k = 0..n-1 (same for columns), so cells differ by at
    most one output pixel and every pixel lies in exactly one cell. A GT point (x, y) belongs to the
    output pixel (floor(y / s), floor(x / s)) (clipped to the grid) and hence to that pixel's cell.
  * ROI (TRANCOS, UCSD, Mall): the density is multiplied by the ROI and GT points outside it are
    dropped. The ROI is given either on the density grid [h, w] (point kept when its output pixel
    is in the ROI), or on the image [H, W] with floor or ceil of H / s equal to h (and so for W):
    then a density pixel is weighted by the share of its s x s block's image pixels inside the ROI
    (a block reaching past the image border counts only its image pixels: its density is theirs;
    the image is cropped to s h x s w when h = floor(H / s)) and a point is kept when its image
    pixel (floor(y), floor(x)) is in the ROI.

Localization metrics live in ``crowdjax.localization`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from crowdjax.localization import (
    LocalizationMetrics,
    density_to_points,
    localization_metrics,
    match_points,
    peak_mask,
)

__all__ = [
    "CountingMetrics",
    "GameMetrics",
    "LocalizationMetrics",
    "counting_metrics",
    "density_to_points",
    "game",
    "game_cell_counts",
    "localization_metrics",
    "match_points",
    "peak_mask",
    "points_in_roi",
]


def _as_vector(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim > 1:
        raise ValueError(f"{name} must be a scalar or [B], got shape {values.shape}")
    return values.reshape(-1)


def counting_metrics(pred_counts, gt_counts) -> dict:
    """MAE, RMSE, NAE of per-image counts.

    Args:
      pred_counts: [N] predicted counts (sum of the density map).
      gt_counts: [N] GT counts (number of annotated points).

    Returns:
      {"mae", "rmse", "nae", "nae_skipped", "num_images"}; NaN values when N = 0.
    """
    pred = _as_vector(pred_counts, "pred_counts")
    gt = _as_vector(gt_counts, "gt_counts")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_counts {pred.shape} and gt_counts {gt.shape} differ")
    err = pred - gt
    nae_ok = gt > 0
    nan = float("nan")
    return {
        "mae": float(np.mean(np.abs(err))) if err.size else nan,
        "rmse": float(np.sqrt(np.mean(err**2))) if err.size else nan,
        "nae": float(np.mean(np.abs(err[nae_ok]) / gt[nae_ok])) if nae_ok.any() else nan,
        "nae_skipped": int(np.sum(~nae_ok)),
        "num_images": int(err.size),
    }


class CountingMetrics:
    """Accumulates per-image counts; ``result`` gives overall and per-category metrics.

    Categories: each image may carry labels in one or more groupings, e.g. NWPU scene level
    {"scene_level": 0..4} or JHU {"density": "low", "weather": "fog"}. ``result()["per_category"]``
    is {grouping: {label: counting_metrics of the images with that label}}.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.records: list[dict] = []

    def update(
        self,
        pred_counts,
        gt_counts,
        *,
        names: Sequence[str] | None = None,
        categories: Mapping[str, Sequence[Hashable]] | Sequence[Hashable] | None = None,
    ) -> None:
        """Adds a batch of B images (a scalar is one image).

        Args:
          pred_counts: [B] predicted counts.
          gt_counts: [B] GT counts.
          names: optional [B] image names.
          categories: optional {grouping: [B] labels}, or [B] labels (grouping "category").
        """
        pred = _as_vector(pred_counts, "pred_counts")
        gt = _as_vector(gt_counts, "gt_counts")
        if pred.shape != gt.shape:
            raise ValueError(f"pred_counts {pred.shape} and gt_counts {gt.shape} differ")
        if categories is not None and not isinstance(categories, Mapping):
            categories = {"category": categories}
        for group, labels in (categories or {}).items():
            if len(labels) != pred.size:
                raise ValueError(
                    f"categories[{group!r}] has {len(labels)} labels, need {pred.size}"
                )
        if names is not None and len(names) != pred.size:
            raise ValueError(f"{len(names)} names for {pred.size} images")
        for b in range(pred.size):
            self.records.append(
                {
                    "name": None if names is None else names[b],
                    "pred": float(pred[b]),
                    "gt": float(gt[b]),
                    "abs_error": float(abs(pred[b] - gt[b])),
                    "categories": {g: _plain(v[b]) for g, v in (categories or {}).items()},
                }
            )

    def result(self) -> dict:
        """Returns counting_metrics of all images, ``per_category`` and the ``records``."""
        pred = np.array([r["pred"] for r in self.records], np.float64)
        gt = np.array([r["gt"] for r in self.records], np.float64)
        out = counting_metrics(pred, gt)
        per_category: dict[str, dict] = {}
        for n, record in enumerate(self.records):
            for group, label in record["categories"].items():
                per_category.setdefault(group, {}).setdefault(label, []).append(n)
        out["per_category"] = {
            group: {label: counting_metrics(pred[idx], gt[idx]) for label, idx in labels.items()}
            for group, labels in per_category.items()
        }
        out["records"] = list(self.records)
        return out


def _plain(value):
    """numpy scalars -> Python scalars so labels group and serialise cleanly."""
    return value.item() if isinstance(value, np.generic) else value


def _cell_index(index: np.ndarray, size: int, parts: int) -> np.ndarray:
    """Cell of each grid index along one axis; edges floor(k * size / parts), k = 0..parts."""
    edges = (np.arange(parts + 1) * size) // parts
    # Last edge <= index: always a non-empty cell, even when size < parts leaves empty ones.
    return np.searchsorted(edges, index, side="right") - 1


def _roi_weights(roi: np.ndarray, shape: tuple[int, int], stride: int) -> tuple[np.ndarray, bool]:
    """(weights [h, w] on the density grid, whether roi is on the image grid)."""
    h, w = shape
    if roi.shape == (h, w):
        return roi.astype(np.float64), stride == 1
    fits = roi.ndim == 2 and all(
        n in (-(-big // stride), big // stride) for n, big in zip(shape, roi.shape, strict=True)
    )
    if not fits:
        raise ValueError(
            f"roi must be [h, w] = {shape} or the image [H, W] at stride {stride}, got {roi.shape}"
        )
    inside = np.zeros((h * stride, w * stride), np.float64)
    image = np.zeros((h * stride, w * stride), np.float64)
    crop_h, crop_w = min(roi.shape[0], h * stride), min(roi.shape[1], w * stride)
    inside[:crop_h, :crop_w] = roi[:crop_h, :crop_w] > 0
    image[:crop_h, :crop_w] = 1.0
    # Share of the block's image pixels in the ROI: a block that reaches past the image border
    # holds the density of its image pixels only (training targets are pooled the same way).
    num = inside.reshape(h, stride, w, stride).sum(axis=(1, 3))
    den = image.reshape(h, stride, w, stride).sum(axis=(1, 3))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0), True


def points_in_roi(points, roi) -> np.ndarray:
    """bool [P]: whether each (x, y) point's image pixel (floor(y), floor(x)), clipped to the
    image, is inside the image-grid ROI [H, W]."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    roi = np.asarray(roi)
    r = np.clip(np.floor(points[:, 1]), 0, roi.shape[0] - 1).astype(np.int64)
    c = np.clip(np.floor(points[:, 0]), 0, roi.shape[1] - 1).astype(np.int64)
    return roi[r, c] > 0


def game_cell_counts(
    density, gt_points, *, level: int, stride: int = 1, roi=None, point_mask=None
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and GT counts in each GAME(level) cell of one image.

    Args:
      density: [h, w] predicted density at output stride ``stride``.
      gt_points: [P, 2] annotated (x, y) image pixels.
      level: L >= 0; the grid has 2^L x 2^L cells.
      stride: output stride s of ``density`` relative to the image.
      roi: optional [h, w] or image [H, W] mask (see module docstring).
      point_mask: optional [P] bool, False for padded points.

    Returns:
      (pred_cells, gt_cells): float64 [2^L, 2^L] each, cell (i, j) = row part i, column part j.
    """
    density = np.asarray(density, np.float64)
    if density.ndim != 2:
        raise ValueError(f"density must be [h, w], got shape {density.shape}")
    if level < 0 or stride < 1:
        raise ValueError(f"need level >= 0 and stride >= 1, got level={level}, stride={stride}")
    points = np.asarray(gt_points, np.float64)
    points = np.zeros((0, 2)) if points.size == 0 else points
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"gt_points must be [P, 2] (x, y), got shape {points.shape}")
    if point_mask is not None:
        points = points[np.asarray(point_mask, bool).reshape(-1)]
    h, w = density.shape
    rows = np.clip(np.floor(points[:, 1] / stride), 0, h - 1).astype(np.int64)
    cols = np.clip(np.floor(points[:, 0] / stride), 0, w - 1).astype(np.int64)
    if roi is not None:
        weights, on_image = _roi_weights(np.asarray(roi), (h, w), stride)
        density = density * weights
        if on_image:
            inside = points_in_roi(points, roi)
        else:
            inside = weights[rows, cols] > 0
        rows, cols = rows[inside], cols[inside]
    n = 2**level
    pixel_cell = _cell_index(np.arange(h), h, n)[:, None] * n + _cell_index(np.arange(w), w, n)
    pred = np.bincount(pixel_cell.ravel(), weights=density.ravel(), minlength=n * n)
    point_cell = _cell_index(rows, h, n) * n + _cell_index(cols, w, n)
    gt = np.bincount(point_cell, minlength=n * n).astype(np.float64)
    return pred.reshape(n, n), gt.reshape(n, n)


def game(density, gt_points, *, level: int, stride: int = 1, roi=None, point_mask=None) -> float:
    """GAME(level) of one image: sum over cells of |pred - gt| (see ``game_cell_counts``)."""
    pred, gt = game_cell_counts(
        density, gt_points, level=level, stride=stride, roi=roi, point_mask=point_mask
    )
    return float(np.abs(pred - gt).sum())


class GameMetrics:
    """Mean GAME(L) over images for each L in ``levels`` (keys ``game0``..``game3``)."""

    def __init__(self, *, levels: Iterable[int] = (0, 1, 2, 3)):
        self.levels = tuple(int(lv) for lv in levels)
        self.reset()

    def reset(self) -> None:
        self.records: list[dict] = []

    def update(
        self, density, gt_points, *, stride: int = 1, roi=None, point_mask=None, name=None
    ) -> None:
        """Adds one image, density [h, w] and gt_points [P, 2], or a batch, density [B, h, w],
        gt_points [B, P, 2], point_mask [B, P], roi shared [., .] or per image [B, ., .], names [B].
        Other arguments as ``game``."""
        if np.ndim(density) == 3:
            for b in range(np.shape(density)[0]):
                self.update(
                    density[b],
                    gt_points[b],
                    stride=stride,
                    roi=roi if roi is None or np.ndim(roi) == 2 else roi[b],
                    point_mask=None if point_mask is None else point_mask[b],
                    name=None if name is None else name[b],
                )
            return
        record = {"name": name}
        for level in self.levels:
            record[f"game{level}"] = game(
                density, gt_points, level=level, stride=stride, roi=roi, point_mask=point_mask
            )
        self.records.append(record)

    def result(self) -> dict:
        out = {"num_images": len(self.records)}
        for level in self.levels:
            values = [r[f"game{level}"] for r in self.records]
            out[f"game{level}"] = float(np.mean(values)) if values else float("nan")
        out["records"] = list(self.records)
        return out
