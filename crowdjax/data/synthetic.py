"""Procedurally rendered crowds: the scenes of crowdjax's embedded data set `synthetic_crowd`.

A scene is a textured background (street paving, stadium stands or a night square), distractor
shapes that are not people, and people drawn back to front: shaded shoulders under a head disc
(a face with a hair cap or a cap, or the back of a head). Perspective: the head radius grows
linearly from the top image row to the bottom one (a ground plane seen by a tilted camera) and
people lower in the image, nearer the camera, occlude those behind them. Every annotated point is
the centre of a rendered head, strictly inside the image; heads keep a minimum distance, so no
other shape covers a head centre (occlusion only hides shoulders and head rims).

Numpy and cv2 only, deterministic from a seed (`scene_rng`). Preview a grid of samples per style:

  python -m crowdjax.data.synthetic --preview /tmp/synthetic.png [--points]
"""

from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np

from crowdjax.data import synthetic_layers as layers

Color = tuple[int, int, int]

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SceneStyle:
    """Appearance and crowd statistics of one synthetic domain.

    Attributes:
      background: texture generator, one of `layers.BACKGROUNDS` ("street", "stadium", "night").
      layout: "clusters" (Gaussian groups plus scattered people) or "rows" (stadium seats).
      head_radius: (top, bottom) head radius in px on the first and the last image row.
      size_jitter: relative spread of head radii at the same depth (adults and children).
      count_range: (min, max) people in a non-empty image, drawn log-uniformly.
      empty_fraction: probability of an image with nobody in it.
      clusters: (min, max) number of groups ("clusters") or of filled stand sections ("rows").
      scatter_fraction: share of the people placed uniformly instead of in a group.
      min_separation: minimum distance between head centres, in radii of the larger head.
      back_view_fraction: share of heads seen from behind (a hair disc instead of a face).
      hat_fraction: share of faces wearing a cap in a clothing colour.
      distractors: (min, max) number of distractor shapes per image.
      head_like_distractors: share of distractors that are discs in skin or hair colours.
      clothing: clothing palette (RGB).
      ground: background base palette (RGB): paving, seats or night ground.
      brightness: global illumination factor.
      noise_std: sensor noise, grey levels.
      blur_sigma: optical blur, px.
    """

    background: str = "street"
    layout: str = "clusters"
    head_radius: tuple[float, float] = (3.0, 8.5)
    size_jitter: float = 0.12
    count_range: tuple[int, int] = (1, 250)
    empty_fraction: float = 0.06
    clusters: tuple[int, int] = (1, 5)
    scatter_fraction: float = 0.25
    min_separation: float = 1.35
    back_view_fraction: float = 0.25
    hat_fraction: float = 0.15
    distractors: tuple[int, int] = (0, 6)
    head_like_distractors: float = 0.3
    clothing: tuple[Color, ...] = layers.CASUAL_CLOTHING
    ground: tuple[Color, ...] = ((150, 150, 150), (175, 165, 150), (120, 118, 115))
    brightness: float = 1.0
    noise_std: float = 3.0
    blur_sigma: float = 0.5

    def __post_init__(self):
        if self.background not in layers.BACKGROUNDS:
            raise ValueError(f"background must be one of {sorted(layers.BACKGROUNDS)}")
        if self.layout not in ("clusters", "rows"):
            raise ValueError(f"layout must be 'clusters' or 'rows', got {self.layout!r}")
        if not 1 <= self.count_range[0] <= self.count_range[1]:
            raise ValueError(f"count_range must satisfy 1 <= min <= max, got {self.count_range}")
        if min(self.head_radius) < 2.0:
            raise ValueError(f"head radii below 2 px are not visible heads: {self.head_radius}")


STYLES: dict[str, SceneStyle] = {
    # Sparse to fairly dense groups on daylight paving; a few distractors.
    "street": SceneStyle(),
    # Dense seated crowds on coloured stands, small heads, team-coloured clothing.
    "stadium": SceneStyle(
        background="stadium",
        layout="rows",
        head_radius=(2.4, 5.5),
        size_jitter=0.08,
        count_range=(20, 700),
        empty_fraction=0.04,
        clusters=(1, 4),
        scatter_fraction=0.1,
        back_view_fraction=0.1,
        hat_fraction=0.2,
        distractors=(0, 4),
        clothing=layers.TEAM_CLOTHING,
        ground=((40, 70, 160), (170, 40, 40), (220, 200, 60), (60, 130, 70), (90, 90, 100)),
        noise_std=3.0,
    ),
    # Dim square lit by lamps: low contrast, dark clothing, more noise and head-like lamps.
    "night": SceneStyle(
        background="night",
        head_radius=(3.0, 8.0),
        count_range=(1, 300),
        empty_fraction=0.06,
        back_view_fraction=0.3,
        distractors=(1, 6),
        head_like_distractors=0.4,
        clothing=layers.DARK_CLOTHING,
        ground=((80, 80, 100), (95, 88, 76), (70, 78, 92)),
        brightness=0.85,
        noise_std=6.0,
        blur_sigma=0.7,
    ),
}


@dataclasses.dataclass(frozen=True)
class Scene:
    """One rendered image and its annotation.

    Attributes:
      image: [H, W, 3] uint8 RGB.
      points: [N, 2] float32 (x, y) head centres in px, inside (0, W) x (0, H).
      radii: [N] float32 head radii in px.
      head_colors: [N, 3] float32 RGB of each head centre after illumination (before blur and
        noise).
    """

    image: np.ndarray
    points: np.ndarray
    radii: np.ndarray
    head_colors: np.ndarray


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent generator of image `index` of `split`: any image can be rendered alone."""
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def sample_count(style: SceneStyle, rng: np.random.Generator) -> int:
    """Target number of people: 0 with `empty_fraction`, else log-uniform over `count_range`."""
    if rng.random() < style.empty_fraction:
        return 0
    lo, hi = style.count_range
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi + 0.5)))))


def render_scene(
    style: SceneStyle,
    *,
    rng: np.random.Generator,
    size: tuple[int, int] = (256, 256),
    count: int | None = None,
) -> Scene:
    """Renders one crowd image.

    Args:
      style: the domain's appearance and statistics.
      rng: source of all randomness (e.g. `scene_rng(seed, split, index)`).
      size: (H, W) in px.
      count: number of people to place (default: `sample_count`). Fewer are placed when the free
        space runs out; `points` holds the ones rendered.

    Returns:
      The image with its head points, radii and head colours.
    """
    h, w = size
    r_top, r_bottom = style.head_radius

    def radius_at(y):
        return r_top + (r_bottom - r_top) * np.asarray(y, np.float64) / h

    bg = layers.BACKGROUNDS[style.background](rng, style, h, w, radius_at)
    canvas = bg.canvas
    layers.draw_distractors(canvas, rng, style, bg.top, radius_at)
    n = sample_count(style, rng) if count is None else int(count)
    if style.layout == "rows":
        points, radii = layers.place_rows(rng, style, n, h, w, bg.rows, radius_at)
    else:
        points, radii = layers.place_clusters(rng, style, n, h, w, bg.top, radius_at)
    order = np.argsort(points[:, 1], kind="stable")  # back to front: lower people occlude
    points, radii = points[order], radii[order]
    cloth, faces, caps, front = layers.person_colors(rng, style, len(points))
    for i, ((x, y), r) in enumerate(zip(points.tolist(), radii.tolist(), strict=True)):
        layers.draw_person(canvas, x, y, r, cloth[i], faces[i], caps[i], front[i])
    canvas *= bg.light[..., None]
    rows, cols = np.floor(points[:, 1]).astype(int), np.floor(points[:, 0]).astype(int)
    head_colors = np.clip(faces * bg.light[rows, cols][:, None], 0, 255)
    if style.blur_sigma > 0:
        canvas = cv2.GaussianBlur(canvas, (0, 0), style.blur_sigma)
    canvas += style.noise_std * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Scene(image, points.astype(np.float32), radii.astype(np.float32), head_colors)


def preview(
    path: str,
    *,
    styles: dict[str, SceneStyle] | None = None,
    per_style: int = 6,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    show_points: bool = False,
) -> np.ndarray:
    """Writes a PNG grid, one row of `per_style` test-split samples per style, counts printed.

    Returns:
      The grid, [rows * H, per_style * W, 3] uint8 RGB.
    """
    styles = STYLES if styles is None else styles
    grid_rows = []
    for name, style in styles.items():
        tiles = []
        for i in range(per_style):
            scene = render_scene(style, rng=scene_rng(seed, "test", i), size=size)
            tile = scene.image.copy()
            if show_points:
                for x, y in scene.points:
                    cv2.circle(tile, (int(x), int(y)), 1, (255, 0, 0), -1)
            label = f"{name} n={len(scene.points)}"
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            tiles.append(np.pad(tile, ((1, 1), (1, 1), (0, 0))))
        grid_rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(grid_rows, axis=0)
    if not cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Preview synthetic crowd scenes.")
    parser.add_argument("--preview", required=True, help="output PNG path")
    parser.add_argument("--per_style", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", action="store_true", help="mark the annotated head points")
    args = parser.parse_args(argv)
    preview(args.preview, per_style=args.per_style, seed=args.seed, show_points=args.points)
    print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
