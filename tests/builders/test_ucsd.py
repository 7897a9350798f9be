"""UCSD builder on a fake release in the real on-disk format (tiny gray PNGs, MATLAB v5 files)."""

import os

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import ucsd

H, W = 16, 24  # the real frames are 158x238
FRAMES_PER_SEQ = 2  # the real sequences have 200


def write_release(root, *, seed=0):
    """Writes ucsdpeds/vidf/vidf1_33_00X.y/*.png and vidf-cvpr/*.mat for 10 sequences."""
    rng = np.random.default_rng(seed)
    ann = os.path.join(root, "vidf-cvpr")
    os.makedirs(ann)
    gray, locs = {}, {}
    for seq in range(10):
        seq_dir = os.path.join(root, "ucsdpeds", "vidf", f"vidf1_33_{seq:03d}.y")
        os.makedirs(seq_dir)
        cells = np.empty((1, FRAMES_PER_SEQ), dtype=object)
        for i in range(1, FRAMES_PER_SEQ + 1):
            img = rng.integers(0, 256, (H, W), dtype=np.uint8)
            cv2.imwrite(os.path.join(seq_dir, f"vidf1_33_{seq:03d}_f{i:03d}.png"), img)
            n = int(rng.integers(0, 5))
            # (x, y, z) MATLAB coordinates, z = 0 as in the release.
            loc = np.stack([rng.uniform(0.6, W + 0.4, n), rng.uniform(0.6, H + 0.4, n)], 1)
            loc = np.concatenate([loc, np.zeros((n, 1))], 1)
            if (seq, i) == (4, 2):
                loc = np.array([[0.1, 3.0, 0.0], [5.0, 5.0, 0.0]])  # one point left of the image
            cells[0, i - 1] = {"loc": loc, "id": np.arange(n, dtype=float)}
            gray[seq, i], locs[seq, i] = img, loc
        scipy.io.savemat(os.path.join(ann, f"vidf1_33_{seq:03d}_frame_full.mat"), {"frame": cells})
    mask = np.zeros((H, W), np.uint8)
    mask[3:12, 4:20] = 1
    scipy.io.savemat(
        os.path.join(ann, "vidf1_33_roi_mainwalkway.mat"),
        {"roi": {"xi": np.array([4.0, 20.0]), "yi": np.array([3.0, 12.0]), "mask": mask}},
    )
    pmap = np.tile(np.linspace(1.0, 3.0, H)[:, None], (1, W))
    scipy.io.savemat(
        os.path.join(ann, "vidf1_33_dmap3.mat"),
        {"dmap": {"pmapx": pmap, "pmapy": pmap, "pmapxy": pmap}},
    )
    return dict(root=root, ann=ann, gray=gray, locs=locs, mask=mask, pmap=pmap)


def nonzero(counts):
    """Per-split counters of the metadata without the zero entries."""
    return {split: n for split, n in counts.items() if n}


def build(manual, data_dir, config="native"):
    builder = ucsd.Ucsd(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def by_frame(builder, split):
    return {
        (int(ex["sequence"]), int(ex["frame_index"])): ex
        for ex in builder.as_data_source(split=split)
    }


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "manual")


def test_builds_standard_split(tmp_path, release):
    builder = build(tmp_path / "manual", tmp_path / "data")
    assert builder.builder_config.sigma == 1.5
    train, test = by_frame(builder, "train"), by_frame(builder, "test")
    # Sequences 003-006 (frames 601-1400 of the full release) train, the rest test.
    assert sorted({s for s, _ in train}) == [3, 4, 5, 6]
    assert sorted({s for s, _ in test}) == [0, 1, 2, 7, 8, 9]
    assert len(train) == 4 * FRAMES_PER_SEQ and len(test) == 6 * FRAMES_PER_SEQ
    for (seq, i), ex in {**train, **test}.items():
        assert ex["image_id"] == f"vidf1_33_{seq:03d}_f{i:03d}.png".encode()
        # Lossless PNG: the gray frame comes back as three equal channels.
        np.testing.assert_array_equal(
            ex["image"], np.repeat(release["gray"][seq, i][..., None], 3, 2)
        )
        expected = release["locs"][seq, i][:, :2] - 0.5
        expected = np.clip(expected, 0, [np.nextafter(W, 0), np.nextafter(H, 0)])
        np.testing.assert_allclose(ex["points"], expected.reshape(-1, 2), atol=1e-5)
        assert ex["count"] == len(expected)
        np.testing.assert_allclose(ex["density"].sum(), ex["count"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(ex["roi"], release["mask"])
        np.testing.assert_allclose(ex["perspective"], release["pmap"], rtol=1e-6)
    # Points outside the ROI are kept: frame (4, 2) keeps its clipped point (0, 2.5), which lies
    # outside the ROI (rows 3..11, columns 4..19).
    np.testing.assert_allclose(train[4, 2]["points"], [[0.0, 2.5], [4.5, 4.5]])
    assert train[4, 2]["roi"][2, 0] == 0
    assert nonzero(builder.info.metadata["points_outside_image"]) == {"train": 1}


def test_x4_config_upsamples(tmp_path, release):
    x4 = {c.name: c for c in ucsd.Ucsd.BUILDER_CONFIGS}["x4"]
    assert (x4.min_short_side, x4.sigma) == (4 * 158, 4 * 1.5)  # 952x632 frames
    # The same rule on the tiny fake frames: short side 16 -> 64.
    cfg = ucsd.UcsdConfig(name="x4_test", sigma=6.0, min_short_side=4 * H)
    builder = build(tmp_path / "manual", tmp_path / "data", cfg)
    ex = by_frame(builder, "train")[4, 2]
    assert ex["image"].shape == (4 * H, 4 * W, 3)
    np.testing.assert_allclose(ex["points"], [[0.0, 10.0], [18.0, 18.0]], atol=1e-5)
    np.testing.assert_allclose(ex["density"].sum(), 2.0, rtol=1e-4)
    np.testing.assert_array_equal(ex["roi"], np.kron(release["mask"], np.ones((4, 4), np.uint8)))
    assert ex["perspective"].shape == (4 * H, 4 * W)


def test_missing_perspective_gives_empty_feature(tmp_path, release):
    os.remove(os.path.join(release["ann"], "vidf1_33_dmap3.mat"))
    builder = build(tmp_path / "manual", tmp_path / "data")
    assert builder.as_data_source(split="test")[0]["perspective"].shape == (0, 0)


def seq_dir(release, seq):
    return os.path.join(release["root"], "ucsdpeds", "vidf", f"vidf1_33_{seq:03d}.y")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        ("image", r"vidf1_33_005_f002\.png: corrupt"),
        ("annotation_garbage", r"vidf1_33_007_frame_full\.mat: malformed"),
        ("annotation_no_loc", r"vidf1_33_001_frame_full\.mat frame\{1\}: malformed"),
        ("annotation_missing", r"vidf1_33_008_frame_full\.mat: file not found"),
        ("extra_image", r"vidf1_33_002_f003\.png: image without annotation"),
        ("missing_image", r"vidf1_33_009_f002\.png: file not found"),
        ("bad_name", r"frame\.png: unexpected frame name"),
        ("roi_shape", r"vidf1_33_00\d_f001\.png: ROI mask shape"),
        ("dmap_shape", r"vidf1_33_dmap3\.mat: malformed dmap\.pmapxy"),
        ("missing_sequence", r"vidf1_33_006\.y: folder not found"),
    ],
)
def test_bad_input_names_the_file(tmp_path, release, corrupt, match):
    ann = release["ann"]
    if corrupt == "image":
        with open(os.path.join(seq_dir(release, 5), "vidf1_33_005_f002.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n truncated")
    elif corrupt == "annotation_garbage":
        with open(os.path.join(ann, "vidf1_33_007_frame_full.mat"), "wb") as f:
            f.write(b"\x00garbage" * 40)
    elif corrupt == "annotation_no_loc":
        cells = np.empty((1, FRAMES_PER_SEQ), dtype=object)
        for i in range(FRAMES_PER_SEQ):
            cells[0, i] = {"id": np.ones(2)}
        scipy.io.savemat(os.path.join(ann, "vidf1_33_001_frame_full.mat"), {"frame": cells})
    elif corrupt == "annotation_missing":
        os.remove(os.path.join(ann, "vidf1_33_008_frame_full.mat"))
    elif corrupt == "extra_image":
        cv2.imwrite(os.path.join(seq_dir(release, 2), "vidf1_33_002_f003.png"), np.zeros((H, W)))
    elif corrupt == "missing_image":
        os.remove(os.path.join(seq_dir(release, 9), "vidf1_33_009_f002.png"))
    elif corrupt == "bad_name":
        cv2.imwrite(os.path.join(seq_dir(release, 0), "frame.png"), np.zeros((H, W)))
    elif corrupt == "roi_shape":
        scipy.io.savemat(
            os.path.join(ann, "vidf1_33_roi_mainwalkway.mat"), {"roi": {"mask": np.ones((H, 3))}}
        )
        os.remove(os.path.join(ann, "vidf1_33_dmap3.mat"))
    elif corrupt == "dmap_shape":
        scipy.io.savemat(os.path.join(ann, "vidf1_33_dmap3.mat"), {"dmap": {"pmapxy": np.ones(3)}})
    elif corrupt == "missing_sequence":
        for name in os.listdir(seq_dir(release, 6)):
            os.remove(os.path.join(seq_dir(release, 6), name))
        os.rmdir(seq_dir(release, 6))
    with pytest.raises(io.DataError, match=match):
        build(tmp_path / "manual", tmp_path / "data")


def test_release_without_frames_folder(tmp_path):
    os.makedirs(tmp_path / "manual" / "vidf-cvpr")
    with pytest.raises(io.DataError, match=r"vidf1_33_000\.y: folder not found"):
        build(tmp_path / "manual", tmp_path / "data")
