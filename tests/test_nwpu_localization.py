"""Tests of NWPU-Crowd's box-threshold localization protocol (crowdjax.nwpu_localization)."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from crowdjax import evaluation, localization
from crowdjax import nwpu_localization as nwpu
from crowdjax.data import io, transforms


def test_box_sigmas_hand_example():
    # 6 x 8 box: sigma_s = min(6, 8) / 2 = 3, sigma_l = sqrt(36 + 64) / 2 = 5.
    sigmas = nwpu.box_sigmas([[-3, -4, 3, 4], [8, -2, 12, 2]])
    np.testing.assert_allclose(sigmas["sigma_s"], [3.0, 2.0])
    np.testing.assert_allclose(sigmas["sigma_l"], [5.0, np.sqrt(32) / 2])
    with pytest.raises(ValueError, match=r"x2 < x1 or y2 < y1: rows \[1\]"):
        nwpu.box_sigmas([[0, 0, 1, 1], [5, 0, 4, 1]])
    with pytest.raises(ValueError, match="non-finite"):
        nwpu.box_sigmas([[0, 0, np.nan, 1]])


def test_protocol_hand_worked_two_images():
    metrics = nwpu.NwpuLocalizationMetrics()
    # Image 1: heads g0 = (0, 0) (box 6 x 8: sigma_s 3, sigma_l 5), g1 = (10, 0) (box 4 x 4:
    # sigma_s 2, sigma_l 2.83). Predictions p0 = (4, 0): 4 from g0; p1 = (8, 0): 2 from g1.
    # sigma_s: p0-g0 4 > 3 no, p1-g1 2 <= 2 yes -> TP 1. sigma_l: both -> TP 2.
    record = metrics.update([[4, 0], [8, 0]], [[0, 0], [10, 0]], [[-3, -4, 3, 4], [8, -2, 12, 2]])
    assert record == {"num_pred": 2, "num_gt": 2, "tp@sigma_s": 1, "tp@sigma_l": 2}
    # Image 2: heads a = (0, 0) (box 8 x 8: sigma_s 4), b = (4, 0) (box 6 x 6: sigma_s 3).
    # q0 = (2, 0) is 2 from both, q1 = (-3.5, 0) is 3.5 from a and 7.5 from b. Greedy
    # nearest-first takes q0-a (tie, lower index) and leaves q1 and b unmatched; the maximum
    # matching takes q0-b and q1-a: TP 2 at sigma_s (and at sigma_l: 5.66, 4.24).
    pred, gt, boxes = [[2, 0], [-3.5, 0]], [[0, 0], [4, 0]], [[-4, -4, 4, 4], [1, -3, 7, 3]]
    greedy = localization.match_points(pred, gt, max_distance=[4.0, 3.0])
    assert len(greedy[0]) == 1
    record = metrics.update(pred, gt, boxes)
    assert record["tp@sigma_s"] == 2 and record["tp@sigma_l"] == 2
    # Totals: 4 predictions, 4 heads; TP 3 at sigma_s -> P = R = F = 0.75; TP 4 at sigma_l -> 1.
    result = metrics.result()
    for key in ("precision", "recall", "f"):
        assert result[f"{key}@sigma_s"] == pytest.approx(0.75)
        assert result[f"{key}@sigma_l"] == pytest.approx(1.0)
    assert (result["num_pred"], result["num_gt"], result["num_images"]) == (4, 4, 2)


@pytest.mark.parametrize("seed", range(5))
def test_matched_count_is_a_maximum_matching(seed):
    rng = np.random.default_rng(seed)
    pred = np.round(rng.uniform(0, 20, (9, 2)))
    gt = np.round(rng.uniform(0, 20, (7, 2)))
    sigma = rng.uniform(1, 6, 7)
    # Reference: the assignment maximising the number of allowed pairs (scipy's Hungarian).
    allowed = np.hypot(*(pred[:, None, :] - gt[None, :, :]).transpose(2, 0, 1)) <= sigma[None]
    rows, cols = linear_sum_assignment(allowed.astype(float), maximize=True)
    assert nwpu.matched_count(pred, gt, sigma) == int(allowed[rows, cols].sum())


def test_empty_images_and_bad_shapes():
    metrics = nwpu.NwpuLocalizationMetrics()
    metrics.update(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 4)))
    metrics.update([[1.0, 1.0]], np.zeros((0, 2)), np.zeros((0, 4)))  # one false positive
    result = metrics.result()
    assert result["precision@sigma_s"] == 0.0 and result["recall@sigma_l"] == 0.0
    with pytest.raises(ValueError, match="2 heads but 1 boxes"):
        metrics.update([[0, 0]], [[0, 0], [1, 1]], [[0, 0, 1, 1]])


def test_evaluation_reports_nwpu_thresholds_where_boxes_are_stored():
    # Image 1 of the hand-worked example on a stride-1 map: a localization method's heads.
    def add(stream, boxes):
        stream.add(
            image_id="a",
            gt_points=np.array([[0, 0], [10, 0]], np.float32),
            pred_map=np.zeros((16, 16), np.float32),
            stride=1,
            region=np.ones((16, 16), np.uint8),
            pred_points=np.array([[4, 0], [8, 0]], np.float32),
            gt_boxes=boxes,
        )

    stream = evaluation.StreamingMetrics(peak_threshold=0.1, detailed=True)
    add(stream, np.array([[-3, -4, 3, 4], [8, -2, 12, 2]], np.float32))
    result = stream.result()
    assert result["precision@sigma_s"] == 0.5 and result["f@sigma_l"] == 1.0
    # An image stored without boxes (NaN): no NWPU numbers for the entry, counted.
    add(stream, np.full((2, 4), np.nan, np.float32))
    result = stream.result()
    assert "precision@sigma_s" not in result and result["images_without_boxes"] == 1


def test_eval_example_scales_boxes_with_the_points():
    record = {
        "image_id": b"0001.jpg",
        "image": io.encode_image(np.zeros((10, 20, 3), np.uint8), ext=".png"),
        "points": np.array([[4.0, 2.0]], np.float32),
        "boxes": np.array([[2.0, 1.0, 6.0, 3.0]], np.float32),
        "density": {"shape": (10, 20)},
        "original_size": np.array([30, 60], np.int32),
    }
    # Short side 10 -> 20: everything doubles.
    out = transforms.eval_example(
        record, bucket=(24, 40), max_points=4, min_short_side=20, with_boxes=True
    )
    np.testing.assert_allclose(out["points"][0], [8.0, 4.0])
    np.testing.assert_allclose(out["boxes"], [[4, 2, 12, 6], [0] * 4, [0] * 4, [0] * 4])
    np.testing.assert_array_equal(out["original_size"], [30, 60])
