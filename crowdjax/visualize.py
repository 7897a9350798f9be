"""Density maps and localizations as PNG images, for people to look at.

Each PNG shows the image with ground-truth heads (green dots) and predicted peaks (red crosses)
beside the predicted density as a heat map over the image, with both counts written on top.
"""

from __future__ import annotations

import io as io_lib
import os

import cv2
import numpy as np

from crowdjax import localization, storage, zones
from crowdjax.data import io

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def denormalize(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalised float [H, W, 3] -> RGB uint8."""
    return np.clip((image * IMAGENET_STD + IMAGENET_MEAN) * 255.0, 0, 255).astype(np.uint8)


def density_overlay(image: np.ndarray, density: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """RGB uint8 [H, W, 3] with the density (any stride) as a JET heat map on top."""
    h, w = image.shape[:2]
    d = cv2.resize(density.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    d = d / d.max() if d.max() > 0 else d
    heat = cv2.cvtColor(
        cv2.applyColorMap((d * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    return (image * (1 - alpha) + heat * alpha).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, *, color, marker: str = "dot") -> np.ndarray:
    out = image.copy()
    r = max(1, round(min(image.shape[:2]) / 200))
    for x, y in np.asarray(points).reshape(-1, 2):
        p = (int(x), int(y))
        if marker == "dot":
            cv2.circle(out, p, r, color, -1, cv2.LINE_AA)
        else:
            cv2.drawMarker(out, p, color, cv2.MARKER_CROSS, 3 * r + 2, max(1, r // 2))
    return out


def _caption(image: np.ndarray, text: str, *, scale: float = 1.0) -> np.ndarray:
    bar = np.full((round(22 * scale), image.shape[1], 3), 255, np.uint8)
    origin = (round(4 * scale), round(16 * scale))
    thickness = max(1, round(scale))
    font = 0.5 * scale
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)[0][0]
    room = image.shape[1] - 2 * origin[0]
    if width > room > 0:  # A long caption (an interval) shrinks to fit a small picture.
        font *= room / width
    cv2.putText(
        bar, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thickness, cv2.LINE_AA
    )
    return np.concatenate([bar, image], 0)


def render_record(record: dict, *, pred_points: np.ndarray | None = None) -> np.ndarray:
    """Side-by-side panel (RGB uint8) for one evaluated image."""
    image = record["image"]
    left = draw_points(image, record["points"], color=(0, 255, 0))
    if pred_points is not None:
        left = draw_points(left, pred_points, color=(255, 0, 0), marker="cross")
    right = density_overlay(image, record["density"])
    left = _caption(left, f"{record['image_id']}  GT {record['gt_count']:.0f}")
    right = _caption(right, f"predicted {record['pred_count']:.1f}")
    return np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], 1)


def save_density_overlays(records: list[dict], outdir: str, *, peak_threshold: float) -> list[str]:
    """Writes one PNG per record; returns the paths.

    A record holds image (RGB uint8), density [h, w] at its `stride`, points (GT), image_id,
    gt_count, pred_count and, for localization methods, pred_points; without pred_points the
    predicted heads drawn are the 3x3 peaks of the density above `peak_threshold`.
    """
    storage.makedirs(outdir)
    paths = []
    for record in records:
        peaks = record.get("pred_points")  # A localization method's own heads.
        if peaks is None:
            peaks = localization.density_to_points(
                record["density"], threshold=peak_threshold, stride=record["stride"]
            )
        panel = render_record(record, pred_points=peaks)
        name = os.path.splitext(os.path.basename(record["image_id"]))[0] + ".png"
        path = os.path.join(outdir, name)
        storage.path(path).write_bytes(io.encode_image(panel, ext=".png"))
        paths.append(path)
    return paths


def prediction_overlay(
    image: np.ndarray, prediction, *, max_side: int = 1600, zone_set=None
) -> np.ndarray:
    """RGB uint8 picture of one prediction (`crowdjax.prediction.Prediction`): the density as a
    heat map over the image (density methods) or the heads as red dots (localization methods),
    the count (and its interval, with test-time variants) written above it, and the zones of
    `zone_set` (outline, name, count); scaled down so that its long side is at most
    `max_side`."""
    h, w = image.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if factor < 1 else image
    if prediction.points is not None:
        picture = draw_points(small, prediction.points * factor, color=(255, 0, 0))
        label = f"{prediction.count:.0f} people"
    else:
        picture = density_overlay(small, prediction.density)
        label = f"{prediction.count:.1f} people"
    if prediction.interval is not None:
        low, high = prediction.interval
        label += f" ({low:.1f} to {high:.1f}{', disagree' if prediction.disagree else ''})"
    if zone_set is not None:
        picture = zones.draw_zones(picture, zone_set, prediction.zones or {}, factor=factor)
    return _caption(picture, label, scale=max(1.0, picture.shape[1] / 640))


def count_plot(path: str, frames, counts, *, fps: float, title: str) -> bool:
    """Count per frame of a video as a PNG line plot (matplotlib, the `plots` extra). Returns
    False, writing nothing, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.plot(np.asarray(frames, float) / fps, counts, lw=1.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("predicted count")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    picture = io_lib.BytesIO()
    fig.savefig(picture, format="png")
    plt.close(fig)
    storage.path(path).write_bytes(picture.getvalue())
    return True
