"""JHU-Crowd++ builder on fake files in the release layout (gt txt, image_labels.txt)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders.base import CrowdConfig
from tfds_builders.jhu_crowd import DENSITY_LEVELS, WEATHER, JhuCrowd, density_level

# split dir -> image id -> (height, width, heads, scene, weather, distractor, stored h, stored w)
LAYOUT = {
    "train": {
        "0001": (520, 560, 3, "marathon", 0, 0, 520, 560),
        # short side 256 < 512: upscaled by 2 -> 512 x 640
        "0002": (256, 320, 60, "stadium", 2, 0, 512, 640),
        "0003": (512, 512, 0, "water", 3, 1, 512, 512),  # a distractor without heads
    },
    "val": {"0004": (540, 520, 51, "street", 1, 0, 540, 520)},
    "test": {"0005": (512, 600, 2, "protest", 0, 0, 512, 600)},
}
SPLITS = {"train": "train", "val": "validation", "test": "test"}


def gt_text(points, rng) -> str:
    lines = []
    for x, y in np.round(points).astype(int).tolist():
        w, h = rng.integers(2, 20, 2)
        lines.append(f"{x} {y} {w} {h} {rng.integers(1, 4)} {rng.integers(0, 2)}\n")
    return "".join(lines)


def make_release(root) -> dict:
    truth = {}
    rng = np.random.default_rng(0)
    for split, images in LAYOUT.items():
        d = os.path.join(root, "jhu_crowd_v2.0", split)
        labels = []
        for i, (image_id, (h, w, n, scene, weather, distractor, _, _)) in enumerate(images.items()):
            fakes.write_image(os.path.join(d, "images", f"{image_id}.jpg"), h, w, seed=i)
            # Integer pixel positions, as in the release (x < W, y < H).
            points = np.floor(fakes.random_points(n, h, w, seed=i))
            fakes.write_text(os.path.join(d, "gt", f"{image_id}.txt"), gt_text(points, rng))
            labels.append(f"{image_id},{n},{scene},{weather},{distractor}\n")
            truth[image_id] = points
        fakes.write_text(os.path.join(d, "image_labels.txt"), "".join(labels))
    return truth


def test_density_levels():
    # JHU-Crowd++ categories: low 0-50, medium 51-500, high > 500.
    assert [density_level(c) for c in (0, 50, 51, 500, 501)] == [0, 0, 1, 1, 2]


def test_build_splits_and_labels(tmp_path):
    truth = make_release(tmp_path / "raw")
    builder = fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out")
    assert {s: builder.info.splits[s].num_examples for s in SPLITS.values()} == {
        "train": 3,
        "validation": 1,
        "test": 1,
    }
    assert builder.info.features["weather"].names == list(WEATHER)
    assert builder.info.features["density_level"].names == list(DENSITY_LEVELS)
    for split, images in LAYOUT.items():
        examples = fakes.read_split(builder, SPLITS[split])
        assert sorted(examples) == sorted(f"{i}.jpg" for i in images)
        for image_id, (h, w, n, scene, weather, distractor, new_h, new_w) in images.items():
            ex = examples[f"{image_id}.jpg"]
            assert np.asarray(ex["image"]).shape == (new_h, new_w, 3)
            fakes.check_example(
                ex, truth[image_id] * [new_w / w, new_h / h], builder.builder_config
            )
            assert int(ex["weather"]) == weather and bool(ex["distractor"]) == bool(distractor)
            scene_type = ex["scene_type"]
            assert (scene_type.decode() if isinstance(scene_type, bytes) else scene_type) == scene
            assert int(ex["density_level"]) == {0: 0, 2: 0, 3: 0, 51: 1, 60: 1}[n]
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "validation": 0, "test": 0}


def test_total_count_mismatch_is_logged(tmp_path, caplog):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "jhu_crowd_v2.0" / "test"
    fakes.write_text(d / "image_labels.txt", "0005,7,protest,0,0\n")
    builder = fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out")
    assert builder.info.metadata["count_mismatch"]["test"] == 1
    assert "declares 7 heads but annotates 2 points" in caplog.text


@pytest.mark.parametrize("rule", ["clip", "drop", "error"])
def test_points_outside_the_image(tmp_path, rule):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "jhu_crowd_v2.0" / "val"
    fakes.write_text(d / "gt" / "0004.txt", "3 4 5 5 1 0\n520 10 5 5 1 0\n-3 600 5 5 2 1\n")
    fakes.write_text(d / "image_labels.txt", "0004,3,street,1,0\n")
    config = CrowdConfig(
        name=rule, sigma=8.0, max_long_side=2048, min_short_side=512, out_of_image=rule
    )
    if rule == "error":
        with pytest.raises(DataError, match=r"0004\.jpg: 2 annotated points lie outside"):
            fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out", config=config)
        return
    builder = fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out", config=config)
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "validation": 2, "test": 0}
    ex = fakes.read_split(builder, "validation")["0004.jpg"]
    w_in, h_in = np.nextafter(np.float32(520), 0), np.nextafter(np.float32(540), 0)
    clipped = [[3, 4], [w_in, 10], [0, h_in]]
    fakes.check_example(ex, [[3, 4]] if rule == "drop" else clipped, builder.builder_config)
    assert int(ex["density_level"]) == 0  # 3 annotated heads


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_gt", r"gt/0002\.txt: annotation file not found for image"),
        ("short_gt_line", r"gt/0002\.txt:2: expected at least 6 columns, got 2"),
        ("text_in_gt", r"gt/0002\.txt:1: non-numeric value"),
        ("orphan_gt", r"gt/0009\.txt: annotation file without its image"),
        ("missing_label_line", r"image_labels\.txt: no line for image 0003"),
        ("extra_label_line", r"image_labels\.txt: lists images not in .*images: \['0009'\]"),
        ("bad_label_line", r"image_labels\.txt:1: expected 'id,count,scene,weather,distractor'"),
        ("weather_out_of_range", r"image_labels\.txt:1: label out of range"),
        ("missing_labels_file", r"val/image_labels\.txt: file not found"),
        ("corrupt_image", r"0002\.jpg: corrupt or unreadable image"),
        ("empty_split", r"test/images: empty split, no images found"),
    ],
)
def test_bad_input_names_the_file(tmp_path, damage, message):
    make_release(tmp_path / "raw")
    d = tmp_path / "raw" / "jhu_crowd_v2.0" / "train"
    labels = d / "image_labels.txt"
    if damage == "missing_gt":
        os.remove(d / "gt" / "0002.txt")
    elif damage == "short_gt_line":
        fakes.write_text(d / "gt" / "0002.txt", "1 2 3 4 1 0\n5 6\n")
    elif damage == "text_in_gt":
        fakes.write_text(d / "gt" / "0002.txt", "x y w h o b\n")
    elif damage == "orphan_gt":
        fakes.write_text(d / "gt" / "0009.txt", "1 2 3 4 1 0\n")
    elif damage == "missing_label_line":
        fakes.write_text(labels, "0001,3,marathon,0,0\n0002,60,stadium,2,0\n")
    elif damage == "extra_label_line":
        with open(labels, "a", encoding="utf-8") as f:
            f.write("0009,1,street,0,0\n")
    elif damage == "bad_label_line":
        fakes.write_text(labels, "0001;3;marathon;0;0\n")
    elif damage == "weather_out_of_range":
        fakes.write_text(labels, "0001,3,marathon,7,0\n")
    elif damage == "missing_labels_file":
        os.remove(d.parent / "val" / "image_labels.txt")
    elif damage == "corrupt_image":
        fakes.corrupt(d / "images" / "0002.jpg")
    elif damage == "empty_split":
        test_dir = d.parent / "test"
        for sub in ("images", "gt"):
            for name in os.listdir(test_dir / sub):
                os.remove(test_dir / sub / name)
        fakes.write_text(test_dir / "image_labels.txt", "")
    with pytest.raises(DataError, match=message):
        fakes.build(JhuCrowd, tmp_path / "raw", tmp_path / "out")
