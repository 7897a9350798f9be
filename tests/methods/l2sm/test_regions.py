"""K x K regions, their densities and the density groups of L2SM against explicit numpy loops."""

import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.methods.l2sm import regions


def _boxes_loop(h, w, k):
    """Pixel boxes (r0, r1, c0, c1) of the K x K regions, by the module doc's rule."""
    n_r, n_c = -(-h // 8), -(-w // 8)
    out = []
    for i in range(k):
        for j in range(k):
            r0, r1 = 8 * (i * n_r // k), min(8 * ((i + 1) * n_r // k), h)
            c0, c1 = 8 * (j * n_c // k), min(8 * ((j + 1) * n_c // k), w)
            out.append((r0, max(r0, r1), c0, max(c0, c1)))
    return out


@pytest.mark.parametrize(("h", "w", "k"), [(64, 64, 4), (57, 83, 4), (100, 37, 3), (16, 40, 4)])
def test_boxes_area_and_sums_match_loops(h, w, k):
    rng = np.random.default_rng(h * w)
    density = np.zeros((1, 112, 96), np.float32)
    density[0, :h, :w] = rng.random((h, w))
    boxes, area, valid = regions.region_boxes(jnp.array([[h, w]]), k)
    sums = np.asarray(regions.region_sums(jnp.asarray(density), boxes, 1))[0]
    for idx, (r0, r1, c0, c1) in enumerate(_boxes_loop(h, w, k)):
        assert area[0, idx] == (r1 - r0) * (c1 - c0)
        assert bool(valid[0, idx]) == ((r1 - r0) * (c1 - c0) > 0)
        np.testing.assert_allclose(sums[idx], density[0, r0:r1, c0:c1].sum(), rtol=1e-5, atol=1e-5)
    # Every real pixel is in exactly one region.
    assert float(area.sum()) == h * w
    # At stride 4, the sum-pooled map gives the same sums.
    pooled = density[0, :112, :96].reshape(28, 4, 24, 4).sum((1, 3))[None]
    sums4 = np.asarray(regions.region_sums(jnp.asarray(pooled), boxes, 4))[0]
    np.testing.assert_allclose(sums4, sums, rtol=1e-5, atol=1e-4)


def test_average_density_unit_and_invalid_regions():
    boxes, area, valid = regions.region_boxes(jnp.array([[16, 64]]), 4)
    assert int(valid.sum()) == 8  # 2 cell rows: the regions of rows 0 and 2 are empty
    sums = jnp.ones(area.shape)
    avg = np.asarray(regions.average_density(sums, area))
    np.testing.assert_allclose(avg[np.asarray(valid)], 64.0 / 128.0)  # 1 person per 8 x 16 px
    assert np.all(avg[~np.asarray(valid)] == 0)


def _thresholds_bruteforce(values, g):
    a = sorted(float(v) for v in values)
    return [a[(i * len(a)) // g - 1] for i in range(1, g)]


@pytest.mark.parametrize("g", [1, 3, 5])
def test_thresholds_groups_and_centers(g):
    rng = np.random.default_rng(g)
    values = np.concatenate([np.zeros(37), rng.exponential(1.0, 163)]).astype(np.float32)
    t = regions.grouping_thresholds(values, g)
    np.testing.assert_allclose(t, _thresholds_bruteforce(values, g), rtol=1e-6)
    for c in range(1, g + 1):
        group = np.asarray(
            regions.assign_groups(
                jnp.asarray(values)[None], jnp.ones((1, values.size), bool), jnp.asarray(t), c
            )
        )[0]
        want = [sum(tt < v for tt in t) - (g - c) for v in values]
        want = [x if x >= 0 else -1 for x in want]
        np.testing.assert_array_equal(group, want)
        if c < g:  # empty regions are never dense unless every group is
            assert np.all(group[values == 0] == -1)
    means = regions.group_means(values, t)
    member = np.sum(t[None, :] < values[:, None], axis=1)
    for i in range(g):
        if np.any(member == i):
            np.testing.assert_allclose(means[i], values[member == i].mean(), rtol=1e-5)
    # Equal sizes where there are no ties: 200 distinct values cut into g groups.
    distinct = rng.permutation(200).astype(np.float32)
    member = np.sum(regions.grouping_thresholds(distinct, g)[None, :] < distinct[:, None], axis=1)
    sizes = np.bincount(member, minlength=g)
    np.testing.assert_array_equal(sizes, [(i + 1) * 200 // g - i * 200 // g for i in range(g)])


def test_bad_grouping_arguments():
    with pytest.raises(ValueError, match="cannot make"):
        regions.grouping_thresholds(np.ones(3), 5)
    with pytest.raises(ValueError, match="centers"):
        regions.assign_groups(jnp.ones((1, 4)), jnp.ones((1, 4), bool), jnp.zeros(4), 6)
    with pytest.raises(ValueError, match="stride"):
        regions.region_sums(jnp.ones((1, 8, 8)), jnp.zeros((1, 1, 4), jnp.int32), 3)
