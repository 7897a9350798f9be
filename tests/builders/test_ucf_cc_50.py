"""UCF_CC_50 builder on 50 fake grayscale images in the release layout, five folds."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders.ucf_cc_50 import UcfCc50, fold_images

H, W = 20, 26
OUTSIDE = {7: np.array([[-1.0, 3.0], [5.0, H + 2.0]]), 23: np.array([[W + 0.0, 1.0]])}


def make_release(root) -> dict:
    """Writes 1.jpg ... 50.jpg and n_ann.mat; images 7 and 23 have points outside."""
    truth = {}
    for n in range(1, 51):
        fakes.write_image(os.path.join(root, "UCF_CC_50", f"{n}.jpg"), H, W, gray=True, seed=n)
        inside = fakes.random_points(n % 6 + 1, H, W, seed=n)
        points = np.concatenate([inside, OUTSIDE.get(n, np.zeros((0, 2)))])
        fakes.write_points_mat(os.path.join(root, "UCF_CC_50", f"{n}_ann.mat"), points)
        truth[n] = (inside, OUTSIDE.get(n, np.zeros((0, 2))))
    return truth


def test_folds_are_ten_consecutive_images():
    assert fold_images(1) == list(range(1, 11))
    assert fold_images(5) == list(range(41, 51))
    assert sorted(n for k in range(1, 6) for n in fold_images(k)) == list(range(1, 51))


@pytest.mark.parametrize("config", ["clip", "drop"])
def test_build_folds_and_outside_points(tmp_path, config):
    truth = make_release(tmp_path / "raw")
    builder = fakes.build(UcfCc50, tmp_path / "raw", tmp_path / "out", config=config)
    assert builder.builder_config.adaptive and builder.builder_config.out_of_image == config
    # Image 7 (fold 1) has 2 points outside, image 23 (fold 3) has 1.
    assert builder.info.metadata["points_outside_image"] == {
        "fold1": 2,
        "fold2": 0,
        "fold3": 1,
        "fold4": 0,
        "fold5": 0,
    }
    for k in range(1, 6):
        examples = fakes.read_split(builder, f"fold{k}")
        assert sorted(examples) == sorted(f"{n}.jpg" for n in fold_images(k))
        for n in fold_images(k):
            ex = examples[f"{n}.jpg"]
            inside, outside = truth[n]
            if config == "clip":
                hi = np.nextafter(np.float32([W, H]), 0)
                expected = np.concatenate([inside, np.clip(outside, 0, hi)])
            else:
                expected = inside
            fakes.check_example(ex, expected, builder.builder_config)
            # Stored losslessly (PNG): the gray JPEG's pixels in all three channels.
            gray = cv2.imread(os.fspath(tmp_path / "raw" / "UCF_CC_50" / f"{n}.jpg"), 0)
            image = np.asarray(ex["image"])
            assert all(np.array_equal(image[..., c], gray) for c in range(3))
    train = builder.as_data_source(split="fold1+fold2+fold3+fold4")
    assert len(train) == 40


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_image", r"50\.jpg: file not found"),
        ("missing_ann", r"12_ann\.mat: file not found"),
        ("extra_pair", r"files outside the 50-image release would be left out: \['51\.jpg'"),
        ("orphan_ann", r"77_ann\.mat: annotation file without its image"),
        ("garbage_mat", r"12_ann\.mat: malformed \.mat file"),
        ("corrupt_image", r"12\.jpg: corrupt or unreadable image"),
    ],
)
def test_bad_input_names_the_file(tmp_path, damage, message):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "UCF_CC_50"
    if damage == "missing_image":
        os.remove(d / "50.jpg")
    elif damage == "missing_ann":
        os.remove(d / "12_ann.mat")
    elif damage == "extra_pair":
        fakes.write_image(d / "51.jpg", H, W, gray=True)
        fakes.write_points_mat(d / "51_ann.mat", np.ones((1, 2)))
    elif damage == "orphan_ann":
        fakes.write_points_mat(d / "77_ann.mat", np.ones((1, 2)))
    elif damage == "garbage_mat":
        fakes.write_text(d / "12_ann.mat", "garbage")
    elif damage == "corrupt_image":
        fakes.corrupt(d / "12.jpg")
    with pytest.raises(DataError, match=message):
        fakes.build(UcfCc50, tmp_path / "raw", tmp_path / "out")
