"""jnp online GT vs the numpy label generators of crowdjax.data.labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.data import labels, online_gt

SHAPE = (37, 45)


def _point_sets(seed):
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    return [
        np.zeros((0, 2)),
        np.array([[0.0, 0.0]]),  # corner
        np.array([[w - 1e-3, h - 1e-3], [w - 1e-3, 0.2], [3.0, 3.0], [3.5, 3.9]]),  # border, twin
        np.array([[-1.0, 5.0], [10.0, h + 0.5], [20.0, 20.0]]),  # two outside: ignored
        rng.uniform(0, 1, (60, 2)) * [w, h],
    ]


def _pad(sets, p=64, seed=0):
    rng = np.random.default_rng(seed)
    pts = np.full((len(sets), p, 2), -5.0, np.float32)
    mask = np.zeros((len(sets), p), bool)
    for b, s in enumerate(sets):
        idx = rng.permutation(p)[: len(s)]
        pts[b, idx] = s
        mask[b, idx] = True
    pts[0, 0] = [10.0, 10.0]  # a masked-out point inside the map: must be ignored
    return pts, mask


@pytest.mark.parametrize("sigma", [1.0, 4.0, 8.0])
def test_density_map_matches_labels(sigma):
    sets = _point_sets(0)
    pts, mask = _pad(sets)
    got = jax.jit(lambda p, m: online_gt.density_map(p, m, SHAPE, sigma=sigma))(pts, mask)
    assert got.shape == (len(sets), *SHAPE)
    for g, s in zip(np.asarray(got), sets, strict=True):
        want = labels.density_map(s, SHAPE, sigma=sigma)
        np.testing.assert_allclose(g, want, atol=1e-6, rtol=1e-4)
        inside = np.sum(
            (s[:, 0] >= 0) & (s[:, 0] < SHAPE[1]) & (s[:, 1] >= 0) & (s[:, 1] < SHAPE[0])
        )
        np.testing.assert_allclose(g.sum(), inside, rtol=1e-5, atol=1e-6)


def test_distance_label_map_matches_labels_exactly():
    sets = _point_sets(1)
    pts, mask = _pad(sets)
    for chunk in (7, 64):
        got = online_gt.distance_label_map(jnp.asarray(pts), jnp.asarray(mask), SHAPE, chunk=chunk)
        for g, s in zip(np.asarray(got), sets, strict=True):
            np.testing.assert_array_equal(g, labels.distance_label_map(s, SHAPE))
    np.testing.assert_array_equal(got[0], 10)  # no head: the last class
    edges = (0, 2, 5)
    g = online_gt.distance_label_map(jnp.asarray(pts), jnp.asarray(mask), SHAPE, edges=edges)
    np.testing.assert_array_equal(g[4], labels.distance_label_map(sets[4], SHAPE, edges=edges))
    with pytest.raises(ValueError, match="edges"):
        online_gt.distance_label_map(jnp.asarray(pts), jnp.asarray(mask), SHAPE, edges=(1, 0))
    with pytest.raises(ValueError, match="point_mask"):
        online_gt.density_map(jnp.asarray(pts), jnp.asarray(mask[:, 1:]), SHAPE)


@pytest.mark.parametrize("stride", [2, 8])
def test_pooled_density_map_is_sum_pool_of_labels(stride):
    shape = (40, 48)
    rng = np.random.default_rng(3)
    sets = [
        np.zeros((0, 2)),
        np.array([[47.9, 39.9], [0.0, 0.0]]),
        rng.uniform(0, 1, (50, 2)) * [48, 40],
    ]
    pts, mask = _pad(sets)
    got = online_gt.density_map(pts, mask, shape, sigma=3.0, stride=stride)
    assert got.shape == (3, 40 // stride, 48 // stride)
    for g, s in zip(np.asarray(got), sets, strict=True):
        want = labels.sum_pool(labels.density_map(s, shape, sigma=3.0), stride)
        np.testing.assert_allclose(g, want, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="multiple of the stride"):
        online_gt.density_map(pts, mask, (41, 48), stride=8)


def test_pooled_density_map_with_extent_keeps_every_head():
    # The extent path (L2SM's rescaled regions): pooled inside [0, extent), mass 1 per head.
    shape = (48, 64)
    pts = np.array([[[0.0, 0.0], [30.9, 22.9], [12.0, 7.5]], [[63.5, 47.5], [5.0, 5.0], [1, 1]]])
    mask = np.array([[True, True, True], [True, True, False]])
    extent = np.array([[24, 32], [48, 64]])
    got = np.asarray(online_gt.density_map(pts, mask, shape, sigma=2.5, extent=extent, stride=8))
    for b in range(2):
        eh, ew = extent[b]
        want = np.zeros((6, 8))
        dens = labels.density_map(pts[b][mask[b]], (eh, ew), sigma=2.5)
        want[: eh // 8, : ew // 8] = labels.sum_pool(dens, 8)
        np.testing.assert_allclose(got[b], want, atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(got.sum((1, 2)), [3.0, 2.0], rtol=1e-5)
