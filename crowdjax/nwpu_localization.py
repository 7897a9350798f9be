"""NWPU-Crowd's localization protocol: per-head thresholds from the head boxes, maximum matching.

Wang et al., "NWPU-Crowd: a large-scale benchmark for crowd counting and localization", TPAMI
2021, Sec. 5.2 (and its official evaluation, `eval_loc.py`, which AutoScale Table 7 also uses):
  * Each annotated head j has a box of width w_j and height h_j; its two thresholds are
    sigma_s = min(w_j, h_j) / 2 (strict) and sigma_l = sqrt(w_j^2 + h_j^2) / 2 (loose).
  * A prediction i may match head j when ||p_i - g_j||_2 <= sigma_j. The matching is one-to-one
    and of maximum cardinality over those allowed pairs (the official code runs a Hungarian
    augmenting-path search on the boolean match matrix; distances only decide which pairs are
    allowed, so it is not the greedy nearest-first matching of `crowdjax.localization`).
  * TP = matched pairs, FP = predictions - TP, FN = heads - TP, summed over the images; then
    P = TP / (TP + FP), R = TP / (TP + FN), F = 2 P R / (P + R) at each of sigma_s and sigma_l.

Points are (x, y) pixels, boxes (x1, y1, x2, y2) pixels, of the same image grid.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

THRESHOLDS = ("sigma_s", "sigma_l")


def box_sigmas(boxes) -> dict[str, np.ndarray]:
    """sigma_s = min(w, h) / 2 and sigma_l = sqrt(w^2 + h^2) / 2 of each box ([G] float64 each).

    Args:
      boxes: [G, 4] (x1, y1, x2, y2) head boxes.

    Raises:
      ValueError: a wrong shape, a non-finite coordinate or a box with x2 < x1 or y2 < y1.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return {name: np.zeros(0, np.float64) for name in THRESHOLDS}
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [G, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("boxes has non-finite coordinates (an image stored without its boxes?)")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if np.any(w < 0) or np.any(h < 0):
        raise ValueError(f"boxes with x2 < x1 or y2 < y1: rows {np.flatnonzero((w < 0) | (h < 0))}")
    return {"sigma_s": np.minimum(w, h) / 2, "sigma_l": np.hypot(w, h) / 2}


def matched_count(pred_points, gt_points, sigma) -> int:
    """Size of a maximum one-to-one matching of predictions to heads within per-head sigma.

    Args:
      pred_points: [P, 2] predicted (x, y).
      gt_points: [G, 2] annotated (x, y).
      sigma: [G] threshold of each head; pair (i, j) is allowed when d(i, j) <= sigma_j.
    """
    pred = np.asarray(pred_points, np.float64).reshape(-1, 2)
    gt = np.asarray(gt_points, np.float64).reshape(-1, 2)
    sigma = np.asarray(sigma, np.float64).reshape(-1)
    if sigma.shape != (len(gt),):
        raise ValueError(f"sigma must be [{len(gt)}], got shape {sigma.shape}")
    if len(pred) == 0 or len(gt) == 0:
        return 0
    # Candidate pairs within the largest sigma (slightly larger: the exact test follows).
    radius = float(sigma.max()) * (1 + 1e-9) + 1e-9
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(gt), radius, output_type="ndarray")
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    dist = np.hypot(pred[i, 0] - gt[j, 0], pred[i, 1] - gt[j, 1])
    keep = dist <= sigma[j]
    if not keep.any():
        return 0
    graph = sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.int8), (i[keep], j[keep])), shape=(len(pred), len(gt))
    )
    match = csgraph.maximum_bipartite_matching(graph, perm_type="column")
    return int((match >= 0).sum())


class NwpuLocalizationMetrics:
    """Accumulates TP / #pred / #gt at sigma_s and sigma_l over images; ``result`` gives P/R/F."""

    def __init__(self):
        self.tp = dict.fromkeys(THRESHOLDS, 0)
        self.num_pred = self.num_gt = self.num_images = 0

    def update(self, pred_points, gt_points, boxes) -> dict:
        """Adds one image; returns its {"tp@sigma_s", "tp@sigma_l", "num_pred", "num_gt"}.

        Args:
          pred_points: [P, 2] predicted (x, y).
          gt_points: [G, 2] annotated (x, y).
          boxes: [G, 4] the heads' boxes (x1, y1, x2, y2), in the order of ``gt_points``.
        """
        pred = np.asarray(pred_points, np.float64).reshape(-1, 2)
        gt = np.asarray(gt_points, np.float64).reshape(-1, 2)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) != len(gt):
            raise ValueError(f"{len(gt)} heads but {len(boxes)} boxes")
        sigmas = box_sigmas(boxes)
        record = {"num_pred": len(pred), "num_gt": len(gt)}
        for name in THRESHOLDS:
            tp = matched_count(pred, gt, sigmas[name])
            self.tp[name] += tp
            record[f"tp@{name}"] = tp
        self.num_pred += len(pred)
        self.num_gt += len(gt)
        self.num_images += 1
        return record

    def result(self) -> dict:
        """precision / recall / f at sigma_s and sigma_l (keys e.g. "precision@sigma_s")."""
        out = {"num_images": self.num_images, "num_pred": self.num_pred, "num_gt": self.num_gt}
        for name in THRESHOLDS:
            tp = self.tp[name]
            p = tp / self.num_pred if self.num_pred else 0.0
            r = tp / self.num_gt if self.num_gt else 0.0
            out[f"precision@{name}"] = p
            out[f"recall@{name}"] = r
            out[f"f@{name}"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
        return out
