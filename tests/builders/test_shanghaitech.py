"""ShanghaiTech builder on fake files in the release layout."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import scipy.io

from crowdjax.data.io import DataError
from crowdjax.data.labels import density_map
from tests.builders import fakes
from tfds_builders.base import CrowdConfig
from tfds_builders.shanghaitech import ShanghaiTech, part_of

H, W = 24, 32
# part -> split -> {image number: number of heads}
LAYOUT = {
    "B": {"train": {1: 5, 2: 0, 10: 7}, "test": {3: 4, 4: 1}},
    "A": {"train": {1: 6, 2: 3}, "test": {1: 2}},
}


def make_release(root, parts=("A", "B")) -> dict:
    """Writes part_{A,B}/{train,test}_data; returns {(part, split, image_id): points}."""
    truth = {}
    for part in parts:
        for split, images in LAYOUT[part].items():
            d = os.path.join(root, f"part_{part}", f"{split}_data")
            for n, heads in images.items():
                seed = 100 * (part == "A") + 10 * (split == "test") + n
                fakes.write_image(os.path.join(d, "images", f"IMG_{n}.jpg"), H, W, seed=seed)
                points = fakes.random_points(heads, H, W, seed=seed)
                fakes.write_shanghaitech_mat(
                    os.path.join(d, "ground-truth", f"GT_IMG_{n}.mat"), points
                )
                truth[(part, split, f"IMG_{n}.jpg")] = points
    return truth


def test_part_b_from_root(tmp_path):
    truth = make_release(tmp_path / "raw")
    builder = fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config="part_b")
    assert builder.builder_config.sigma == 8.0 and not builder.builder_config.adaptive
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 3,
        "test": 2,
    }
    for split in ("train", "test"):
        examples = fakes.read_split(builder, split)
        assert sorted(examples) == sorted(f"IMG_{n}.jpg" for n in LAYOUT["B"][split])
        for image_id, ex in examples.items():
            fakes.check_example(ex, truth[("B", split, image_id)], builder.builder_config)
            assert np.asarray(ex["image"]).shape == (H, W, 3)
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "test": 0}
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "test": 0}


def test_part_a_from_part_dir_adaptive(tmp_path):
    truth = make_release(tmp_path / "raw", parts=("A",))
    builder = fakes.build(
        ShanghaiTech, tmp_path / "raw" / "part_A", tmp_path / "out", config="part_a"
    )
    assert builder.builder_config.adaptive
    examples = fakes.read_split(builder, "train")
    assert sorted(examples) == ["IMG_1.jpg", "IMG_2.jpg"]
    for image_id, ex in examples.items():
        fakes.check_example(ex, truth[("A", "train", image_id)], builder.builder_config)
    # Adaptive kernels differ from a fixed sigma-8 map of the same points.
    ex = examples["IMG_1.jpg"]
    fixed = density_map(np.asarray(ex["points"]), (H, W), sigma=8.0)
    assert not np.allclose(np.asarray(ex["density"]), fixed, atol=1e-4)
    adaptive = density_map(np.asarray(ex["points"]), (H, W), adaptive=True, beta=0.3, k=3)
    fakes.assert_stored_density(ex["density"], adaptive)


def test_wrong_part_dir_is_an_error(tmp_path):
    make_release(tmp_path / "raw", parts=("B",))
    with pytest.raises(DataError, match="this is part B, not part A"):
        fakes.build(ShanghaiTech, tmp_path / "raw" / "part_B", tmp_path / "out", config="part_a")
    with pytest.raises(DataError, match="neither a ShanghaiTech root"):
        fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out2", config="part_a")


def test_config_names_select_the_part():
    assert part_of(CrowdConfig(name="part_b_s15")) == "b"
    assert part_of(CrowdConfig(name="part_a")) == "a"
    with pytest.raises(ValueError, match="part_a or part_b"):
        part_of(CrowdConfig(name="b"))


def _split_dir(root, split="train"):
    return os.path.join(root, "part_B", f"{split}_data")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("corrupt_image", r"IMG_2\.jpg: corrupt or unreadable image"),
        ("garbage_mat", r"GT_IMG_2\.mat: malformed \.mat file"),
        ("wrong_key_mat", r"GT_IMG_2\.mat: malformed \.mat file, none of \['image_info'\]"),
        ("no_location", r"GT_IMG_2\.mat: malformed \.mat file, image_info has no struct"),
        ("bad_points", r"GT_IMG_2\.mat: expected points of shape \[N, 2\]"),
        ("missing_ann", r"GT_IMG_2\.mat: annotation file not found for image .*IMG_2\.jpg"),
        ("orphan_ann", r"GT_IMG_99\.mat: annotation file without its image"),
        ("empty_split", r"images: empty split, no images found"),
        ("missing_split", r"test_data: split directory not found"),
    ],
)
def test_bad_input_names_the_file(tmp_path, damage, message):
    make_release(tmp_path / "raw", parts=("B",))
    d = _split_dir(tmp_path / "raw")
    gt = os.path.join(d, "ground-truth", "GT_IMG_2.mat")
    if damage == "corrupt_image":
        fakes.corrupt(os.path.join(d, "images", "IMG_2.jpg"))
    elif damage == "garbage_mat":
        fakes.write_text(gt, "not a mat file at all")
    elif damage == "wrong_key_mat":
        fakes.write_points_mat(gt, np.zeros((2, 2)), key="points")
    elif damage == "no_location":
        scipy.io.savemat(gt, {"image_info": np.array([[np.float64(3.0)]])})
    elif damage == "bad_points":
        fakes.write_shanghaitech_mat(gt, [])
        mat = scipy.io.loadmat(gt)
        mat["image_info"][0, 0][0, 0]["location"] = np.zeros((3, 1))
        scipy.io.savemat(gt, {"image_info": mat["image_info"]})
    elif damage == "missing_ann":
        os.remove(gt)
    elif damage == "orphan_ann":
        fakes.write_shanghaitech_mat(os.path.join(d, "ground-truth", "GT_IMG_99.mat"), [])
    elif damage == "empty_split":
        for sub in ("images", "ground-truth"):
            for name in os.listdir(os.path.join(d, sub)):
                os.remove(os.path.join(d, sub, name))
    elif damage == "missing_split":
        shutil.rmtree(_split_dir(tmp_path / "raw", "test"))
    with pytest.raises(DataError, match=message):
        fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config="part_b")


@pytest.mark.parametrize("rule", ["clip", "drop", "error"])
def test_points_outside_the_image(tmp_path, rule):
    make_release(tmp_path / "raw", parts=("B",))
    d = _split_dir(tmp_path / "raw")
    inside = fakes.random_points(3, H, W, seed=5)
    outside = np.array([[-2.0, 5.0], [W + 0.5, 3.0]])  # left of and right of the image
    fakes.write_shanghaitech_mat(
        os.path.join(d, "ground-truth", "GT_IMG_2.mat"), np.concatenate([inside, outside])
    )
    config = CrowdConfig(name=f"part_b_{rule}", sigma=8.0, out_of_image=rule)
    if rule == "error":
        with pytest.raises(DataError, match=r"IMG_2\.jpg: 2 annotated points lie outside"):
            fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config=config)
        return
    builder = fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config=config)
    assert builder.info.metadata["points_outside_image"] == {"train": 2, "test": 0}
    ex = fakes.read_split(builder, "train")["IMG_2.jpg"]
    if rule == "drop":
        expected = inside
    else:  # Clipped to the border pixels: x = 0 and x just below W.
        expected = np.concatenate([inside, [[0.0, 5.0], [np.nextafter(np.float32(W), 0), 3.0]]])
    fakes.check_example(ex, expected, builder.builder_config)
    # The metadata survives a reload from disk.
    reloaded = ShanghaiTech(config=config, data_dir=os.fspath(tmp_path / "out"))
    assert reloaded.info.metadata["points_outside_image"] == {"train": 2, "test": 0}


def test_declared_number_mismatch_keeps_points(tmp_path, caplog):
    truth = make_release(tmp_path / "raw", parts=("B",))
    d = _split_dir(tmp_path / "raw", "test")
    fakes.write_shanghaitech_mat(
        os.path.join(d, "ground-truth", "GT_IMG_3.mat"), truth[("B", "test", "IMG_3.jpg")], number=9
    )
    builder = fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config="part_b")
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "test": 1}
    ex = fakes.read_split(builder, "test")["IMG_3.jpg"]
    fakes.check_example(ex, truth[("B", "test", "IMG_3.jpg")], builder.builder_config)
    assert "declares 9 heads but annotates 4 points" in caplog.text


def test_512_configs_halve_part_b_and_keep_the_counts(tmp_path):
    """part_b_512: a 1024-wide part B image is stored 512 wide, its points halved, its count
    kept, its kernel sigma 4 px (8 px at full size); part_a_512 keeps part A's adaptive kernels."""
    configs = {c.name: c for c in ShanghaiTech.BUILDER_CONFIGS}
    assert configs["part_a_512"].adaptive and configs["part_a_512"].max_long_side == 512
    d = os.path.join(tmp_path, "raw", "part_B", "train_data")
    points = fakes.random_points(6, 40, 1024, seed=1)
    fakes.write_image(os.path.join(d, "images", "IMG_1.jpg"), 40, 1024, seed=1)
    fakes.write_shanghaitech_mat(os.path.join(d, "ground-truth", "GT_IMG_1.mat"), points)
    test_dir = os.path.join(tmp_path, "raw", "part_B", "test_data")
    fakes.write_image(os.path.join(test_dir, "images", "IMG_2.jpg"), 24, 32, seed=2)
    fakes.write_shanghaitech_mat(os.path.join(test_dir, "ground-truth", "GT_IMG_2.mat"), [])
    builder = fakes.build(ShanghaiTech, tmp_path / "raw", tmp_path / "out", config="part_b_512")
    assert builder.builder_config.sigma == 4.0
    ex = fakes.read_split(builder, "train")["IMG_1.jpg"]
    assert np.asarray(ex["image"]).shape == (20, 512, 3)
    np.testing.assert_allclose(np.asarray(ex["points"]), points * 0.5, rtol=1e-6)
    assert int(ex["count"]) == 6
    want = density_map(points * 0.5, (20, 512), sigma=4.0)
    fakes.assert_stored_density(ex["density"], want)
    # A small image (long side under 512) is stored as it is.
    assert np.asarray(fakes.read_split(builder, "test")["IMG_2.jpg"]["image"]).shape == (24, 32, 3)
