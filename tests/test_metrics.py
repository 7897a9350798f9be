"""Tests of crowdjax.metrics: MAE / RMSE / NAE, per-category breakdowns and GAME(L)."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax import metrics

# ----------------------------------------------------------------------------- counting


def test_counting_metrics_hand_example():
    # pred 10, 0, 5 vs gt 8, 0, 10: errors 2, 0, -5.
    # MAE = 7/3; RMSE = sqrt((4 + 0 + 25) / 3); NAE skips gt = 0: (2/8 + 5/10) / 2 = 0.375.
    out = metrics.counting_metrics([10.0, 0.0, 5.0], [8, 0, 10])
    assert out["mae"] == pytest.approx(7 / 3)
    assert out["rmse"] == pytest.approx(math.sqrt(29 / 3))
    assert out["nae"] == pytest.approx(0.375)
    assert (out["nae_skipped"], out["num_images"]) == (1, 3)


def test_counting_metrics_edge_cases():
    out = metrics.counting_metrics([1.0, 2.0], [0, 0])  # every image skipped for NAE
    assert math.isnan(out["nae"]) and out["nae_skipped"] == 2
    assert out["mae"] == 1.5 and out["rmse"] == pytest.approx(math.sqrt(2.5))
    out = metrics.counting_metrics([], [])
    assert out["num_images"] == 0 and math.isnan(out["mae"]) and math.isnan(out["rmse"])
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        metrics.counting_metrics([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        metrics.counting_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


def test_counting_accumulator_matches_one_shot_and_categories():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 100, 10)
    gt = rng.integers(0, 100, 10).astype(float)
    gt[3] = 0
    level = np.array(["low", "high"] * 5)
    weather = np.arange(10) % 3
    m = metrics.CountingMetrics()
    for start in (0, 4, 7):  # uneven batches; jax arrays accepted
        sl = slice(start, {0: 4, 4: 7, 7: 10}[start])
        m.update(
            jnp.asarray(pred[sl]),
            gt[sl],
            names=[f"img{n}" for n in range(10)][sl],
            categories={"level": level[sl], "weather": weather[sl]},
        )
    out = m.result()
    ref = metrics.counting_metrics(pred, gt)
    for key in ("mae", "rmse", "nae", "nae_skipped", "num_images"):
        assert out[key] == pytest.approx(ref[key], rel=1e-6)  # jnp input is float32
    for name, labels in (("level", level), ("weather", weather)):
        assert set(out["per_category"][name]) == {v.item() for v in np.unique(labels)}
        for label, got in out["per_category"][name].items():
            sel = labels == label
            want = metrics.counting_metrics(pred[sel], gt[sel])
            assert got["mae"] == pytest.approx(want["mae"], rel=1e-6)
            assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-6)
            assert got["num_images"] == sel.sum()
    assert out["records"][5]["name"] == "img5"
    assert out["records"][5]["categories"] == {"level": "high", "weather": 2}
    assert out["records"][5]["abs_error"] == pytest.approx(abs(pred[5] - gt[5]), rel=1e-6)


def test_counting_accumulator_hand_categories_and_errors():
    # Scene A: errors 1 and 3 -> MAE 2, RMSE sqrt(5), NAE (1/2 + 3/6)/2 = 0.5. Scene B: gt 0.
    m = metrics.CountingMetrics()
    m.update([3.0, 9.0, 1.0], [2, 6, 0], categories=["A", "A", "B"])
    m.update(4.0, 4)  # a scalar is one image without category
    out = m.result()
    a = out["per_category"]["category"]["A"]
    assert (a["mae"], a["rmse"], a["nae"]) == (2.0, pytest.approx(math.sqrt(5)), 0.5)
    b = out["per_category"]["category"]["B"]
    assert b["mae"] == 1.0 and math.isnan(b["nae"]) and b["nae_skipped"] == 1
    assert out["num_images"] == 4 and out["mae"] == pytest.approx(5 / 4)
    with pytest.raises(ValueError, match="labels"):
        m.update([1.0, 2.0], [1, 2], categories=["A"])
    with pytest.raises(ValueError, match="names"):
        m.update([1.0, 2.0], [1, 2], names=["x"])
    m.reset()
    assert m.result()["num_images"] == 0


# ----------------------------------------------------------------------------- GAME


def loop_cells(density, points, level, stride, roi_img=None, roi_grid=None):
    """Explicit per-cell loops (reference): slices of the density and tests on each point."""
    h, w = density.shape
    n = 2**level
    density = density.astype(float).copy()
    if roi_grid is not None:
        density *= roi_grid
    if roi_img is not None:
        big_h, big_w = roi_img.shape
        for r, c in itertools.product(range(h), range(w)):
            inside = pixels = 0
            for rr in range(r * stride, (r + 1) * stride):
                for cc in range(c * stride, (c + 1) * stride):
                    if rr < big_h and cc < big_w:  # an image pixel of the block
                        pixels += 1
                        inside += bool(roi_img[rr, cc])
            density[r, c] *= inside / pixels if pixels else 0.0
    pred = np.zeros((n, n))
    gt = np.zeros((n, n))
    for a, b in itertools.product(range(n), range(n)):
        r0, r1 = a * h // n, (a + 1) * h // n
        c0, c1 = b * w // n, (b + 1) * w // n
        pred[a, b] = density[r0:r1, c0:c1].sum()
        for x, y in points:
            row = min(max(int(math.floor(y / stride)), 0), h - 1)
            col = min(max(int(math.floor(x / stride)), 0), w - 1)
            if roi_grid is not None and not roi_grid[row, col]:
                continue
            if roi_img is not None:
                ri = min(max(int(math.floor(y)), 0), roi_img.shape[0] - 1)
                ci = min(max(int(math.floor(x)), 0), roi_img.shape[1] - 1)
                if not roi_img[ri, ci]:
                    continue
            if r0 <= row < r1 and c0 <= col < c1:
                gt[a, b] += 1
    return pred, gt


def test_game_hand_example():
    # 4x4 density, stride 1: 1.0 per pixel in the left half (cols 0-1), 0 on the right.
    # GT pixels (row, col): (0, 0), (0, 1), (1, 1) in the top-left quadrant and (3, 3).
    # GAME0 = |8 - 4| = 4.
    # GAME1 cells (pred, gt): TL (4, 3), TR (0, 0), BL (4, 0), BR (0, 1) -> 1 + 0 + 4 + 1 = 6.
    # GAME2 (one pixel per cell): 3 left pixels with a point give 0, the other 5 left pixels 1
    #   each, pixel (3, 3) gives 1 -> 6.
    # GAME3 on a 4x4 grid: edges floor(k * 4 / 8) = 0,0,1,1,2,2,3,3,4 -> half the cells empty,
    #   the rest are single pixels -> same as GAME2 = 6.
    density = np.zeros((4, 4))
    density[:, :2] = 1.0
    points = np.array([[0.5, 0.5], [1.2, 0.1], [1.9, 1.9], [3.5, 3.5]])
    assert metrics.game(density, points, level=0) == pytest.approx(4.0)
    assert metrics.game(density, points, level=1) == pytest.approx(6.0)
    assert metrics.game(density, points, level=2) == pytest.approx(6.0)
    assert metrics.game(density, points, level=3) == pytest.approx(6.0)
    # The same image at stride 2 (2x2 sum-pooled density): pred [[4, 0], [4, 0]], the points'
    #   output pixels (floor(y/2), floor(x/2)) = (0,0) x3 and (1,1) -> gt [[3, 0], [0, 1]] -> 6.
    # An 8x8 image at stride 4 with the points scaled by 2 gives the same cells -> 6.
    small = density.reshape(2, 2, 2, 2).sum((1, 3))
    assert metrics.game(small, points, level=1, stride=2) == pytest.approx(6.0)
    assert metrics.game(small, points * 2, level=1, stride=4) == pytest.approx(6.0)


def test_game0_is_count_error_and_matches_loops():
    rng = np.random.default_rng(0)
    for trial in range(30):
        stride = [1, 2, 4, 8][trial % 4]
        h, w = rng.integers(1, 13, size=2)  # includes h, w < 2^L (empty cells)
        density = rng.uniform(0, 1, (h, w))
        n_pts = rng.integers(0, 12)
        # Points anywhere in the image, on borders, and a little outside (clipped to the grid).
        points = rng.uniform(-1, [w * stride + 1, h * stride + 1], (n_pts, 2))
        if n_pts:
            points[0] = [0.0, h * stride - 1e-9]
        err = metrics.game(density, points, level=0, stride=stride)
        assert err == pytest.approx(abs(density.sum() - n_pts))
        for level in (1, 2, 3):
            pred, gt = metrics.game_cell_counts(density, points, level=level, stride=stride)
            ref_pred, ref_gt = loop_cells(density, points, level, stride)
            np.testing.assert_allclose(pred, ref_pred, atol=1e-12)
            np.testing.assert_array_equal(gt, ref_gt)
            assert gt.sum() == n_pts and pred.sum() == pytest.approx(density.sum())


def test_game_equal_blocks_reference():
    # When h, w divide by 2^L the cells are equal blocks: reshape-sum and point / block size.
    rng = np.random.default_rng(1)
    stride, h, w = 4, 16, 24
    density = rng.uniform(0, 1, (h, w))
    points = rng.uniform(0, [w * stride, h * stride], (50, 2))
    for level in range(4):
        n = 2**level
        pred = density.reshape(n, h // n, n, w // n).sum((1, 3))
        gt = np.zeros((n, n))
        for x, y in points:
            gt[int(y // (stride * h / n)), int(x // (stride * w / n))] += 1
        want = np.abs(pred - gt).sum()
        assert metrics.game(density, points, level=level, stride=stride) == pytest.approx(want)


def test_roi_blocks_past_the_image_border_count_their_image_pixels():
    # A 6 x 6 image at stride 4: a 2 x 2 density grid whose blocks hold 16, 8, 8 and 4 image
    # pixels. A full ROI weighs every output pixel 1 (its density is that of its image pixels):
    # count 4, not (16 + 8 + 8 + 4) / 16 = 2.25.
    full = np.ones((6, 6))
    assert metrics.game(np.ones((2, 2)), [], level=0, stride=4, roi=full) == 4.0
    # The ROI's left 3 columns: top left 12 of 16, top right 0 of 8, bottom left 6 of 8 (rows
    # 4-5, columns 0-3), bottom right 0 of 4: 0.75 + 0 + 0.75 + 0 = 1.5.
    half = np.zeros((6, 6))
    half[:, :3] = 1
    assert metrics.game(np.ones((2, 2)), [], level=0, stride=4, roi=half) == 1.5


def test_game_roi_hand_and_loops():
    # ROI on the density grid: right column excluded. Density 1 everywhere (2x2), stride 1.
    # Points (0.5, 0.5) inside, (1.5, 0.5) outside. GAME0 = |2 - 1| = 1 (not |4 - 2| = 2).
    roi = np.array([[1, 0], [1, 0]])
    assert metrics.game(np.ones((2, 2)), [[0.5, 0.5], [1.5, 0.5]], level=0, roi=roi) == 1.0
    rng = np.random.default_rng(2)
    for trial in range(12):
        stride = [2, 4, 8][trial % 3]
        h, w = rng.integers(2, 8, size=2)
        density = rng.uniform(0, 1, (h, w))
        points = rng.uniform(0, [w * stride, h * stride], (15, 2))
        roi_grid = rng.uniform(size=(h, w)) > 0.4
        # Image-size ROI: H with ceil(H / s) = h (smaller) or floor(H / s) = h (larger).
        big_h = h * stride - (trial % 2) * (stride - 1) + (trial % 3 == 0)
        big_w = w * stride - 1 if trial % 2 else w * stride
        big_h = min(max(big_h, (h - 1) * stride + 1), h * stride + stride - 1)
        roi_img = rng.uniform(size=(big_h, big_w)) > 0.3
        for level in (0, 1, 2):
            got = metrics.game_cell_counts(
                density, points, level=level, stride=stride, roi=roi_grid
            )
            ref = loop_cells(density, points, level, stride, roi_grid=roi_grid)
            np.testing.assert_allclose(got[0], ref[0], atol=1e-12)
            np.testing.assert_array_equal(got[1], ref[1])
            got = metrics.game_cell_counts(density, points, level=level, stride=stride, roi=roi_img)
            ref = loop_cells(density, points, level, stride, roi_img=roi_img)
            np.testing.assert_allclose(got[0], ref[0], atol=1e-12)
            np.testing.assert_array_equal(got[1], ref[1])
    with pytest.raises(ValueError, match="roi"):
        metrics.game(np.ones((4, 4)), [], level=1, stride=4, roi=np.ones((7, 16)))


def test_game_edge_cases_and_accumulator():
    # No GT points: GAME(L) = total predicted mass for every L (density >= 0).
    density = np.full((5, 3), 0.2)
    for level in range(4):
        assert metrics.game(density, np.zeros((0, 2)), level=level) == pytest.approx(3.0)
    # Padded points with a mask are ignored.
    pts = np.array([[1.0, 1.0], [-50.0, -50.0]])
    assert metrics.game(density, pts, level=1, point_mask=[True, False]) == pytest.approx(
        metrics.game(density, pts[:1], level=1)
    )
    with pytest.raises(ValueError, match=r"\(2, 5, 3\)"):
        metrics.game(np.zeros((2, 5, 3)), pts, level=0)
    # Accumulator: mean over images, batched update equals image-by-image.
    rng = np.random.default_rng(3)
    dens = rng.uniform(0, 1, (3, 6, 6))
    pts = rng.uniform(0, 24, (3, 5, 2))
    mask = rng.uniform(size=(3, 5)) > 0.3
    batch = metrics.GameMetrics()
    batch.update(dens, pts, stride=4, point_mask=mask, name=["a", "b", "c"])
    single = metrics.GameMetrics(levels=(0, 3))
    for b in range(3):
        single.update(dens[b], pts[b][mask[b]], stride=4)
    out, ref = batch.result(), single.result()
    assert out["num_images"] == 3 and out["records"][1]["name"] == "b"
    for level in (0, 3):
        want = np.mean(
            [metrics.game(dens[b], pts[b][mask[b]], level=level, stride=4) for b in range(3)]
        )
        assert out[f"game{level}"] == pytest.approx(want)
        assert ref[f"game{level}"] == pytest.approx(want)
    assert set(ref) == {"num_images", "game0", "game3", "records"}
    assert math.isnan(metrics.GameMetrics().result()["game0"])
