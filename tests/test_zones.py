"""crowdjax.zones: per-zone counts against a brute-force loop over supersampled pixels, and the
zones file's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from crowdjax import zones
from crowdjax.prediction import Prediction

CONCAVE = [[1.3, 1.7], [17.6, 2.2], [9.1, 7.4], [18.2, 13.6], [2.7, 12.9], [6.4, 7.9]]


def _brute_force_zone_count(density, polygon, *, stride, scale, image, samples=32):
    """Sum over supersampled input pixels: each sample point inside the polygon (matplotlib's
    point-in-polygon test) adds its density cell's density times its share of that cell's
    samples inside the image (a plain loop over cells, samples at sub-pixel centres)."""
    h_img, w_img = image
    path = MplPath(np.asarray(polygon))
    offsets = (np.arange(samples) + 0.5) / samples
    ys = (np.arange(h_img)[:, None] + offsets[None]).ravel()
    xs = (np.arange(w_img)[:, None] + offsets[None]).ravel()
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.c_[grid_x.ravel(), grid_y.ravel()]
    inside = path.contains_points(points).reshape(grid_y.shape)
    cell = stride / scale
    rows = np.floor(ys / cell).astype(int)
    cols = np.floor(xs / cell).astype(int)
    total = 0.0
    for i in range(density.shape[0]):
        for j in range(density.shape[1]):
            in_cell = (rows == i)[:, None] & (cols == j)[None, :]
            n = in_cell.sum()
            if n:
                total += density[i, j] * (inside & in_cell).sum() / n
    return total


def _density_prediction(density, *, stride, image, scale=1.0):
    return Prediction(
        count=float(density.sum()),
        density=density,
        points=None,
        stride=stride,
        shape=image,
        scale=scale,
    )


def _zone_set(**polygons):
    return zones.parse_zones(
        {"zones": [{"name": k, "polygon": v} for k, v in polygons.items()]}, source="z.json"
    )


def test_a_rectangle_cutting_cells_is_weighted_by_area():
    # Stride 4 on an 8 x 8 image: 2 x 2 cells of 16 px. The rectangle x in [1.5, 5.5], y in
    # [0, 4] covers (4 - 1.5) * 4 / 16 = 0.625 of cell (0, 0) and 1.5 * 4 / 16 = 0.375 of (0, 1).
    density = np.array([[2.0, 4.0], [8.0, 16.0]], np.float32)
    zone_set = _zone_set(a=[[1.5, 0], [5.5, 0], [5.5, 4], [1.5, 4]])
    counts = zones.count_in_zones(_density_prediction(density, stride=4, image=(8, 8)), zone_set)
    assert counts["a"]["count"] == pytest.approx(0.625 * 2 + 0.375 * 4, abs=1e-12)


@pytest.mark.parametrize(
    "polygon,stride,scale,image",
    [
        (CONCAVE, 4, 1.0, (15, 20)),  # concave; border cells cover 3 and 0 px of 4
        ([[2.2, -3.0], [25.0, 4.1], [11.3, 19.7]], 4, 1.0, (15, 20)),  # reaches past the image
        (CONCAVE, 8, 2.0, (15, 20)),  # scaled up by 2: a stride-8 cell covers 4 input pixels
        ([[0.5, 0.5], [3.7, 0.9], [2.1, 2.8]], 1, 1.0, (4, 5)),  # stride 1: pixels cut by edges
    ],
)
def test_zone_count_matches_supersampled_pixels(polygon, stride, scale, image):
    rng = np.random.default_rng(0)
    cells = tuple(-(-round(s * scale) // stride) for s in image)
    density = rng.uniform(0.0, 1.0, cells).astype(np.float32)
    zone_set = _zone_set(z=polygon)
    prediction = _density_prediction(density, stride=stride, image=image, scale=scale)
    got = zones.count_in_zones(prediction, zone_set)["z"]["count"]
    want = _brute_force_zone_count(density, polygon, stride=stride, scale=scale, image=image)
    # 32 x 32 samples per pixel: the brute force is off by < ~1/32 of a pixel per cut edge.
    assert got == pytest.approx(want, rel=2e-3, abs=2e-3)


def test_zones_tiling_the_image_sum_to_the_count():
    # A concave zone and its complement within the image (the image with a concave notch).
    image = (15, 20)
    rng = np.random.default_rng(1)
    density = rng.uniform(0.0, 1.0, (4, 5)).astype(np.float32)
    whole = [[0, 0], [20, 0], [20, 15], [0, 15]]
    left = [[0, 0], [9.5, 0], [4.25, 7.5], [9.5, 15], [0, 15]]
    right = [[9.5, 0], [20, 0], [20, 15], [9.5, 15], [4.25, 7.5]]
    zone_set = _zone_set(whole=whole, left=left, right=right)
    counts = zones.count_in_zones(_density_prediction(density, stride=4, image=image), zone_set)
    total = float(density.astype(np.float64).sum())
    assert counts["whole"]["count"] == pytest.approx(total, rel=1e-12)
    assert counts["left"]["count"] + counts["right"]["count"] == pytest.approx(total, rel=1e-12)


def test_heads_are_counted_inside_the_polygon():
    points = np.array([[3.0, 3.0], [8.0, 4.0], [15.0, 5.0], [10.0, 12.0], [30.0, 3.0]])
    prediction = Prediction(
        count=5.0, density=None, points=points, stride=1, shape=(15, 20), scale=1.0
    )
    counts = zones.count_in_zones(prediction, _zone_set(c=CONCAVE))
    want = MplPath(np.asarray(CONCAVE)).contains_points(points).sum()
    assert counts["c"]["count"] == want == 3  # (8, 4) falls in the notch; (30, 3) is outside.


def test_per_square_metre_from_area_and_from_homography():
    density = np.ones((2, 2), np.float32)  # 4 people on an 8 x 8 image at stride 4.
    square = [[0, 0], [8, 0], [8, 8], [0, 8]]
    given = zones.parse_zones(
        {"zones": [{"name": "a", "polygon": square, "area_m2": 2.0}]}, source="z.json"
    )
    prediction = _density_prediction(density, stride=4, image=(8, 8))
    assert zones.count_in_zones(prediction, given)["a"] == {"count": 4.0, "per_m2": 2.0}
    # Half a metre per pixel in x, a quarter in y: the 8 x 8 px image is 4 m x 2 m = 8 m^2.
    mapped = zones.parse_zones(
        {
            "zones": [{"name": "a", "polygon": square}],
            "homography": [[0.5, 0, 0], [0, 0.25, 0], [0, 0, 1]],
        },
        source="z.json",
    )
    assert zones.count_in_zones(prediction, mapped)["a"]["per_m2"] == pytest.approx(0.5)


def test_a_zone_outside_the_image_is_named():
    zone_set = _zone_set(inside=CONCAVE, beyond=[[30, 0], [40, 0], [35, 9]])
    prediction = _density_prediction(np.ones((4, 5), np.float32), stride=4, image=(15, 20))
    with pytest.raises(zones.ZoneError, match=r"z\.json: zone 'beyond'.*outside the 15 x 20"):
        zones.count_in_zones(prediction, zone_set)


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"zones": [{"polygon": [[0, 0], [1, 0], [0, 1]]}]},
            r"zone '#1'.*\"name\" and \"polygon\"",
        ),
        ({"zones": [{"name": "gate", "polygon": [[0, 0], [1, 0]]}]}, r"'gate'.*at least 3"),
        (
            {"zones": [{"name": "bow", "polygon": [[0, 0], [4, 4], [4, 0], [0, 4]]}]},
            r"'bow'.*intersects itself",
        ),
        ({"zones": [{"name": "x", "polygon": [[0, 0], [1, "a"], [0, 1]]}]}, r"'x'.*polygon must"),
        ({"zones": [{"name": "x", "polygon": [[0, 0], [1, 0], [2, 0]]}]}, r"'x'.*zero area"),
        ({"zones": [{"name": "x", "polygon": [[0, 0], [1, 0], [0, 1]], "area_m2": -1}]}, "> 0"),
        ({"zone": []}, r"expected \{\"zones\""),
    ],
)
def test_bad_zone_files_are_named(tmp_path, data, message):
    path = tmp_path / "zones.json"
    path.write_text(json.dumps(data))
    with pytest.raises(zones.ZoneError, match=str(path).replace(".", r"\.") + ".*" + message):
        zones.load_zones(str(path))


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "zones.json"
    path.write_text("{zones: nope")
    with pytest.raises(zones.ZoneError, match="zones.json: not a JSON zones file"):
        zones.load_zones(str(path))
