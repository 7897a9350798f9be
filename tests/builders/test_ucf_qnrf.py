"""UCF-QNRF builder on fake files in the release layout (incl. a MATLAB v7.3 annotation)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders.base import CrowdConfig
from tfds_builders.ucf_qnrf import UcfQnrf

# split -> image -> (height, width, heads, grayscale, v7.3 .mat, stored height, stored width)
LAYOUT = {
    "Train": {
        # short side 120 < 512: upscaled by 512/120 -> 512 x round(160 * 4.2667) = 683
        "img_0001": (120, 160, 5, False, False, 512, 683),
        # long side 2100 > 2048: downscaled by 2048/2100 -> round(585.14) = 585 x 2048
        "img_0002": (600, 2100, 4, False, False, 585, 2048),
        # within the limits, grayscale, no heads: kept at 520 x 700
        "img_0003": (520, 700, 0, True, False, 520, 700),
    },
    "Test": {"img_0001": (530, 600, 3, False, True, 530, 600)},
}

# Config `l2sm`: fit in 1920 x 1080 (long x short side), keep smaller images (no upscaling).
L2SM_LAYOUT = {
    "Train": {
        # landscape 2000 x 1200: x min(1920/2000, 1080/1200) = 0.9 -> 1800 x 1080
        "img_0001": (1200, 2000, 6, False, False, 1080, 1800),
        # portrait 600 x 2100: x 1920/2100 -> 1920 x round(548.57) = 549
        "img_0002": (2100, 600, 4, False, True, 1920, 549),
        # small (short side 120 < 512 is not upscaled here): kept
        "img_0003": (120, 160, 2, True, False, 120, 160),
    },
    # exactly the box: kept
    "Test": {"img_0001": (1080, 1920, 3, False, False, 1080, 1920)},
}


def make_release(root, layout=LAYOUT) -> dict:
    truth = {}
    for split, images in layout.items():
        d = os.path.join(root, "UCF-QNRF_ECCV18", split)
        for i, (stem, (h, w, n, gray, v73, _, _)) in enumerate(images.items()):
            fakes.write_image(os.path.join(d, stem + ".jpg"), h, w, gray=gray, seed=i)
            points = fakes.random_points(n, h, w, seed=i)
            fakes.write_points_mat(os.path.join(d, stem + "_ann.mat"), points, v73=v73)
            truth[(split.lower(), stem + ".jpg")] = points
    return truth


def test_build_resizes_and_scales_points(tmp_path):
    truth = make_release(tmp_path / "raw")
    builder = fakes.build(UcfQnrf, tmp_path / "raw", tmp_path / "out")
    assert builder.builder_config.name == "default"
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 3,
        "test": 1,
    }
    for split, images in LAYOUT.items():
        examples = fakes.read_split(builder, split.lower())
        assert sorted(examples) == sorted(stem + ".jpg" for stem in images)
        for stem, (h, w, _, _, _, new_h, new_w) in images.items():
            ex = examples[stem + ".jpg"]
            assert np.asarray(ex["image"]).shape == (new_h, new_w, 3)
            expected = truth[(split.lower(), stem + ".jpg")] * [new_w / w, new_h / h]
            fakes.check_example(ex, expected, builder.builder_config)
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "test": 0}


def test_l2sm_config_fits_images_in_1920_by_1080(tmp_path):
    truth = make_release(tmp_path / "raw", L2SM_LAYOUT)
    builder = fakes.build(UcfQnrf, tmp_path / "raw", tmp_path / "out", config="l2sm")
    assert builder.builder_config.max_box == (1920, 1080) and builder.builder_config.sigma == 8.0
    for split, images in L2SM_LAYOUT.items():
        examples = fakes.read_split(builder, split.lower())
        assert sorted(examples) == sorted(stem + ".jpg" for stem in images)
        for stem, (h, w, _, _, _, new_h, new_w) in images.items():
            ex = examples[stem + ".jpg"]
            assert np.asarray(ex["image"]).shape == (new_h, new_w, 3)
            assert max(new_h, new_w) <= 1920 and min(new_h, new_w) <= 1080
            expected = truth[(split.lower(), stem + ".jpg")] * [new_w / w, new_h / h]
            fakes.check_example(ex, expected, builder.builder_config)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("corrupt_image", r"img_0002\.jpg: corrupt or unreadable image"),
        ("missing_image", r"img_0002_ann\.mat: annotation file without its image"),
        ("garbage_mat", r"img_0002_ann\.mat: malformed \.mat file"),
        ("garbage_v73", r"img_0002_ann\.mat: malformed \.mat file"),
        ("wrong_key", r"img_0002_ann\.mat: malformed \.mat file, none of \['annPoints'\]"),
        ("nan_points", r"img_0002_ann\.mat: 1 non-finite points"),
        ("missing_ann", r"img_0002_ann\.mat: annotation file not found for image"),
        ("empty_split", r"Test: empty split, no images found"),
        ("no_release", r"no Train/ folder"),
    ],
)
def test_bad_input_names_the_file(tmp_path, damage, message):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "UCF-QNRF_ECCV18" / "Train"
    ann = d / "img_0002_ann.mat"
    if damage == "corrupt_image":
        fakes.corrupt(d / "img_0002.jpg")
    elif damage == "missing_image":
        os.remove(d / "img_0002.jpg")
    elif damage == "garbage_mat":
        fakes.write_text(ann, "MATLAB 5.0 MAT-file, truncated")
    elif damage == "garbage_v73":
        fakes.write_points_mat(ann, np.ones((2, 2)), v73=True)
        with open(ann, "r+b") as f:  # keep the v7.3 header, break the HDF5 part
            f.seek(512)
            f.write(b"\0" * 64)
    elif damage == "wrong_key":
        fakes.write_points_mat(ann, np.ones((2, 2)), key="points")
    elif damage == "nan_points":
        fakes.write_points_mat(ann, np.array([[1.0, 2.0], [np.nan, 3.0]]))
    elif damage == "missing_ann":
        os.remove(ann)
    elif damage == "empty_split":
        test_dir = tmp_path / "raw" / "UCF-QNRF_ECCV18" / "Test"
        for name in os.listdir(test_dir):
            os.remove(test_dir / name)
    elif damage == "no_release":
        os.rename(d, d.parent / "Training")
    with pytest.raises(DataError, match=message):
        fakes.build(UcfQnrf, tmp_path / "raw", tmp_path / "out")


@pytest.mark.parametrize("rule", ["clip", "drop", "error"])
def test_points_outside_the_image(tmp_path, rule):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "UCF-QNRF_ECCV18" / "Test"
    inside = fakes.random_points(3, 530, 600, seed=9)
    outside = np.array([[10.0, 530.0], [10.0, -0.5], [600.0, 600.0]])  # y = H, y < 0, beyond
    fakes.write_points_mat(d / "img_0001_ann.mat", np.concatenate([inside, outside]))
    config = CrowdConfig(
        name=rule, sigma=8.0, max_long_side=2048, min_short_side=512, out_of_image=rule
    )
    if rule == "error":
        with pytest.raises(DataError, match=r"img_0001\.jpg: 3 annotated points lie outside"):
            fakes.build(UcfQnrf, tmp_path / "raw", tmp_path / "out", config=config)
        return
    builder = fakes.build(UcfQnrf, tmp_path / "raw", tmp_path / "out", config=config)
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "test": 3}
    ex = fakes.read_split(builder, "test")["img_0001.jpg"]
    below_h, below_w = np.nextafter(np.float32(530), 0), np.nextafter(np.float32(600), 0)
    clipped = [[10.0, below_h], [10.0, 0.0], [below_w, below_h]]
    fakes.check_example(
        ex, inside if rule == "drop" else np.concatenate([inside, clipped]), builder.builder_config
    )
