"""NWPU-Crowd builder on fake files in the release layout (jsons, split lists, no test jsons)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders.nwpu_crowd import NwpuCrowd

# split -> image id -> (height, width, heads, illumination, scene level, stored h, stored w)
LAYOUT = {
    "train": {
        "0001": (520, 600, 4, 0, 1, 520, 600),
        # short side 300 < 512: upscaled by 512/300 -> 512 x round(400 * 1.7067) = 683
        "0002": (300, 400, 3, 1, 1, 512, 683),
        "0003": (512, 530, 0, 2, 0, 512, 530),  # a negative image (scene level 0)
    },
    "validation": {"0004": (530, 512, 2, 3, 1, 530, 512)},
    "test": {"0005": (512, 540, None, 1, 2, 512, 540), "0006": (600, 512, None, 0, 3, 600, 512)},
}
LISTS = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def make_release(root) -> dict:
    truth = {}
    base = os.path.join(root, "NWPU-Crowd")
    for split, images in LAYOUT.items():
        lines = []
        for i, (image_id, (h, w, n, illum, level, _, _)) in enumerate(images.items()):
            fakes.write_image(os.path.join(base, "images", f"{image_id}.jpg"), h, w, seed=i)
            lines.append(f"{image_id} {illum} {level}\n")
            if n is None:  # test: annotations not released
                continue
            points = fakes.random_points(n, h, w, seed=i)
            boxes = [[x - 2, y - 2, x + 2, y + 2] for x, y in points.tolist()]
            fakes.write_json(
                os.path.join(base, "jsons", f"{image_id}.json"),
                {
                    "img_id": f"{image_id}.jpg",
                    "human_num": n,
                    "points": points.tolist(),
                    "boxes": boxes,
                },
            )
            truth[image_id] = points
        fakes.write_text(os.path.join(base, LISTS[split]), "".join(lines))
    return truth


def test_build_splits_labels_and_unannotated_test(tmp_path):
    truth = make_release(tmp_path / "raw")
    builder = fakes.build(NwpuCrowd, tmp_path / "raw", tmp_path / "out")
    assert {s: builder.info.splits[s].num_examples for s in LAYOUT} == {
        "train": 3,
        "validation": 1,
        "test": 2,
    }
    for split, images in LAYOUT.items():
        examples = fakes.read_split(builder, split)
        assert sorted(examples) == sorted(f"{i}.jpg" for i in images)
        for image_id, (h, w, n, illum, level, new_h, new_w) in images.items():
            ex = examples[f"{image_id}.jpg"]
            assert np.asarray(ex["image"]).shape == (new_h, new_w, 3)
            assert int(ex["illumination"]) == illum and int(ex["scene_level"]) == level
            assert bool(ex["has_annotation"]) == (n is not None)
            if n is None:
                fakes.check_example(ex, np.zeros((0, 2)), builder.builder_config)
                assert int(ex["count"]) == 0 and not np.asarray(ex["density"]).any()
            else:
                fakes.check_example(
                    ex, truth[image_id] * [new_w / w, new_h / h], builder.builder_config
                )
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "validation": 0}
    assert builder.info.metadata["points_outside_image"] == {
        "train": 0,
        "validation": 0,
        "test": 0,
    }


def test_human_num_mismatch_and_unlisted_image_are_logged(tmp_path, caplog):
    truth = make_release(tmp_path / "raw")
    base = tmp_path / "raw" / "NWPU-Crowd"
    points = truth["0004"].tolist()
    fakes.write_json(base / "jsons" / "0004.json", {"human_num": 5, "points": points})
    fakes.write_image(base / "images" / "0099.jpg", 512, 512)
    builder = fakes.build(NwpuCrowd, tmp_path / "raw", tmp_path / "out")
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "validation": 1}
    assert "declares 5 heads but annotates 2 points" in caplog.text
    assert "1 images in no split list" in caplog.text
    fakes.check_example(
        fakes.read_split(builder, "validation")["0004.jpg"], truth["0004"], builder.builder_config
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_json", r"0002\.json: annotation file not found for image .*0002\.jpg"),
        ("bad_json", r"0002\.json: malformed JSON"),
        ("json_without_points", r"0002\.json: malformed annotation, no 'points' entry"),
        ("bad_points", r"0002\.json: expected points of shape \[N, 2\]"),
        ("bad_human_num", r"0002\.json: human_num must be an integer"),
        ("bad_boxes", r"0002\.json: expected 'boxes' of shape \[1, 4\] \(x1, y1, x2, y2\)"),
        ("missing_image", r"0002\.jpg: file not found"),
        ("corrupt_image", r"0002\.jpg: corrupt or unreadable image"),
        ("bad_list_line", r"train\.txt:2: expected 'id illumination scene_level'"),
        ("duplicate_id", r"train\.txt:4: image 0001 listed twice"),
        ("empty_list", r"val\.txt: empty split"),
        ("missing_list", r"test\.txt: file not found"),
    ],
)
def test_bad_input_names_the_file(tmp_path, damage, message):
    make_release(tmp_path / "raw")
    base = tmp_path / "raw" / "NWPU-Crowd"
    json_path = base / "jsons" / "0002.json"
    if damage == "missing_json":
        os.remove(json_path)
    elif damage == "bad_json":
        fakes.write_text(json_path, '{"points": [[1, 2],')
    elif damage == "json_without_points":
        fakes.write_json(json_path, {"human_num": 0})
    elif damage == "bad_points":
        fakes.write_json(json_path, {"human_num": 1, "points": [1, 2, 3, 4]})
    elif damage == "bad_human_num":
        fakes.write_json(json_path, {"human_num": 1.5, "points": [[1, 2]]})
    elif damage == "bad_boxes":
        fakes.write_json(json_path, {"human_num": 1, "points": [[1, 2]], "boxes": [[1, 2, 3]]})
    elif damage == "missing_image":
        os.remove(base / "images" / "0002.jpg")
    elif damage == "corrupt_image":
        fakes.corrupt(base / "images" / "0002.jpg")
    elif damage == "bad_list_line":
        fakes.write_text(base / "train.txt", "0001 0 1\n0002 x 1\n")
    elif damage == "duplicate_id":
        fakes.write_text(base / "train.txt", "0001 0 1\n0002 1 1\n0003 2 0\n0001 0 1\n")
    elif damage == "empty_list":
        fakes.write_text(base / "val.txt", "\n")
    elif damage == "missing_list":
        os.remove(base / "test.txt")
    with pytest.raises(DataError, match=message):
        fakes.build(NwpuCrowd, tmp_path / "raw", tmp_path / "out")


def test_head_boxes_are_stored_with_their_points_and_the_original_size(tmp_path):
    truth = make_release(tmp_path / "raw")
    base = tmp_path / "raw" / "NWPU-Crowd"
    # A release before 2020-05-22: no boxes in the json -> NaN boxes, counted.
    fakes.write_json(
        base / "jsons" / "0004.json", {"human_num": 2, "points": truth["0004"].tolist()}
    )
    builder = fakes.build(NwpuCrowd, tmp_path / "raw", tmp_path / "out")
    assert str(builder.info.version) == "1.2.0"
    assert builder.info.metadata["images_without_boxes"] == {"train": 0, "validation": 1}
    train = fakes.read_split(builder, "train")
    for image_id in ("0001", "0002"):
        h, w, n, _, _, new_h, new_w = LAYOUT["train"][image_id]
        ex = train[f"{image_id}.jpg"]
        np.testing.assert_array_equal(ex["original_size"], [h, w])
        # make_release writes (x - 2, y - 2, x + 2, y + 2); 0002 is scaled by 512/300 per axis
        # (683/400 across): the boxes as the points.
        scale = np.array([new_w / w, new_h / h] * 2)
        expected = np.concatenate([truth[image_id] - 2, truth[image_id] + 2], 1) * scale
        np.testing.assert_allclose(ex["boxes"], expected, rtol=1e-5)
        assert len(ex["boxes"]) == len(ex["points"]) == n
    assert np.asarray(train["0003.jpg"]["boxes"]).shape == (0, 4)  # a negative image
    val = fakes.read_split(builder, "validation")["0004.jpg"]
    assert np.asarray(val["boxes"]).shape == (2, 4) and np.isnan(val["boxes"]).all()
    test = fakes.read_split(builder, "test")["0006.jpg"]
    assert np.asarray(test["boxes"]).shape == (0, 4)
    np.testing.assert_array_equal(test["original_size"], [600, 512])
