"""Tests of crowdjax.data.splits: held-out validation parts and test-split detection."""

import numpy as np
import pytest

from configs import datasets as config_datasets
from crowdjax.data import settings, splits


@pytest.mark.parametrize("mode", ["random", "block"])
def test_holdout_is_deterministic_and_of_the_requested_size(mode):
    kwargs = dict(fraction=0.1, seed=0, mode=mode)
    a = splits.holdout_indices("shanghaitech/part_b", "train", 400, **kwargs)
    b = splits.holdout_indices("shanghaitech/part_b", "train", 400, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 40 and len(set(a)) == 40 and np.all(np.diff(a) > 0)
    assert a.min() >= 0 and a.max() < 400
    other = splits.holdout_indices("shanghaitech/part_b", "train", 400, **{**kwargs, "seed": 1})
    assert not np.array_equal(a, other)
    if mode == "block":  # consecutive frames
        np.testing.assert_array_equal(a, np.arange(a[0], a[0] + 40))
    else:  # spread over the split, not one run
        assert np.any(np.diff(a) > 1)


def test_holdout_keeps_at_least_one_image_on_each_side():
    assert len(splits.holdout_indices("x", "train", 2, fraction=0.01, seed=0)) == 1
    assert len(splits.holdout_indices("x", "train", 2, fraction=0.99, seed=0)) == 1
    with pytest.raises(ValueError, match="holdout_fraction"):
        splits.holdout_indices("x", "train", 10, fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="holdout_mode"):
        splits.holdout_indices("x", "train", 10, fraction=0.1, seed=0, mode="tail")


def test_the_config_catalog_counts_training_images_with_the_same_holdout_size():
    # SHB: round(0.1 * 400) = 40 held out, 360 train; UCF_CC_50 fold: round(0.1 * 40) = 4.
    assert splits.holdout_size(400, 0.1) == 40 and splits.holdout_size(2, 0.99) == 1
    assert config_datasets.get("shb").training_images(0.1) == 400 - 40
    assert config_datasets.get("ucf_cc_50").training_images(0.1) == 40 - 4
    assert config_datasets.get("nwpu").training_images(0.1) == 3109  # official validation
    for size, fraction in ((400, 0.1), (7, 0.5), (2, 0.01), (1201, 0.25)):
        held = splits.holdout_indices("x", "train", size, fraction=fraction, seed=0)
        assert len(held) == splits.holdout_size(size, fraction)


def test_test_splits_are_recognised_by_name():
    config = settings.default_data_config()
    assert splits.is_test_split(config, "test")
    assert not splits.is_test_split(config, "validation")
    assert not splits.is_test_split(config, "train")
    config.test_split = "fold5"  # UCF_CC_50: a fold is the test split
    assert splits.is_test_split(config, "fold5") and not splits.is_test_split(config, "fold1")
    assert splits.is_test_split(config, "test[:25]")
