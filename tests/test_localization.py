"""Tests of crowdjax.localization: NMS peaks, greedy matching, P / R / F."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from crowdjax import localization as loc

# ----------------------------------------------------------------------------- references


def brute_peaks(density, threshold):
    """Explicit 3x3 window loops: peak iff >= every in-image neighbour and > threshold."""
    h, w = density.shape
    out = np.zeros((h, w), bool)
    for r, c in itertools.product(range(h), range(w)):
        window = density[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        out[r, c] = density[r, c] >= window.max() and density[r, c] > threshold
    return out


def brute_greedy(pred, gt, limit):
    """Greedy over the full distance matrix: repeatedly take the global minimum allowed pair."""
    pred, gt = np.asarray(pred, float).reshape(-1, 2), np.asarray(gt, float).reshape(-1, 2)
    if len(pred) == 0 or len(gt) == 0:
        return []
    d = np.hypot(pred[:, None, 0] - gt[None, :, 0], pred[:, None, 1] - gt[None, :, 1])
    work = np.where(d <= np.broadcast_to(limit, (len(gt),))[None, :], d, np.inf)
    pairs = []
    while True:
        k = int(np.argmin(work))  # row-major: ties go to the smaller pred, then gt index
        a, b = divmod(k, len(gt))
        if not np.isfinite(work[a, b]):
            return pairs
        pairs.append((a, b, d[a, b]))
        work[a, :] = np.inf
        work[:, b] = np.inf


def as_triples(result):
    return list(zip(*(r.tolist() for r in result), strict=True))


# ----------------------------------------------------------------------------- peaks


def test_peak_mask_hand_example():
    density = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.5, 0.5],  # 0.5 0.5: a plateau of maxima, both are peaks
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.2, 0.0, 0.0, 0.3],  # 0.2 not above threshold 0.2 (strict)
        ],
        np.float32,
    )
    expected = np.zeros_like(density, bool)
    expected[0, 0] = expected[1, 3] = expected[1, 4] = expected[3, 4] = True
    got = np.asarray(loc.peak_mask(density, threshold=0.2))
    np.testing.assert_array_equal(got, expected)
    # Relative: 0.4 * max 0.9 = 0.36 keeps 0.9, 0.5, 0.5 and drops 0.3.
    expected[3, 4] = False
    got = np.asarray(loc.peak_mask(density, threshold=0.4, relative=True))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", range(4))
def test_peak_mask_matches_brute_force_batched_and_jit(seed):
    rng = np.random.default_rng(seed)
    # Rounded values make plateaus and ties common.
    density = np.round(rng.uniform(0, 1, (3, 7, 6)), 1).astype(np.float32)
    density[1] = 0.0  # all-zero map: no peak above threshold 0
    fn = jax.jit(lambda x: loc.peak_mask(x, threshold=0.5, relative=True))
    got = np.asarray(fn(jnp.asarray(density)))
    for b in range(3):
        ref = brute_peaks(density[b], 0.5 * density[b].max())
        np.testing.assert_array_equal(got[b], ref)
        np.testing.assert_array_equal(
            np.asarray(loc.peak_mask(density[b], threshold=0.5, relative=True)), ref
        )
    got_abs = np.asarray(loc.peak_mask(density, threshold=0.3))
    for b in range(3):
        np.testing.assert_array_equal(got_abs[b], brute_peaks(density[b], 0.3))


def test_peak_mask_rank_error():
    # Integer maps are accepted (cast to float for the -inf padding).
    ints = np.array([[0, 2, 0], [0, 0, 0], [1, 0, 3]])
    np.testing.assert_array_equal(np.asarray(loc.peak_mask(ints, threshold=0)), ints > 0)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        loc.peak_mask(jnp.zeros((2, 3, 4, 5)), threshold=0.0)


def test_density_to_points_stride_and_agreement():
    density = np.zeros((3, 4))
    density[1, 2] = 1.0
    density[2, 0] = 0.5
    # Stride 8: (r, c) = (1, 2) -> (8*2 + 4, 8*1 + 4) = (20, 12); (2, 0) -> (4, 20). Row-major.
    np.testing.assert_array_equal(
        loc.density_to_points(density, threshold=0.1, stride=8), [[4.0, 20.0], [20.0, 12.0]][::-1]
    )
    # Stride 1: pixel centres c + 0.5, r + 0.5.
    np.testing.assert_array_equal(
        loc.density_to_points(density, threshold=0.6), np.array([[2.5, 1.5]])
    )
    assert loc.density_to_points(np.zeros((5, 5)), threshold=0.0).shape == (0, 2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d = np.round(rng.uniform(0, 1, (9, 11)), 1).astype(np.float32)
        rows, cols = np.nonzero(np.asarray(loc.peak_mask(d, threshold=0.2, relative=True)))
        pts = loc.density_to_points(d, threshold=0.2, relative=True, stride=4)
        np.testing.assert_array_equal(pts, np.stack([4 * cols + 2, 4 * rows + 2], 1))


# ----------------------------------------------------------------------------- matching


def test_match_hand_example_greedy_is_not_optimal():
    # On a line (y = 0): pred p0 = 2, p1 = -0.5; gt g0 = 1, g1 = 3.5. Distances:
    #   p0-g0 = 1, p0-g1 = 1.5, p1-g0 = 1.5, p1-g1 = 4. Threshold 2.
    # Greedy takes p0-g0 (1); p1-g1 (4) is beyond 2 -> 1 match. Optimal would match 2.
    pred = [[2.0, 0.0], [-0.5, 0.0]]
    gt = [[1.0, 0.0], [3.5, 0.0]]
    assert as_triples(loc.match_points(pred, gt, max_distance=2.0)) == [(0, 0, 1.0)]
    # Without threshold the second pair (4) is taken too.
    assert as_triples(loc.match_points(pred, gt, max_distance=np.inf)) == [
        (0, 0, 1.0),
        (1, 1, 4.0),
    ]


def test_match_ties_and_per_point_thresholds():
    # pred (0,0), (2,0); gt (1,0): both at distance 1 -> tie goes to pred 0.
    assert as_triples(loc.match_points([[0, 0], [2, 0]], [[1, 0]], max_distance=1.0)) == [
        (0, 0, 1.0)
    ]
    # Per-GT thresholds: gt0 at distance 3 with sigma 2 (no), gt1 at distance 5 with sigma 6 (yes).
    pred = [[0.0, 0.0]]
    gt = [[3.0, 0.0], [0.0, 5.0]]
    assert as_triples(loc.match_points(pred, gt, max_distance=[2.0, 6.0])) == [(0, 1, 5.0)]
    with pytest.raises(ValueError, match="max_distance"):
        loc.match_points(pred, gt, max_distance=[1.0, 2.0, 3.0])


def test_match_empty_inputs():
    for pred, gt in [([], [[1, 2]]), ([[1, 2]], []), (np.zeros((0, 2)), np.zeros((0, 2)))]:
        i, j, d = loc.match_points(pred, gt, max_distance=10.0)
        assert i.shape == j.shape == d.shape == (0,)
    with pytest.raises(ValueError, match="non-finite"):
        loc.match_points([[np.nan, 0.0]], [[0.0, 0.0]], max_distance=1.0)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        loc.match_points(np.zeros((3, 3)), [[0.0, 0.0]], max_distance=1.0)


@pytest.mark.parametrize("seed", range(12))
def test_greedy_matches_brute_force_greedy(seed):
    rng = np.random.default_rng(seed)
    n_pred, n_gt = rng.integers(0, 40, size=2)
    integer = seed % 3 == 0  # integer coordinates: many exactly tied distances
    scale = 60.0
    pred = rng.uniform(0, scale, (n_pred, 2))
    gt = rng.uniform(0, scale, (n_gt, 2))
    if integer:
        pred, gt = np.floor(pred / 6), np.floor(gt / 6)
    limits = [np.inf, 0.0, 3.0, 20.0, rng.uniform(0, 25, n_gt)]
    for limit in limits:
        got = as_triples(loc.match_points(pred, gt, max_distance=limit))
        assert got == brute_greedy(pred, gt, limit), (seed, limit)


def test_greedy_matches_brute_force_on_dense_crowd_bands():
    # Enough points and a large radius that all distance bands (4, 16, 64, 256) are used.
    rng = np.random.default_rng(7)
    gt = rng.uniform(0, 300, (300, 2))
    pred = np.concatenate([gt[:200] + rng.normal(0, 5, (200, 2)), rng.uniform(0, 300, (80, 2))])
    for limit in (100.0, 500.0):
        got = as_triples(loc.match_points(pred, gt, max_distance=limit))
        assert got == brute_greedy(pred, gt, limit)


def test_greedy_agrees_with_optimal_on_well_separated_points():
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.arange(8) * 50.0, np.arange(6) * 50.0), -1).reshape(-1, 2)
    gt = grid[rng.permutation(len(grid))[:40]]
    pred = gt[:30] + rng.uniform(-5, 5, (30, 2))  # 10 missed heads
    pred = np.concatenate([pred, grid[:3] + 25.0])  # 3 false positives between heads
    pred = pred[rng.permutation(len(pred))]
    threshold = 10.0
    i, j, _ = loc.match_points(pred, gt, max_distance=threshold)
    cost = cdist(pred, gt)
    rows, cols = linear_sum_assignment(np.where(cost <= threshold, cost, 1e6))
    ok = cost[rows, cols] <= threshold
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
        zip(rows[ok].tolist(), cols[ok].tolist(), strict=True)
    )
    assert len(i) == 30


@pytest.mark.parametrize("seed", range(4))
def test_true_positives_sweep_equals_separate_matchings(seed):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 100, (50, 2))
    pred = np.concatenate([gt[:35] + rng.normal(0, 4, (35, 2)), rng.uniform(0, 100, (20, 2))])
    thresholds = np.arange(1, 31)
    tp = loc.true_positives(pred, gt, thresholds=thresholds)
    separate = [len(brute_greedy(pred, gt, t)) for t in thresholds]
    np.testing.assert_array_equal(tp, separate)


def test_knn_sigma_against_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 50, (12, 2))
    d = cdist(pts, pts)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(loc.knn_sigma(pts, k=3), np.sort(d, 1)[:, :3].mean(1))
    # Two points: k is reduced to the one neighbour; one point: the default.
    np.testing.assert_allclose(loc.knn_sigma([[0, 0], [3, 4]], k=3), [5.0, 5.0])
    np.testing.assert_array_equal(loc.knn_sigma([[1, 1]], default=8.0), [8.0])
    assert loc.knn_sigma(np.zeros((0, 2))).shape == (0,)


# ----------------------------------------------------------------------------- P / R / F


def test_localization_metrics_hand_example():
    # Image 1: pred (0,0), (10,0), (50,50); gt (1.5,0), (10,2.5), (100,100).
    #   matched distances 1.5 and 2.5; 1 FP far away; 1 GT unmatched.
    # Image 2: no predictions, gt (5,5).  Totals: #pred 3, #gt 4.
    # Thresholds 1, 2, 3: TP = 0, 1, 2 -> P = 0, 1/3, 2/3; R = 0, 1/4, 2/4.
    #   AP = (0 + 1/3 + 2/3) / 3 = 1/3; AR = (0 + 1/4 + 1/2) / 3 = 1/4; AF = 2(1/12)/(7/12) = 2/7.
    #   mean_f = (0 + F(1/3,1/4) + F(2/3,1/2)) / 3 = (0 + 2/7 + 4/7) / 3 = 2/7.
    # sigma 2: TP 1 -> P 1/3, R 1/4, F 2/7.
    pred = [np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]]), np.zeros((0, 2))]
    gt = [np.array([[1.5, 0.0], [10.0, 2.5], [100.0, 100.0]]), np.array([[5.0, 5.0]])]
    out = loc.localization_metrics(pred, gt, thresholds=(1, 2, 3), sigmas=(2,))
    assert out["ap"] == pytest.approx(1 / 3)
    assert out["ar"] == pytest.approx(1 / 4)
    assert out["af"] == pytest.approx(2 / 7)
    assert out["mean_f"] == pytest.approx(2 / 7)
    assert out["precision@2"] == pytest.approx(1 / 3)
    assert out["recall@2"] == pytest.approx(1 / 4)
    assert out["f@2"] == pytest.approx(2 / 7)
    assert (out["num_images"], out["num_pred"], out["num_gt"]) == (2, 3, 4)
    assert [r["tp@2"] for r in out["records"]] == [1, 0]


def test_uot_table5_f_is_harmonic_mean_of_ap_ar():
    # UOT Table 5: AP 71.41%, AR 78.41% -> F 74.75%; BL 66.85%, 75.36% -> 70.85%.
    assert loc._f_measure(0.7141, 0.7841) == pytest.approx(0.7475, abs=5e-5)
    assert loc._f_measure(0.6685, 0.7536) == pytest.approx(0.7085, abs=5e-5)


def test_localization_metrics_edge_cases():
    # No predictions at all: P = R = F = 0 (0/0 precision is reported as 0).
    out = loc.localization_metrics([np.zeros((0, 2))], [np.ones((3, 2))], thresholds=(5,))
    assert (out["ap"], out["ar"], out["af"]) == (0.0, 0.0, 0.0)
    # No GT at all: every prediction is a FP.
    out = loc.localization_metrics([np.ones((2, 2))], [np.zeros((0, 2))], thresholds=(5,))
    assert (out["ap"], out["ar"], out["num_pred"]) == (0.0, 0.0, 2)
    # Perfect predictions.
    pts = np.array([[3.0, 4.0], [30.0, 40.0]])
    out = loc.localization_metrics([pts], [pts])
    assert out["ap"] == out["ar"] == out["af"] == out["f@4"] == 1.0
    with pytest.raises(ValueError, match="GT images"):
        loc.localization_metrics([pts], [pts, pts])


def test_accumulator_masks_and_per_point_sigmas():
    # Padded inputs with masks give the same result as the unpadded ones.
    gt = np.array([[0.0, 0.0], [20.0, 0.0], [999.0, 999.0]])
    gt_mask = np.array([True, True, False])
    pred = np.array([[3.0, 0.0], [20.0, 7.0], [-1.0, -1.0]])
    pred_mask = np.array([True, True, False])
    # Per-point sigma: gt0 sigma 4 (pred at distance 3: match), gt1 sigma 5 (distance 7: no).
    sigma = np.array([4.0, 5.0, 0.0])
    m = loc.LocalizationMetrics(thresholds=(1, 10), sigmas=(5,))
    m.update(pred, gt, pred_mask=pred_mask, gt_mask=gt_mask, gt_sigmas={"knn": sigma}, name="a")
    out = m.result()
    ref = loc.localization_metrics([pred[:2]], [gt[:2]], thresholds=(1, 10), sigmas=(5,))
    for key in ("ap", "ar", "af", "precision@5", "recall@5", "num_pred", "num_gt"):
        assert out[key] == ref[key]
    # Thresholds 1, 10: TP 0, 2 of 2 -> AP = AR = 1/2.
    assert out["ap"] == out["ar"] == 0.5
    assert out["precision@knn"] == out["recall@knn"] == 0.5
    assert out["records"][0]["name"] == "a" and out["records"][0]["tp@knn"] == 1
    with pytest.raises(ValueError, match="knn"):
        m.update(pred[:2], gt[:2], gt_sigmas={"knn": [1.0]})
    m.reset()
    assert m.result()["num_images"] == 0
