"""Tests of crowdjax.data.labels against brute-force numpy / scipy references."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from crowdjax.data import labels

# ---------------------------------------------------------------- brute-force references


def _pixels_inside(points, shape):
    """Head pixels (rows, cols) of the points inside [0, W) x [0, H), by a plain loop."""
    h, w = shape
    rows, cols = [], []
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        if 0 <= x < w and 0 <= y < h:
            rows.append(int(np.floor(y)))
            cols.append(int(np.floor(x)))
    return rows, cols


def _ref_density(points, shape, sigmas, truncate=4.0):
    """Each head's truncated 2D Gaussian evaluated on the whole grid, renormalised in the image."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros(shape, np.float64)
    for (x, y), s in zip(np.asarray(points, np.float64).reshape(-1, 2), sigmas, strict=True):
        if not (0 <= x < w and 0 <= y < h):
            continue  # outside heads contribute nothing
        r, c = int(np.floor(y)), int(np.floor(x))
        radius = int(truncate * s + 0.5)
        if radius == 0:
            out[r, c] += 1.0
            continue
        g = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2.0 * s * s))
        g[(np.abs(yy - r) > radius) | (np.abs(xx - c) > radius)] = 0.0  # square support (scipy)
        out += g / g.sum()
    return out


def _ref_sigmas(points, beta, k, fallback):
    points = np.asarray(points, np.float64)
    n = len(points)
    if n == 1:
        return np.array([fallback])
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    out = []
    for i in range(n):
        others = np.sort(np.delete(d[i], i))
        out.append(beta * others[: min(k, n - 1)].mean())
    return np.array(out)


def _ref_distance(points, shape):
    h, w = shape
    rows, cols = _pixels_inside(points, shape)
    if not rows:
        return np.full(shape, np.inf)
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = np.min([(yy - r) ** 2 + (xx - c) ** 2 for r, c in zip(rows, cols, strict=True)], axis=0)
    return np.sqrt(d2)


def _ref_minima(lab):
    """Per value: scipy 4-connected components; keep those with no lower 4-neighbour."""
    lab = np.asarray(lab)
    h, w = lab.shape
    found = []
    for v in np.unique(lab):
        comp, n = ndimage.label(lab == v)  # default structure = 4-connectivity in 2D
        for i in range(1, n + 1):
            rr, cc = np.nonzero(comp == i)
            lower = False
            for r, c in zip(rr, cc, strict=True):
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    r2, c2 = r + dr, c + dc
                    if 0 <= r2 < h and 0 <= c2 < w and lab[r2, c2] < v:
                        lower = True
            if not lower:
                found.append((cc.mean() + 0.5, rr.mean() + 0.5))
    return np.array(sorted(found)).reshape(-1, 2)


def _sorted_rows(a):
    a = np.asarray(a, np.float64).reshape(-1, 2)
    return a[np.lexsort((a[:, 1], a[:, 0]))]


def _random_points(rng, n, shape, margin=0.0):
    h, w = shape
    return np.stack(
        [rng.uniform(-margin, w + margin, n), rng.uniform(-margin, h + margin, n)], axis=1
    )


# ---------------------------------------------------------------- density maps


@pytest.mark.parametrize("sigma", [0.1, 1.0, 2.5, 4.0, 8.0])
def test_fixed_density_matches_brute_force(sigma):
    rng = np.random.default_rng(0)
    shape = (37, 53)
    pts = _random_points(rng, 30, shape, margin=5.0)  # some outside, some near the border
    pts = np.concatenate([pts, [[0, 0], [52.99, 36.99], [0, 20], [26.5, 0.0]]])
    got = labels.density_map(pts, shape, sigma=sigma)
    ref = _ref_density(pts, shape, [sigma] * len(pts))
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, ref, atol=1e-6 * max(1.0, ref.max()), rtol=1e-4)
    n_inside = len(_pixels_inside(pts, shape)[0])
    np.testing.assert_allclose(got.sum(dtype=np.float64), n_inside, rtol=1e-5)


def test_fixed_density_equals_scipy_gaussian_filter_away_from_borders():
    rng = np.random.default_rng(1)
    shape, sigma = (120, 140), 4.0
    pts = _random_points(rng, 40, (shape[0] - 40, shape[1] - 40)) + 20.0  # >= 17 px from borders
    delta = np.zeros(shape)
    rows, cols = _pixels_inside(pts, shape)
    np.add.at(delta, (rows, cols), 1.0)
    ref = ndimage.gaussian_filter(delta, sigma, mode="constant", truncate=4.0)
    got = labels.density_map(pts, shape, sigma=sigma)
    np.testing.assert_allclose(got, ref, atol=1e-7)


def test_density_tiny_hand_values():
    # sigma = 0.5 -> radius int(4 * 0.5 + 0.5) = 2, 1D kernel exp(-2 j^2) for j = -2..2:
    # [e^-8, e^-2, 1, e^-2, e^-8] / (1 + 2 e^-2 + 2 e^-8). A head in the corner pixel (0, 0) of a
    # 1 x 3 image keeps j = 0..2 along x only: [1, e^-2, e^-8] / (1 + e^-2 + e^-8).
    got = labels.density_map([[0.7, 0.2]], (1, 3), sigma=0.5)
    g = np.array([1.0, np.exp(-2.0), np.exp(-8.0)])
    np.testing.assert_allclose(got[0], g / g.sum(), rtol=1e-6)
    # Two heads in the same pixel of a 1 x 1 image: the whole count sits in that pixel.
    np.testing.assert_allclose(labels.density_map([[0.1, 0.1], [0.9, 0.9]], (1, 1)), [[2.0]])


@pytest.mark.parametrize("adaptive", [False, True])
def test_density_count_border_corners_empty_and_outside(adaptive):
    shape = (64, 48)
    h, w = shape
    corners = [[0, 0], [w - 1e-3, 0], [0, h - 1e-3], [w - 1e-3, h - 1e-3]]
    edges = [[w / 2, 0], [0, h / 2], [w - 0.5, h / 2], [w / 2, h - 0.5]]
    outside = [[-1e-6, 5], [w, 5], [5, h], [5, -3], [np.nan, 3.0], [1e9, -1e9]]
    for pts, n in [(corners, 4), (corners + edges, 8), (corners + edges + outside, 8)]:
        got = labels.density_map(np.array(pts), shape, sigma=6.0, adaptive=adaptive)
        np.testing.assert_allclose(got.sum(dtype=np.float64), n, rtol=1e-5)
    for empty in (np.zeros((0, 2)), [], np.array(outside)):
        got = labels.density_map(empty, shape, adaptive=adaptive)
        assert got.shape == shape and got.dtype == np.float32 and not got.any()
    one = labels.density_map([[3.2, 60.7]], shape, adaptive=adaptive)
    np.testing.assert_allclose(one.sum(dtype=np.float64), 1.0, rtol=1e-6)
    assert np.unravel_index(one.argmax(), shape) == (60, 3)


@pytest.mark.parametrize("sigma", [4.0, 8.0])
def test_density_count_many_heads(sigma):
    rng = np.random.default_rng(2)
    pts = _random_points(rng, 2000, (512, 512), margin=10.0)
    n_inside = len(_pixels_inside(pts, (512, 512))[0])
    for adaptive in (False, True):
        got = labels.density_map(pts, (512, 512), sigma=sigma, adaptive=adaptive)
        np.testing.assert_allclose(got.sum(dtype=np.float64), n_inside, rtol=1e-4)
        assert got.min() >= 0.0


def test_kernel_larger_than_image():
    pts = np.array([[1.5, 0.5], [4.2, 2.9]])
    for sigma in (8.0, 30.0):
        got = labels.density_map(pts, (3, 5), sigma=sigma)
        np.testing.assert_allclose(got, _ref_density(pts, (3, 5), [sigma] * 2), rtol=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_isolated_kernel_second_moment(adaptive):
    # Far from the border, the per-axis variance of a sampled Gaussian truncated at 4 sigma is
    # sigma^2 (1 - ~1.1e-3): the tails beyond 4 sigma carry 2 (4 phi(4) + Q(4)) = 1.13e-3 of it.
    shape, centre = (161, 161), (80.5, 80.5)
    for sigma in (2.0, 4.0, 9.0):
        if adaptive:
            # A partner 100 px away (outside the image, so not drawn) with beta = sigma / 100:
            # the only neighbour, so the centre head gets beta * 100 = sigma.
            pts = [centre, [centre[0] - 100.0, centre[1]]]
            got = labels.density_map(pts, shape, adaptive=True, beta=sigma / 100.0, k=3)
        else:
            got = labels.density_map([centre], shape, sigma=sigma)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        mass = got.sum(dtype=np.float64)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-6)
        var_x = (got * (xx - 80) ** 2).sum(dtype=np.float64) / mass
        var_y = (got * (yy - 80) ** 2).sum(dtype=np.float64) / mass
        np.testing.assert_allclose([var_x, var_y], sigma**2, rtol=2e-3)
        assert np.isclose((got * (xx - 80)).sum(dtype=np.float64), 0.0, atol=1e-5)


def test_adaptive_density_matches_brute_force():
    rng = np.random.default_rng(3)
    shape = (70, 90)
    pts = _random_points(rng, 25, shape, margin=4.0)
    pts = np.concatenate([pts, [[0, 0], [89.5, 69.5], [pts[0, 0], pts[0, 1]]]])  # a twin: sigma 0
    for beta, k in [(0.3, 3), (0.5, 1), (0.3, 100)]:
        sig = _ref_sigmas(pts, beta, k, None)  # k-NN over all points, inside or not
        ref = _ref_density(pts, shape, sig)
        got = labels.density_map(pts, shape, adaptive=True, beta=beta, k=k)
        np.testing.assert_allclose(got, ref, atol=1e-6 * ref.max(), rtol=1e-4)


def test_adaptive_density_large_image_brute_force():
    # Wider than the implementation's 128 px tiles: heads straddle tile boundaries at 128 and 256.
    rng = np.random.default_rng(11)
    shape = (140, 270)
    pts = _random_points(rng, 12, shape)
    pts = np.concatenate([pts, [[127.5, 127.5], [128.2, 60.0], [255.9, 139.0], [256.0, 0.0]]])
    ref = _ref_density(pts, shape, _ref_sigmas(pts, 0.3, 3, None))
    got = labels.density_map(pts, shape, adaptive=True)
    np.testing.assert_allclose(got, ref, atol=1e-6 * ref.max(), rtol=1e-4)


def test_adaptive_with_equal_sigmas_equals_fixed():
    # On a square lattice of spacing 10 each head's nearest neighbour is at 10 px, so with k = 1
    # and beta = 0.3 all sigmas are 3: both code paths (convolution / per-head tiles) must agree,
    # including for the heads on the border.
    xs = np.arange(0, 100, 10) + 0.5
    pts = np.stack(np.meshgrid(xs, xs[:7]), -1).reshape(-1, 2)
    np.testing.assert_allclose(labels.adaptive_sigmas(pts, beta=0.3, k=1), 3.0)
    fixed = labels.density_map(pts, (70, 100), sigma=3.0)
    adaptive = labels.density_map(pts, (70, 100), adaptive=True, beta=0.3, k=1)
    np.testing.assert_allclose(adaptive, fixed, atol=1e-6)


# ---------------------------------------------------------------- adaptive sigmas, closeness


def test_adaptive_sigmas_hand_values():
    # Triangle (0,0), (3,0), (0,4): pairwise distances 3, 4, 5.
    # Head 0: mean(3, 4) = 3.5 -> 0.3 * 3.5 = 1.05; head 1: mean(3, 5) = 4 -> 1.2;
    # head 2: mean(4, 5) = 4.5 -> 1.35 (k = 3 > N - 1 = 2: all other heads are used).
    pts = [[0, 0], [3, 0], [0, 4]]
    got = labels.adaptive_sigmas(pts)
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, [1.05, 1.2, 1.35], rtol=1e-6)
    np.testing.assert_allclose(labels.adaptive_sigmas(pts, k=1, beta=1.0), [3, 3, 4])
    np.testing.assert_allclose(labels.adaptive_sigmas([[5, 5]], fallback_sigma=7.0), [7.0])
    assert labels.adaptive_sigmas(np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 50])
def test_adaptive_sigmas_brute_force(n):
    rng = np.random.default_rng(n)
    pts = rng.uniform(0, 100, (n, 2))
    for beta, k in [(0.3, 3), (0.1, 1), (1.0, 7)]:
        got = labels.adaptive_sigmas(pts, beta=beta, k=k)
        np.testing.assert_allclose(got, _ref_sigmas(pts, beta, k, None), rtol=1e-6)


def test_closeness():
    # Triangle (0,0), (3,0), (0,4): nearest other heads at 3, 3, 4 -> mean 10 / 3 (Eq. 1).
    assert np.isclose(labels.closeness([[0, 0], [3, 0], [0, 4]]), 10.0 / 3.0)
    assert labels.closeness(np.zeros((0, 2))) == 0.0
    assert labels.closeness([[4.0, 2.0]]) == 0.0
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 300, (200, 2))
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert np.isclose(labels.closeness(pts), d.min(axis=1).mean())
    tree_d, _ = cKDTree(pts).query(pts, k=2)
    assert np.isclose(labels.closeness(pts), tree_d[:, 1].mean())


# ---------------------------------------------------------------- sum pooling


def test_sum_pool_hand_values_and_shapes():
    # 3 x 3 ones, stride 2, zero-padded to 4 x 4 -> block sums [[4, 2], [2, 1]].
    np.testing.assert_array_equal(labels.sum_pool(np.ones((3, 3)), 2), [[4, 2], [2, 1]])
    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 37, 50)).astype(np.float32)
    for s in (1, 2, 3, 8, 64):
        got = labels.sum_pool(x, s)
        hp, wp = -(-37 // s), -(-50 // s)
        assert got.shape == (2, 3, hp, wp) and got.dtype == np.float32
        ref = np.zeros((2, 3, hp, wp))
        for r in range(37):
            for c in range(50):
                ref[..., r // s, c // s] += x[..., r, c]
        np.testing.assert_allclose(got, ref, rtol=1e-5)
        np.testing.assert_allclose(got.sum((-1, -2)), x.sum((-1, -2)), rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        labels.sum_pool(np.ones(5), 2)
    with pytest.raises(ValueError):
        labels.sum_pool(np.ones((4, 4)), 0)


def test_sum_pool_preserves_density_count():
    rng = np.random.default_rng(6)
    pts = _random_points(rng, 300, (250, 333))
    d = labels.density_map(pts, (250, 333), sigma=4.0)
    for s in (4, 8, 16):
        np.testing.assert_allclose(labels.sum_pool(d, s).sum(dtype=np.float64), 300, rtol=1e-5)


# ---------------------------------------------------------------- distance maps


def test_distance_transform_brute_force():
    rng = np.random.default_rng(7)
    shape = (45, 61)
    for n in (1, 2, 17, 80):
        pts = _random_points(rng, n, shape, margin=3.0)
        pts = np.concatenate([pts, [[0, 0], [60.9, 44.9]]])
        got = labels.distance_transform(pts, shape)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_allclose(got, _ref_distance(pts, shape), rtol=1e-6, atol=1e-6)
    empty = labels.distance_transform([[-5, 3]], shape)
    assert np.isposinf(empty).all()


def test_distance_label_map_hand_values():
    # One head at pixel 0 of a 1 x 30 row: distance d = column index, class = #(edges <= d) - 1
    # with edges 0,1,2,3,4,5,6,8,12,18,28: d 0..6 -> 0..6, 7 -> 6, 8..11 -> 7, 12..17 -> 8,
    # 18..27 -> 9, 28, 29 -> 10.
    got = labels.distance_label_map([[0.5, 0.5]], (1, 30))
    want = [0, 1, 2, 3, 4, 5, 6, 6, 7, 7, 7, 7] + [8] * 6 + [9] * 10 + [10, 10]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[0], want)
    # Diagonal: (3, 4) from the head is at distance 5 -> class 5; no head -> last class.
    assert labels.distance_label_map([[0.2, 0.9]], (5, 5))[3, 4] == 5
    np.testing.assert_array_equal(labels.distance_label_map(np.zeros((0, 2)), (2, 3)), 10)


def test_distance_label_map_brute_force():
    rng = np.random.default_rng(8)
    shape = (90, 110)
    for edges in (labels.DEFAULT_DISTANCE_EDGES, (0, 1.5, 2.25, 7.0), (0, 3, 60)):
        pts = _random_points(rng, 12, shape, margin=5.0)
        d = _ref_distance(pts, shape)
        ref = np.array([sum(e <= v for e in edges) - 1 for v in d.ravel()]).reshape(shape)
        got = labels.distance_label_map(pts, shape, edges=edges)
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError):
        labels.distance_label_map(pts, shape, edges=(0, 2, 1))


# ---------------------------------------------------------------- local minima


def test_local_minima_recovers_separated_heads():
    rng = np.random.default_rng(9)
    shape = (120, 160)
    for _ in range(5):
        pts = _random_points(rng, 150, shape)
        rows, cols = np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)
        # Keep heads whose pixels are distinct and not 4-adjacent (diagonal contact is fine).
        keep = []
        for i in range(len(pts)):
            if all(abs(rows[i] - rows[j]) + abs(cols[i] - cols[j]) > 1 for j in keep):
                keep.append(i)
        pts = pts[keep]
        found = labels.local_minima(labels.distance_label_map(pts, shape))
        centres = np.floor(pts) + 0.5
        assert found.dtype == np.float32
        np.testing.assert_array_equal(_sorted_rows(found), _sorted_rows(centres))


def test_local_minima_plateaus_hand_made():
    lab = np.array(
        [
            [2, 2, 3, 1, 1],
            [2, 3, 3, 3, 1],
            [3, 3, 0, 3, 3],
            [1, 3, 3, 3, 3],
        ]
    )
    # Minima: the 2-plateau {(0,0),(0,1),(1,0)} (its neighbours are 3) -> x = (0.5+1.5+0.5)/3,
    # y = (0.5+0.5+1.5)/3; the 1-plateau {(0,3),(0,4),(1,4)}; the single 0; the single 1 at (3,0).
    want = [
        (2.5 / 3, 2.5 / 3),
        ((3.5 + 4.5 + 4.5) / 3, (0.5 + 0.5 + 1.5) / 3),
        (2.5, 2.5),
        (0.5, 3.5),
    ]
    np.testing.assert_allclose(_sorted_rows(labels.local_minima(lab)), _sorted_rows(want))
    # A plateau touching a lower pixel anywhere is not a minimum: lower (3, 1) to 2.
    lab2 = lab.copy()
    lab2[3, 1] = 2
    assert len(labels.local_minima(lab2)) == 4  # {(3,0)=1} still; 2-plateau at top still
    lab3 = lab.copy()
    lab3[1, 0] = 1  # now the top-left 2-plateau touches a 1: not a minimum, (1,0) is.
    got = _sorted_rows(labels.local_minima(lab3))
    assert (0.5, 1.5) in {tuple(r) for r in got} and len(got) == 4
    # Constant map: a single plateau, centred.
    np.testing.assert_allclose(labels.local_minima(np.full((4, 6), 7)), [[3.0, 2.0]])
    # max_label drops plateaus above it.
    np.testing.assert_allclose(
        _sorted_rows(labels.local_minima(lab, max_label=1)), _sorted_rows(want[1:])
    )
    with pytest.raises(ValueError, match="shape"):
        labels.local_minima(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("seed", range(6))
def test_local_minima_random_maps_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 14, 2))
    lab = rng.integers(0, 1 + seed % 4, shape).astype(np.uint8 if seed % 2 else np.float32)
    got = _sorted_rows(labels.local_minima(lab))
    np.testing.assert_allclose(got, _ref_minima(lab), rtol=1e-6)


# ---------------------------------------------------------------- validation


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        labels.density_map(np.zeros((3, 3)), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        labels.density_map(np.zeros((3, 2)), (4, 4, 3))
    with pytest.raises(ValueError, match="shape"):
        labels.distance_transform(np.zeros((2, 2, 2)), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        labels.adaptive_sigmas(np.zeros(5))


def test_distance_transform_matches_scipy_edt_on_a_crowd():
    rng = np.random.default_rng(10)
    shape = (300, 410)
    pts = _random_points(rng, 700, shape)
    mask = np.ones(shape, bool)
    rows, cols = _pixels_inside(pts, shape)
    mask[rows, cols] = False
    ref = ndimage.distance_transform_edt(mask)
    np.testing.assert_allclose(labels.distance_transform(pts, shape), ref, rtol=1e-6)
