"""Synthetic crowd renderer: determinism, annotation, perspective, styles and learnability."""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np
import pytest

from crowdjax.data import synthetic

STYLES = sorted(synthetic.STYLES)
SIZE = (256, 256)


@functools.cache
def scenes(style: str, split: str, n: int, seed: int = 0) -> tuple[synthetic.Scene, ...]:
    """Rendered scenes shared between tests (rendering is the slow part)."""
    st = synthetic.STYLES[style]
    return tuple(
        synthetic.render_scene(st, rng=synthetic.scene_rng(seed, split, i), size=SIZE)
        for i in range(n)
    )


def clean(style: str) -> synthetic.SceneStyle:
    """The style without blur and noise: rendered colours are exact away from shape edges."""
    return dataclasses.replace(synthetic.STYLES[style], blur_sigma=0.0, noise_std=0.0)


def head_pixels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels containing the points."""
    return np.floor(points[:, 1]).astype(int), np.floor(points[:, 0]).astype(int)


@pytest.mark.parametrize("style", STYLES)
def test_deterministic_from_seed(style):
    st = synthetic.STYLES[style]
    a = synthetic.render_scene(st, rng=synthetic.scene_rng(3, "train", 7), size=(128, 160))
    b = synthetic.render_scene(st, rng=synthetic.scene_rng(3, "train", 7), size=(128, 160))
    assert a.image.shape == (128, 160, 3) and a.image.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.radii, b.radii)
    for other in (synthetic.scene_rng(4, "train", 7), synthetic.scene_rng(3, "test", 7)):
        c = synthetic.render_scene(st, rng=other, size=(128, 160))
        assert np.abs(c.image.astype(int) - a.image).mean() > 5


@pytest.mark.parametrize("style", STYLES)
def test_points_are_visible_head_centres(style):
    st = clean(style)
    checked = 0
    for i in range(12):
        scene = synthetic.render_scene(st, rng=synthetic.scene_rng(1, "train", i), size=SIZE)
        # The same seed with nobody placed: same background and distractors, no people.
        empty = synthetic.render_scene(
            st, rng=synthetic.scene_rng(1, "train", i), size=SIZE, count=0
        )
        pts = scene.points
        if len(pts) == 0:
            continue
        assert pts.dtype == np.float32 and pts.shape == (len(scene.radii), 2)
        assert np.all(pts > 0) and np.all(pts[:, 0] < SIZE[1]) and np.all(pts[:, 1] < SIZE[0])
        rows, cols = head_pixels(pts)
        pixel = scene.image[rows, cols].astype(np.float64)
        # Nothing covers a head centre: the pixel is exactly the head colour (up to rounding) ...
        np.testing.assert_array_less(np.abs(pixel - scene.head_colors), 1.0)
        # ... and it differs from the background at that place (people are visible).
        diff = np.abs(pixel - empty.image[rows, cols]).sum(axis=1)
        assert np.mean(diff > 25) >= 0.95, (i, np.sort(diff)[:5])
        checked += len(pts)
    assert checked > 100


@pytest.mark.parametrize("style", STYLES)
def test_blur_and_noise_keep_head_colours(style):
    devs = []
    for scene in scenes(style, "train", 30):
        rows, cols = head_pixels(scene.points)
        devs.append(np.abs(scene.image[rows, cols].astype(float) - scene.head_colors).max(axis=1))
    devs = np.concatenate(devs)
    assert np.median(devs) < 12 and np.percentile(devs, 95) < 35


@pytest.mark.parametrize("style", STYLES)
def test_minimum_head_separation(style):
    st = synthetic.STYLES[style]
    for scene in scenes(style, "train", 30):
        if len(scene.points) < 2:
            continue
        d = np.hypot(*(scene.points[:, None] - scene.points[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        larger = np.maximum(scene.radii[:, None], scene.radii[None])
        # Row layouts space seats by 2.4 radii (jitter 0.3): wider than min_separation too.
        assert np.all(d >= min(st.min_separation, 1.3) * larger - 1e-4)


@pytest.mark.parametrize("style", STYLES)
def test_counts_range_and_empty_images(style):
    st = synthetic.STYLES[style]
    counts = np.array([len(s.points) for s in scenes(style, "train", 120)])
    assert counts.min() == 0  # some empty images
    assert counts.max() <= st.count_range[1]
    assert counts.max() >= 0.6 * st.count_range[1]
    assert counts.std() >= 0.8 * counts.mean()  # widely spread counts
    # sample_count: empties at about empty_fraction, the rest inside count_range.
    rng = np.random.default_rng(0)
    sampled = np.array([synthetic.sample_count(st, rng) for _ in range(4000)])
    assert abs(np.mean(sampled == 0) - st.empty_fraction) < 0.02
    nonzero = sampled[sampled > 0]
    assert nonzero.min() >= st.count_range[0] and nonzero.max() <= st.count_range[1]
    # Log-uniform: the median of the non-empty counts is near the geometric mean of the range.
    lo, hi = st.count_range
    assert 0.7 < np.median(nonzero) / np.sqrt(lo * (hi + 0.5)) < 1.4


@pytest.mark.parametrize("style", STYLES)
def test_requested_count_is_rendered(style):
    st = synthetic.STYLES[style]
    for count in (0, 1, 37):
        scene = synthetic.render_scene(st, rng=np.random.default_rng(count), count=count)
        assert len(scene.points) == len(scene.radii) == len(scene.head_colors) == count


@pytest.mark.parametrize("style", STYLES)
def test_perspective(style):
    st = clean(style)
    top, bottom = [], []
    for i in range(8):
        scene = synthetic.render_scene(st, rng=synthetic.scene_rng(2, "train", i), count=40)
        # Visible head size measured on the image: the flat-coloured region around each centre.
        for (x, y), colour in zip(scene.points, scene.head_colors, strict=True):
            mask = np.zeros((SIZE[0] + 2, SIZE[1] + 2), np.uint8)
            flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
            image = np.ascontiguousarray(scene.image)
            area = cv2.floodFill(image, mask, (int(x), int(y)), 0, (1,) * 3, (1,) * 3, flags)[0]
            assert np.allclose(image[int(y), int(x)], np.round(colour), atol=1)
            if y < SIZE[0] / 3:
                top.append(area)
            elif y >= 2 * SIZE[0] / 3:
                bottom.append(area)
    assert len(top) > 20 and len(bottom) > 20
    # Radius grows ~2x from the top third to the bottom third: area about 3-4x.
    assert np.mean(bottom) > 2.0 * np.mean(top)
    radii = np.concatenate([s.radii for s in scenes(style, "train", 30)])
    ys = np.concatenate([s.points[:, 1] for s in scenes(style, "train", 30)])
    assert radii[ys >= 2 * SIZE[0] / 3].mean() > 1.5 * radii[ys < SIZE[0] / 3].mean()
    assert radii.min() >= 2.0


def _stats(style):
    images = np.stack([s.image for s in scenes(style, "train", 30)])
    hsv = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2HSV) for im in images]).astype(float)
    radii = np.concatenate([s.radii for s in scenes(style, "train", 30)])
    return hsv[..., 1].mean(), hsv[..., 2].mean(), radii.mean()


def test_styles_differ():
    sat, val, radius = {}, {}, {}
    for style in STYLES:
        sat[style], val[style], radius[style] = _stats(style)
    assert val["night"] < val["street"] - 40  # dark
    assert sat["stadium"] > sat["street"] + 40  # coloured stands
    assert radius["stadium"] < 0.75 * radius["street"]  # far, small heads
    assert (
        synthetic.STYLES["stadium"].count_range[1] > 2 * synthetic.STYLES["street"].count_range[1]
    )


def _features(image):
    """Two image statistics: mean gradient magnitude and the share of strong edges."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return [mag.mean(), (mag > 60).mean(), 1.0]


@pytest.mark.parametrize("style", STYLES)
def test_demands_counting(style):
    train, test = scenes(style, "train", 120), scenes(style, "test", 60)
    y_train = np.array([len(s.points) for s in train], float)
    y_test = np.array([len(s.points) for s in test], float)
    # Predicting the training mean is far off: counts are spread over orders of magnitude.
    mean_mae = np.abs(y_test - y_train.mean()).mean()
    assert mean_mae > 0.6 * y_test.mean() and mean_mae > 0.5 * y_test.std()
    # A linear regression on two edge statistics (a classical counter) beats it clearly: the
    # images carry the count.
    x_train = np.array([_features(s.image) for s in train])
    w, *_ = np.linalg.lstsq(x_train, y_train, rcond=None)
    linear_mae = np.abs(np.array([_features(s.image) for s in test]) @ w - y_test).mean()
    assert linear_mae < 0.6 * mean_mae, (linear_mae, mean_mae)


def test_style_validation():
    with pytest.raises(ValueError, match="background"):
        synthetic.SceneStyle(background="beach")
    with pytest.raises(ValueError, match="layout"):
        synthetic.SceneStyle(layout="grid")
    with pytest.raises(ValueError, match="count_range"):
        synthetic.SceneStyle(count_range=(0, 10))
    with pytest.raises(ValueError, match="radii"):
        synthetic.SceneStyle(head_radius=(1.0, 5.0))
    with pytest.raises(KeyError):
        synthetic.scene_rng(0, "dev", 0)


def test_preview(tmp_path):
    path = str(tmp_path / "preview.png")
    grid = synthetic.preview(path, per_style=2, size=(64, 80), show_points=True)
    assert grid.shape == (len(STYLES) * 66, 2 * 82, 3)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), grid)
