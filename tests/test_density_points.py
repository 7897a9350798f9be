"""Tests of crowdjax.density_points against brute-force references (explicit loops)."""

import itertools

import numpy as np
import pytest
import torch

from crowdjax import density_points as dp
from crowdjax import eval_writer, evaluation

# ----------------------------------------------------------------------------- references


def brute_local_maxima(density, threshold, window):
    """Loops: a pixel is a maximum when >= every in-image pixel of its window and > threshold."""
    h, w = density.shape
    half = window // 2
    out = np.zeros((h, w), bool)
    for r, c in itertools.product(range(h), range(w)):
        block = density[max(r - half, 0) : r + half + 1, max(c - half, 0) : c + half + 1]
        out[r, c] = density[r, c] >= block.max() and density[r, c] > threshold
    return out


def brute_groups(mask):
    """Flood fill over 8-neighbours: each group's mean pixel centre, by first pixel (row-major)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    points = []
    for r, c in itertools.product(range(h), range(w)):
        if not mask[r, c] or seen[r, c]:
            continue
        stack, members = [(r, c)], []
        seen[r, c] = True
        while stack:
            a, b = stack.pop()
            members.append((a, b))
            for da, db in itertools.product((-1, 0, 1), repeat=2):
                y, x = a + da, b + db
                if 0 <= y < h and 0 <= x < w and mask[y, x] and not seen[y, x]:
                    seen[y, x] = True
                    stack.append((y, x))
        members = np.array(members, float)
        points.append((members[:, 1].mean() + 0.5, members[:, 0].mean() + 0.5))
    return np.array(points, float).reshape(-1, 2)


# ----------------------------------------------------------------------------- peaks


def test_peak_groups_hand_example_plateau_and_border():
    density = np.zeros((5, 6))
    density[0, 0] = 0.9  # a border peak: only its in-image neighbours compete
    density[2, 3] = density[2, 4] = density[3, 3] = density[3, 4] = 0.5  # a 2x2 plateau: one head
    density[4, 0] = 0.2  # not above the threshold 0.2 (strict)
    got = dp.peak_groups(density, threshold=0.2, window=3)
    # Plateau pixels (r, c) in {2, 3} x {3, 4}: centre (x, y) = (3.5 + 0.5, 2.5 + 0.5) = (4, 3).
    np.testing.assert_array_equal(got, [[0.5, 0.5], [4.0, 3.0]])
    # Window 7 (|dr|, |dc| <= 3): (0, 0) is in the windows of (2, 3) and (3, 3), which drop;
    # column 4 (|dc| = 4) stays a maximum: one head at its centre (4 + 0.5, 3.0).
    np.testing.assert_array_equal(
        dp.peak_groups(density, threshold=0.2, window=7), [[0.5, 0.5], [4.5, 3.0]]
    )
    with pytest.raises(ValueError, match="odd"):
        dp.peak_groups(density, threshold=0.0, window=4)


@pytest.mark.parametrize("seed, window", [(0, 3), (1, 3), (2, 5), (3, 1)])
def test_peak_groups_matches_brute_force(seed, window):
    rng = np.random.default_rng(seed)
    # Values rounded to one decimal: plateaus, ties and border maxima are common.
    density = np.round(rng.uniform(0, 1, (9, 11)), 1)
    density[:, 5] = 0.0  # a column of zeros: a plateau below the threshold
    threshold = 0.3
    got = dp.peak_groups(density, threshold=threshold, window=window)
    ref = brute_groups(brute_local_maxima(density, threshold, window))
    np.testing.assert_allclose(got, ref)
    assert dp.peak_groups(np.zeros((4, 4)), threshold=0.0, window=3).shape == (0, 2)


# ----------------------------------------------------------------------------- input resolution


@pytest.mark.parametrize("stride, shape", [(8, (37, 50)), (4, (16, 13)), (1, (5, 7))])
def test_upsample_matches_torch_bilinear_and_keeps_the_count(stride, shape):
    rng = np.random.default_rng(stride)
    h, w = (-(-s // stride) for s in shape)
    density = rng.uniform(0, 1, (h, w))
    got = dp.upsample_to_input(density, stride=stride, shape=shape)
    # torch on the whole s*h x s*w grid (scale factor exactly s), cropped to the image.
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(density)[None, None],
            size=(h * stride, w * stride),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()[: shape[0], : shape[1]]
        / stride**2
    )
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    if shape[0] % stride == 0 and shape[1] % stride == 0:
        # Interpolation weights of each output column sum to 1: the count is kept.
        np.testing.assert_allclose(got.sum(), density.sum(), rtol=1e-12)


def test_input_peaks_hand_example():
    # One head in output pixel (1, 2) of a stride-4 map: at input resolution the maximum is the
    # 2x2 block of pixels around (4*2 + 2, 4*1 + 2) = (10, 6), i.e. rows 5-6, cols 9-10.
    density = np.zeros((4, 5))
    density[1, 2] = 1.0
    points = dp.density_points(
        density, protocol="input_peaks", stride=4, shape=(16, 20), threshold=0.5
    )
    np.testing.assert_allclose(points, [[10.0, 6.0]])
    # Threshold in people per output pixel: 1.0 is not above 1.0.
    none = dp.density_points(
        density, protocol="input_peaks", stride=4, shape=(16, 20), threshold=1.0
    )
    assert none.shape == (0, 2)
    # stride_peaks: the output pixel's centre, the same point here.
    np.testing.assert_allclose(
        dp.density_points(
            density, protocol="stride_peaks", stride=4, shape=(16, 20), threshold=0.5
        ),
        [[10.0, 6.0]],
    )
    with pytest.raises(ValueError, match="config.eval.localization='peaks'"):
        dp.check_protocol("peaks")


def test_input_peaks_matches_brute_force_on_upsampled_maps():
    rng = np.random.default_rng(7)
    density = np.round(rng.uniform(0, 1, (6, 7)), 1)
    shape = (45, 53)
    got = dp.density_points(
        density, protocol="input_peaks", stride=8, shape=shape, threshold=0.2, window=5
    )
    up = dp.upsample_to_input(density, stride=8, shape=shape)
    ref = brute_groups(brute_local_maxima(up, 0.2 / 64, 5))
    np.testing.assert_allclose(got, ref)
    assert len(got) > 0


# ----------------------------------------------------------------------------- the evaluation


def _add_one(stream):
    density = np.zeros((4, 4), np.float32)
    density[1, 1] = 1.0
    return stream.add(
        image_id="a",
        gt_points=np.array([[12.0, 12.0]], np.float32),
        pred_map=density,
        stride=8,
        region=np.ones((32, 32), np.uint8),
    )


def test_density_methods_report_localization_only_under_a_protocol():
    plain = evaluation.StreamingMetrics(peak_threshold=0.1, detailed=True)
    _add_one(plain)
    result = plain.result()
    assert "af" not in result and "localization" not in result and "game0" in result
    stream = evaluation.StreamingMetrics(
        peak_threshold=0.1, detailed=True, localization="input_peaks", peak_window=3
    )
    _add_one(stream)
    result = stream.result()
    # The head at (12, 12) is found at the output pixel's centre: matched at every threshold.
    assert result["ap"] == 1.0 and result["ar"] == 1.0
    assert result["localization"] == {
        "protocol": "input_peaks",
        "peak_threshold": 0.1,
        "peak_window": 3,
    }
    heads = evaluation.StreamingMetrics(peak_threshold=0.1, detailed=True)
    heads.add(
        image_id="a",
        gt_points=np.array([[12.0, 12.0]], np.float32),
        pred_map=np.zeros((32, 32), np.float32),
        stride=1,
        region=np.ones((32, 32), np.uint8),
        pred_points=np.array([[12.0, 13.0]], np.float32),
    )
    assert heads.result()["localization"] == {"protocol": "heads"}


def test_console_line_labels_localization_numbers():
    protocol = {"protocol": "stride_peaks", "peak_threshold": 0.1}
    metrics = {"mae": 1.0, "ap": 0.5, "localization": protocol}
    line = eval_writer.console_line(metrics, {"mae": 1.0, "ap": 0.5})
    assert line == "mae 1 | localization stride_peaks (threshold 0.1): ap 0.5"


def test_evaluation_reports_the_knn_threshold():
    # Heads (0, 0), (10, 0), (0, 10): k = 3 with two neighbours each -> sigma (0, 0) = 10,
    # sigma (10, 0) = sigma (0, 10) = (10 + 14.14) / 2 = 12.07. Predictions (0, 11): 1 from
    # (0, 10), matched; (30, 0): 20 from (10, 0) > 12.07, not. P = 1/2, R = 1/3.
    stream = evaluation.StreamingMetrics(peak_threshold=0.1, detailed=True)
    stream.add(
        image_id="a",
        gt_points=np.array([[0, 0], [10, 0], [0, 10]], np.float32),
        pred_map=np.zeros((40, 40), np.float32),
        stride=1,
        region=np.ones((40, 40), np.uint8),
        pred_points=np.array([[0, 11], [30, 0]], np.float32),
    )
    result = stream.result()
    assert result["precision@knn"] == 0.5 and result["recall@knn"] == pytest.approx(1 / 3)
