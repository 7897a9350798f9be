"""Tests of the dense-region selection against OpenCV / scipy references.

All maps share one shape and the jitted functions are built once, so each variant compiles once.
"""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from crowdjax.methods.autoscale import dense_regions

SHAPE = (24, 32)


@functools.cache
def _largest(connectivity):
    fn = lambda m: dense_regions.largest_region_box(m, connectivity=connectivity)
    return jax.jit(jax.vmap(fn))


_select = jax.jit(
    dense_regions.select_dense_region,
    static_argnames=("mode", "factor", "max_class", "min_area_ratio", "connectivity"),
)


def _cv2_largest(mask, connectivity):
    """Reference: cv2.connectedComponentsWithStats; returns (max area, boxes of the largest)."""
    num, _, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=connectivity
    )
    if num == 1:
        return 0, []
    area = stats[1:, cv2.CC_STAT_AREA]
    best = np.flatnonzero(area == area.max()) + 1
    return int(area.max()), [tuple(int(v) for v in stats[i, :4]) for i in best]


def _masks(seed):
    """Random blobs, salt and pepper (many ties), empty, full, a serpentine and a diagonal pair."""
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(10):
        noise = ndimage.gaussian_filter(rng.normal(size=SHAPE), sigma=1 + k % 3)
        masks.append(noise > np.quantile(noise, rng.uniform(0.3, 0.9)))
    masks.append(rng.random(SHAPE) > 0.5)
    masks.append(np.zeros(SHAPE, bool))
    masks.append(np.ones(SHAPE, bool))
    snake = np.zeros(SHAPE, bool)  # 1-px wide: the longest propagation path
    snake[1:16:2, 2:17] = True
    snake[2:16:4, 16] = True
    snake[4:16:4, 2] = True
    diag = np.zeros(SHAPE, bool)  # touching by a corner: 1 region (8-conn.) or 2 (4-conn.)
    diag[1, 1] = diag[2, 2] = True
    return np.stack([*masks, snake, diag])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_largest_region_box_against_cv2(connectivity):
    masks = _masks(connectivity)
    boxes, valid = _largest(connectivity)(jnp.asarray(masks))
    boxes, valid = np.asarray(boxes), np.asarray(valid)
    for m, box, ok in zip(masks, boxes, valid, strict=True):
        host_box, host_ok = dense_regions.largest_region_box_host(m, connectivity=connectivity)
        np.testing.assert_array_equal(box, host_box)  # device == host exactly
        assert ok == host_ok
        area, ref_boxes = _cv2_largest(m, connectivity)
        if area == 0:
            assert not ok and tuple(box) == (0, 0, 0, 0)
            continue
        assert ok and tuple(box) in ref_boxes
        if len(ref_boxes) == 1:
            assert tuple(box) == ref_boxes[0]
    assert tuple(boxes[-2]) == (2, 1, 15, 15)  # the serpentine is one region
    assert tuple(boxes[-1]) == ((1, 1, 2, 2) if connectivity == 8 else (1, 1, 1, 1))  # tie: first
    with pytest.raises(ValueError, match="connectivity"):
        dense_regions.largest_region_box(jnp.asarray(masks[0]), connectivity=6)


def test_connected_components_labels_are_first_raster_pixel():
    masks = _masks(3)
    labels = np.asarray(jax.jit(jax.vmap(dense_regions.connected_components))(jnp.asarray(masks)))
    for m, lab in zip(masks, labels, strict=True):
        comp, num = ndimage.label(m, structure=np.ones((3, 3)))
        for k in range(1, num + 1):
            pix = np.flatnonzero(comp.ravel() == k)
            np.testing.assert_array_equal(lab.ravel()[pix], pix.min())
        np.testing.assert_array_equal(lab[~m], m.size)


def test_regression_mode_threshold_and_area_ratio():
    # mean = (4 * 48 + 5 * 1) / 768 = 0.2565, threshold 0.513: the 6 x 8 block of 4s and five
    # isolated 1s (one-pixel regions) are kept; the block wins, box area 48 = 0.0625 of the map.
    hand = np.zeros(SHAPE, np.float32)
    hand[2:8, 3:11] = 4.0
    hand[20, [0, 4, 8, 12, 16]] = 1.0
    host = dense_regions.select_dense_region_host
    boxes, valid = host(hand[None])
    assert tuple(boxes[0]) == (3, 2, 8, 6) and not valid[0]  # 0.0625 <= J_r = 0.1: skip
    assert host(hand[None], min_area_ratio=0.06)[1][0]
    assert not host(hand[None], min_area_ratio=0.0625)[1][0]  # strict: 48 > 48 is False
    assert not host(hand[None], factor=20.0)[1][0]  # nothing above 20 x 0.2565
    # Random crowd-like maps, the hand map and an empty map: jnp == host == cv2.
    rng = np.random.default_rng(8)
    dens = [ndimage.gaussian_filter(rng.exponential(size=SHAPE) ** 3, 1.5) for _ in range(5)]
    dens = np.stack([*dens, hand, np.zeros(SHAPE)]).astype(np.float32)
    boxes, valid = _select(jnp.asarray(dens), min_area_ratio=0.06)
    hboxes, hvalid = host(dens, min_area_ratio=0.06)
    np.testing.assert_array_equal(boxes, hboxes)
    np.testing.assert_array_equal(valid, hvalid)
    assert tuple(np.asarray(boxes)[-2]) == (3, 2, 8, 6) and bool(valid[-2]) and not valid[-1]
    for d, box in zip(dens[:-2], np.asarray(boxes), strict=False):
        area, ref_boxes = _cv2_largest(d > 2 * d.mean(), 8)
        assert area > 0 and tuple(box) in ref_boxes


def test_localization_mode_against_cv2():
    rng = np.random.default_rng(7)
    classes = rng.integers(0, 11, size=(3, *SHAPE))
    classes[0, 3:15, 2:20] = rng.integers(0, 5, size=(12, 18))  # a dense block
    boxes, valid = _select(jnp.asarray(classes), mode="localization")
    hboxes, hvalid = dense_regions.select_dense_region_host(classes, mode="localization")
    np.testing.assert_array_equal(boxes, hboxes)
    np.testing.assert_array_equal(valid, hvalid)
    for c, box, ok in zip(classes, np.asarray(boxes), np.asarray(valid), strict=True):
        _, ref_boxes = _cv2_largest(c < 8, 8)
        assert tuple(box) in ref_boxes
        assert ok == (box[2] * box[3] > 0.02 * c.size)  # J_l
    with pytest.raises(ValueError, match="mode"):
        dense_regions.select_dense_region(jnp.asarray(classes), mode="other")
    with pytest.raises(ValueError, match="B, H, W"):
        dense_regions.select_dense_region(jnp.asarray(classes[0]))
