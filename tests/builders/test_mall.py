"""Mall builder on a fake release in the real on-disk format (tiny frames, MATLAB v5 files)."""

import os

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import mall

H, W = 30, 40  # the real frames are 480x640
NUM_FRAMES = 5


def _points(rng, n):
    """MATLAB (x, y): pixel centres at integers, the image spans [0.5, W + 0.5)."""
    return np.stack([rng.uniform(0.6, W + 0.4, n), rng.uniform(0.6, H + 0.4, n)], 1)


def write_release(root, *, num_frames=NUM_FRAMES, seed=0):
    """Writes mall_dataset/{frames/seq_NNNNNN.jpg, mall_gt.mat, perspective_roi.mat}."""
    rng = np.random.default_rng(seed)
    top = os.path.join(root, "mall_dataset")
    os.makedirs(os.path.join(top, "frames"))
    locs = [_points(rng, n) for n in rng.integers(0, 6, num_frames)]
    locs[0] = np.zeros((0, 2))  # a frame with nobody
    locs[1] = np.array([[1.0, 1.0], [0.2, 5.0], [W + 0.5, 3.0], [20.0, 15.0]])  # 2 outside
    for i in range(num_frames):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(top, "frames", f"seq_{i + 1:06d}.jpg"), rgb)
    cells = np.empty((1, num_frames), dtype=object)
    for i, loc in enumerate(locs):
        cells[0, i] = {"loc": loc}
    counts = np.array([[len(loc)] for loc in locs], np.float64)
    scipy.io.savemat(os.path.join(top, "mall_gt.mat"), {"frame": cells, "count": counts})
    mask = np.zeros((H, W), bool)
    mask[::2, ::2] = True  # a pattern only nearest-neighbour resampling keeps at scale 1/2
    mask[:, : W // 4] = False
    pmap = np.tile(np.linspace(0.5, 2.0, H)[:, None], (1, W))
    scipy.io.savemat(
        os.path.join(top, "perspective_roi.mat"),
        {"roi": {"mask": mask, "xi": np.arange(4.0), "yi": np.arange(4.0)}, "pMapN": pmap},
    )
    return dict(top=top, locs=locs, mask=mask, pmap=pmap)


def nonzero(counts):
    """Per-split counters of the metadata without the zero entries."""
    return {split: n for split, n in counts.items() if n}


def build(manual, data_dir, config):
    builder = mall.Mall(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def by_frame(builder, split):
    """Examples of a split keyed by frame number (the stored order is a hash of the keys)."""
    return {int(ex["frame_index"]): ex for ex in builder.as_data_source(split=split)}


def small_config(**kwargs):
    return mall.MallConfig(name="test", sigma=2.0, num_train=2, **kwargs)


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "manual")


def test_builds_splits_points_roi_density(tmp_path, release):
    builder = build(tmp_path / "manual", tmp_path / "data", small_config())
    assert set(builder.info.splits) == {"train", "test"}
    train = builder.as_data_source(split="train")
    test = builder.as_data_source(split="test")
    assert (len(train), len(test)) == (2, NUM_FRAMES - 2)
    examples = [*train, *test]
    assert sorted(e["frame_index"] for e in examples) == list(range(1, NUM_FRAMES + 1))
    for ex in examples:
        i = int(ex["frame_index"])
        assert ex["image_id"] == f"seq_{i:06d}.jpg".encode()  # tfds Text reads back as bytes
        assert ex["image"].shape == (H, W, 3)
        # Expected: MATLAB (x, y) - 0.5, clipped into [0, W) x [0, H).
        expected = release["locs"][i - 1].reshape(-1, 2) - 0.5
        expected = np.clip(expected, 0, [np.nextafter(W, 0), np.nextafter(H, 0)])
        np.testing.assert_allclose(ex["points"], expected, atol=1e-5)
        assert ex["count"] == len(expected)
        np.testing.assert_allclose(ex["density"].sum(), len(expected), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(ex["roi"], release["mask"].astype(np.uint8))
        np.testing.assert_allclose(ex["perspective"], release["pmap"], rtol=1e-6)
        assert ex["distance_label"].shape == (H, W)
    # Points outside the ROI are kept: frame 2's first point (0.5, 0.5) lies left of the ROI.
    frame2 = next(ex for ex in train if ex["frame_index"] == 2)
    np.testing.assert_allclose(frame2["points"][0], [0.5, 0.5])
    assert frame2["count"] == 4 and frame2["roi"][0, 0] == 0
    # Frame 2 (train) has two points outside the image; they were clipped and reported.
    assert nonzero(builder.info.metadata["points_outside_image"]) == {"train": 2}
    assert not nonzero(builder.info.metadata["count_mismatch"])


def test_half_config_resizes_image_points_roi_and_perspective(tmp_path, release):
    cfg = mall.MallConfig(name="half_test", sigma=2.0, num_train=2, max_long_side=W // 2)
    builder = build(tmp_path / "manual", tmp_path / "data", cfg)
    ex = by_frame(builder, "train")[2]
    h, w = H // 2, W // 2
    assert ex["image"].shape == (h, w, 3) and ex["density"].shape == (h, w)
    # Nearest neighbour keeps the 1-pixel ROI grid (bilinear would average it away).
    expected_roi = cv2.resize(
        release["mask"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )
    np.testing.assert_array_equal(ex["roi"], expected_roi)
    assert ex["roi"].sum() > 0
    np.testing.assert_allclose(
        ex["perspective"],
        cv2.resize(release["pmap"].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR),
    )
    pts = (release["locs"][ex["frame_index"] - 1] - 0.5) * 0.5
    pts = np.clip(pts, 0, [np.nextafter(w, 0), np.nextafter(h, 0)])
    np.testing.assert_allclose(ex["points"], pts, atol=1e-5)
    np.testing.assert_allclose(ex["density"].sum(), ex["count"], rtol=1e-4)


def test_registered_configs_and_default_split(tmp_path, release):
    assert [c.name for c in mall.Mall.BUILDER_CONFIGS] == ["full", "half"]
    assert mall.Mall.BUILDER_CONFIGS[0].num_train == 800
    # With the default 800-frame train split, 5 frames leave the test split empty: an error.
    with pytest.raises(io.DataError, match="empty split"):
        build(tmp_path / "manual", tmp_path / "data", "full")


def test_out_of_image_drop_and_error(tmp_path, release):
    builder = build(tmp_path / "manual", tmp_path / "d1", small_config(out_of_image="drop"))
    ex = by_frame(builder, "train")[2]
    assert ex["count"] == 2 and nonzero(builder.info.metadata["points_outside_image"]) == {
        "train": 2
    }
    with pytest.raises(io.DataError, match="outside"):
        build(tmp_path / "manual", tmp_path / "d2", small_config(out_of_image="error"))


def test_count_mismatch_is_reported(tmp_path, release):
    path = os.path.join(release["top"], "mall_gt.mat")
    mat = scipy.io.loadmat(path)
    mat["count"][3, 0] += 1
    scipy.io.savemat(path, {"frame": mat["frame"], "count": mat["count"]})
    builder = build(tmp_path / "manual", tmp_path / "data", small_config())
    assert nonzero(builder.info.metadata["count_mismatch"]) == {"test": 1}
    assert by_frame(builder, "test")[4]["count"] == len(release["locs"][3])


def test_struct_array_layout(tmp_path, release):
    path = os.path.join(release["top"], "mall_gt.mat")
    frame = np.empty((1, NUM_FRAMES), dtype=[("loc", object)])
    for i, loc in enumerate(release["locs"]):
        frame[0, i]["loc"] = loc
    counts = [[len(loc)] for loc in release["locs"]]
    scipy.io.savemat(path, {"frame": frame, "count": np.array(counts, float)})
    builder = build(tmp_path / "manual", tmp_path / "data", small_config())
    assert by_frame(builder, "train")[2]["count"] == 4


@pytest.mark.parametrize(
    "corrupt, match",
    [
        ("image", r"seq_000003\.jpg: corrupt"),
        ("empty_image", r"seq_000004\.jpg: empty image"),
        ("mat_garbage", r"mall_gt\.mat: malformed"),
        ("mat_no_frame", r"mall_gt\.mat: malformed .mat file, none of \['frame'\]"),
        ("loc_shape", r"mall_gt\.mat frame\{2\}\.loc: expected points"),
        ("count_length", r"mall_gt\.mat: malformed .mat file, `count`"),
        ("roi_missing_mask", r"perspective_roi\.mat: malformed .mat file, expected a struct"),
        ("roi_shape", r"seq_000001\.jpg: ROI mask shape"),
        ("extra_image", r"seq_000006\.jpg: image without annotation"),
        ("missing_image", r"seq_000005\.jpg: file not found"),
        ("missing_roi_file", r"perspective_roi\.mat: file not found"),
    ],
)
def test_bad_input_names_the_file(tmp_path, release, corrupt, match):
    top = release["top"]
    gt = os.path.join(top, "mall_gt.mat")
    roi = os.path.join(top, "perspective_roi.mat")
    frames = os.path.join(top, "frames")
    if corrupt == "image":
        with open(os.path.join(frames, "seq_000003.jpg"), "wb") as f:
            f.write(b"\xff\xd8 not a jpeg")
    elif corrupt == "empty_image":
        open(os.path.join(frames, "seq_000004.jpg"), "wb").close()
    elif corrupt == "mat_garbage":
        with open(gt, "wb") as f:
            f.write(b"MATLAB 5.0 MAT-file garbage" * 3)
    elif corrupt == "mat_no_frame":
        scipy.io.savemat(gt, {"count": np.ones((NUM_FRAMES, 1))})
    elif corrupt == "loc_shape":
        mat = scipy.io.loadmat(gt)
        mat["frame"][0, 1] = {"loc": np.ones((3, 1))}
        scipy.io.savemat(gt, {"frame": mat["frame"], "count": mat["count"]})
    elif corrupt == "count_length":
        mat = scipy.io.loadmat(gt)
        scipy.io.savemat(gt, {"frame": mat["frame"], "count": mat["count"][:-1]})
    elif corrupt == "roi_missing_mask":
        scipy.io.savemat(roi, {"roi": {"xi": np.ones(3)}, "pMapN": release["pmap"]})
    elif corrupt == "roi_shape":
        scipy.io.savemat(roi, {"roi": {"mask": np.ones((H + 1, W))}})
    elif corrupt == "extra_image":
        cv2.imwrite(os.path.join(frames, "seq_000006.jpg"), np.zeros((H, W, 3), np.uint8))
    elif corrupt == "missing_image":
        os.remove(os.path.join(frames, "seq_000005.jpg"))
    elif corrupt == "missing_roi_file":
        os.remove(roi)
    with pytest.raises(io.DataError, match=match):
        build(tmp_path / "manual", tmp_path / "data", small_config())


def test_missing_perspective_gives_empty_feature(tmp_path, release):
    roi = os.path.join(release["top"], "perspective_roi.mat")
    scipy.io.savemat(roi, {"roi": {"mask": release["mask"]}})
    builder = build(tmp_path / "manual", tmp_path / "data", small_config())
    ex = builder.as_data_source(split="test")[0]
    assert ex["perspective"].shape == (0, 0)
    np.testing.assert_array_equal(ex["roi"], release["mask"].astype(np.uint8))
