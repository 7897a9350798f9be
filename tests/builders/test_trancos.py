"""TRANCOS builder on a fake release in the real on-disk format (tiny JPEGs, .txt, MATLAB v5)."""

import os

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import trancos

H, W = 24, 32  # the real images are 480x640
SETS = {
    "training.txt": ["image-1-000001.jpg", "image-1-000002.jpg", "image-2-000003.jpg"],
    "validation.txt": ["image-2-000004.jpg", "image-3-000005.jpg"],
    "test.txt": ["image-3-000006.jpg", "image-4-000007.jpg"],
}
SPLIT_OF = {"training.txt": "train", "validation.txt": "validation", "test.txt": "test"}


def write_release(root, *, seed=0):
    """Writes TRANCOS_v3/{images/*.jpg,*.txt,*mask.mat,*dots.png, image_sets/*.txt}."""
    rng = np.random.default_rng(seed)
    top = os.path.join(root, "TRANCOS_v3")
    images = os.path.join(top, "images")
    os.makedirs(images)
    os.makedirs(os.path.join(top, "image_sets"))
    points, masks = {}, {}
    for set_file, names in SETS.items():
        with open(os.path.join(top, "image_sets", set_file), "w") as f:
            f.write("\n".join(names) + "\n")
        for name in names:
            stem = os.path.join(images, name[:-4])
            cv2.imwrite(stem + ".jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            n = int(rng.integers(0, 7))
            # 1-based integer pixel coordinates, tab separated as in the release.
            pts = np.stack([rng.integers(1, W + 1, n), rng.integers(1, H + 1, n)], 1)
            if name == "image-1-000002.jpg":
                pts = np.array([[1, 1], [W, H], [W + 3, 5], [0, 2]])  # two outside the image
            if name == "image-3-000005.jpg":
                pts = np.zeros((0, 2), int)  # an image without vehicles (empty file)
            with open(stem + ".txt", "w") as f:
                f.writelines(f"{x}\t{y}\n" for x, y in pts)
            mask = np.zeros((H, W), bool)
            mask[int(rng.integers(0, H // 2)) :, 3:] = True
            scipy.io.savemat(stem + "mask.mat", {"BW": mask})
            cv2.imwrite(stem + "dots.png", np.zeros((H, W, 3), np.uint8))
            points[name], masks[name] = pts, mask
    # trainval.txt exists in the release but is not read.
    with open(os.path.join(top, "image_sets", "trainval.txt"), "w") as f:
        f.write("\n".join(SETS["training.txt"] + SETS["validation.txt"]) + "\n")
    return dict(top=top, images=images, points=points, masks=masks)


def nonzero(counts):
    """Per-split counters of the metadata without the zero entries."""
    return {split: n for split, n in counts.items() if n}


def build(manual, data_dir, config="full"):
    builder = trancos.Trancos(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def by_name(builder, split):
    return {ex["image_id"].decode(): ex for ex in builder.as_data_source(split=split)}


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "manual")


def test_builds_splits_points_roi_density(tmp_path, release):
    builder = build(tmp_path / "manual", tmp_path / "data")
    assert builder.builder_config.sigma == 10.0
    assert set(builder.info.splits) == {"train", "validation", "test"}
    for set_file, names in SETS.items():
        examples = by_name(builder, SPLIT_OF[set_file])
        assert sorted(examples) == sorted(names)
        for name, ex in examples.items():
            assert ex["image"].shape == (H, W, 3)
            # 1-based pixel i -> centre i - 0.5; outside points clipped into [0, W) x [0, H).
            expected = release["points"][name].reshape(-1, 2) - 0.5
            expected = np.clip(expected, 0, [np.nextafter(W, 0), np.nextafter(H, 0)])
            np.testing.assert_allclose(ex["points"], expected, atol=1e-5)
            assert ex["count"] == len(expected)
            np.testing.assert_allclose(ex["density"].sum(), ex["count"], rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(ex["roi"], release["masks"][name].astype(np.uint8))
    train = by_name(builder, "train")
    # Points outside the ROI are kept: (1, 1) -> (0.5, 0.5) lies left of every mask (x < 3).
    np.testing.assert_allclose(train["image-1-000002.jpg"]["points"][0], [0.5, 0.5])
    assert by_name(builder, "validation")["image-3-000005.jpg"]["count"] == 0
    assert nonzero(builder.info.metadata["points_outside_image"]) == {"train": 2}
    # The report is saved with the data set: a fresh builder reads it back.
    fresh = trancos.Trancos(config="full", data_dir=str(tmp_path / "data"))
    assert fresh.is_prepared()
    assert nonzero(fresh.info.metadata["points_outside_image"]) == {"train": 2}


def test_drop_rule_and_root_without_top_folder(tmp_path, release):
    cfg = trancos.TrancosConfig(name="drop", sigma=4.0, out_of_image="drop")
    builder = build(release["top"], tmp_path / "data", cfg)  # manual dir = TRANCOS_v3 itself
    np.testing.assert_allclose(
        by_name(builder, "train")["image-1-000002.jpg"]["points"], [[0.5, 0.5], [W - 0.5, H - 0.5]]
    )


def test_resize_keeps_roi_binary(tmp_path, release):
    cfg = trancos.TrancosConfig(name="half", sigma=5.0, max_long_side=W // 2)
    ex = by_name(build(tmp_path / "manual", tmp_path / "data", cfg), "test")["image-3-000006.jpg"]
    mask = release["masks"]["image-3-000006.jpg"].astype(np.uint8)
    assert ex["image"].shape == (H // 2, W // 2, 3)
    np.testing.assert_array_equal(
        ex["roi"], cv2.resize(mask, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    )
    np.testing.assert_allclose(ex["density"].sum(), ex["count"], rtol=1e-4, atol=1e-4)


def test_error_rule(tmp_path, release):
    cfg = trancos.TrancosConfig(name="strict", out_of_image="error")
    with pytest.raises(io.DataError, match=r"image-1-000002\.jpg: 2 annotated points lie outside"):
        build(tmp_path / "manual", tmp_path / "data", cfg)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        ("image", r"image-2-000003\.jpg: corrupt"),
        ("missing_image", r"image-4-000007\.jpg: file not found"),
        ("missing_txt", r"image-2-000004\.txt: file not found, image-2-000004\.jpg lacks"),
        ("missing_mask", r"image-3-000006mask\.mat: file not found"),
        ("txt_text", r"image-1-000001\.txt:2: non-numeric"),
        ("txt_one_column", r"image-1-000001\.txt:1: expected at least 2 columns"),
        ("mask_garbage", r"image-2-000004mask\.mat: malformed"),
        ("mask_no_bw", r"image-2-000004mask\.mat: malformed .mat file, none of \['BW'\]"),
        ("mask_shape", r"image-2-000004\.jpg: ROI mask shape"),
        ("empty_split", r"validation\.txt: empty split"),
        ("missing_split", r"test\.txt: file not found"),
        ("duplicate", r"training\.txt:4: image-1-000001\.jpg is listed twice"),
    ],
)
def test_bad_input_names_the_file(tmp_path, release, corrupt, match):
    images, sets = release["images"], os.path.join(release["top"], "image_sets")
    if corrupt == "image":
        with open(os.path.join(images, "image-2-000003.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 truncated")
    elif corrupt == "missing_image":
        os.remove(os.path.join(images, "image-4-000007.jpg"))
    elif corrupt == "missing_txt":
        os.remove(os.path.join(images, "image-2-000004.txt"))
    elif corrupt == "missing_mask":
        os.remove(os.path.join(images, "image-3-000006mask.mat"))
    elif corrupt == "txt_text":
        with open(os.path.join(images, "image-1-000001.txt"), "w") as f:
            f.write("3 4\nx 5\n")
    elif corrupt == "txt_one_column":
        with open(os.path.join(images, "image-1-000001.txt"), "w") as f:
            f.write("3\n")
    elif corrupt == "mask_garbage":
        with open(os.path.join(images, "image-2-000004mask.mat"), "wb") as f:
            f.write(b"not a mat file" * 20)
    elif corrupt == "mask_no_bw":
        scipy.io.savemat(os.path.join(images, "image-2-000004mask.mat"), {"mask": np.ones((H, W))})
    elif corrupt == "mask_shape":
        scipy.io.savemat(os.path.join(images, "image-2-000004mask.mat"), {"BW": np.ones((W, H))})
    elif corrupt == "empty_split":
        open(os.path.join(sets, "validation.txt"), "w").close()
    elif corrupt == "missing_split":
        os.remove(os.path.join(sets, "test.txt"))
    elif corrupt == "duplicate":
        with open(os.path.join(sets, "training.txt"), "a") as f:
            f.write("image-1-000001\n")
    with pytest.raises(io.DataError, match=match):
        build(tmp_path / "manual", tmp_path / "data")
