"""GCC builder on a fake release in the real on-disk format (scene folders with pngs/ and jsons/
(row, col) heads, mats/ structs, txt_list/ split lists of six fields)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io

from crowdjax.data.io import DataError
from tests.builders import fakes
from tfds_builders import gcc

H, W = 24, 40  # the real frames are 1080x1920
# scene -> frame name -> (heads, crowd_level, hour, weather)
SCENES = {
    "scene_00_0": {"1534540881": (3, 2, 13, 0), "1534575913": (0, 0, 22, 6)},
    "scene_00_1": {"1534541000": (5, 4, 7, 3)},
    "scene_01_0": {"1534600001": (2, 1, 1, 2), "1534600002": (4, 8, 18, 5)},
}
# protocol prefix -> split -> frames; the folder field takes the forms of the lists in the wild
LISTS = {
    "": {
        "train": [("/scene_00_0", "1534540881"), ("/scene_00_1", "1534541000")],
        "test": [("/scene_00_0", "1534575913"), ("/scene_01_0", "1534600001")],
    },
    "cross_camera_": {
        "train": [("scene_00_0", "1534540881"), ("scene_00_0", "1534575913")],
        "test": [("scene_00_1", "1534541000")],
    },
    "cross_location_": {
        "train": [("GCC/scene_00_0", "1534540881"), ("GCC/scene_00_1", "1534541000")],
        "test": [("GCC/scene_01_0", "1534600001"), ("GCC/scene_01_0", "1534600002")],
    },
}


def _rows_cols(rng, n):
    """Integer 0-based (row, col) pixel indices, as the labeler writes them."""
    return np.stack([rng.integers(0, H, n), rng.integers(0, W, n)], 1)


def list_line(folder, name, counts=None):
    scene = folder.rsplit("/", 1)[-1]
    n, level, hour, weather = SCENES[scene][name]
    count = n if counts is None else counts
    return f"{level} {hour} {weather} {folder} {name} {count}\n"


def make_release(root, *, lists_in_root=False, height=H, width=W) -> dict:
    """Writes GCC/{scene_*/pngs, scene_*/jsons, txt_list/*.txt}; returns {(scene, name): rc}."""
    rng = np.random.default_rng(0)
    base = os.path.join(root, "GCC")
    truth = {}
    for s, (scene, frames) in enumerate(SCENES.items()):
        for f, (name, (n, *_)) in enumerate(frames.items()):
            fakes.write_image(
                os.path.join(base, scene, "pngs", f"{name}.png"), height, width, seed=10 * s + f
            )
            rc = _rows_cols(rng, n) * [height // H, width // W]
            fakes.write_json(
                os.path.join(base, scene, "jsons", f"{name}.json"),
                {
                    "image_info": rc.tolist(),
                    "weather": "CLEAR",
                    "timeInfo": [12, 30],
                    "roi": [[1.0, 2.0], [3.0, 4.0], [5.0, 1.0]],
                    "camera": {"location": [0.0, 0.0, 0.0], "rotation": [0.0] * 3, "fov": 50.0},
                },
            )
            truth[(scene, name)] = rc
    list_dir = base if lists_in_root else os.path.join(base, "txt_list")
    for protocol, splits in LISTS.items():
        for split, frames in splits.items():
            text = "".join(list_line(folder, name) for folder, name in frames)
            fakes.write_text(os.path.join(list_dir, f"{protocol}{split}_list.txt"), text)
    return truth


def config(protocol="", **kwargs):
    return gcc.GccConfig(name=f"test{protocol}", protocol=protocol, sigma=1.5, **kwargs)


def expected_points(rc, scale=1.0):
    """(x, y) = (col, row) + 0.5, scaled with the image."""
    return (np.asarray(rc, np.float64).reshape(-1, 2)[:, ::-1] + 0.5) * scale


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "raw")


@pytest.mark.parametrize("protocol", list(LISTS))
def test_splits_follow_the_protocol_lists(tmp_path, release, protocol):
    builder = fakes.build(gcc.Gcc, tmp_path / "raw", tmp_path / "out", config=config(protocol))
    assert set(builder.info.splits) == {"train", "test"}
    for split, frames in LISTS[protocol].items():
        examples = fakes.read_split(builder, split)
        want = {f"{folder.rsplit('/', 1)[-1]}/{name}.png" for folder, name in frames}
        assert set(examples) == want
        for folder, name in frames:
            scene = folder.rsplit("/", 1)[-1]
            ex = examples[f"{scene}/{name}.png"]
            n, level, hour, weather = SCENES[scene][name]
            assert np.asarray(ex["image"]).shape == (H, W, 3)
            fakes.check_example(ex, expected_points(release[(scene, name)]), builder.builder_config)
            assert int(ex["count"]) == n
            assert (int(ex["crowd_level"]), int(ex["hour"]), int(ex["weather"])) == (
                level,
                hour,
                weather,
            )
            assert ex["scene"] == scene.encode()
    assert builder.info.metadata["count_mismatch"] == {"train": 0, "test": 0}
    assert builder.info.metadata["points_outside_image"] == {"train": 0, "test": 0}


def test_registered_configs_halve_full_frames(tmp_path):
    assert [c.name for c in gcc.Gcc.BUILDER_CONFIGS] == ["random", "cross_camera", "cross_location"]
    assert gcc.Gcc.DEFAULT_CONFIG_NAME == "random"
    assert [gcc.list_names(c)["test"] for c in gcc.Gcc.BUILDER_CONFIGS] == [
        "test_list.txt",
        "cross_camera_test_list.txt",
        "cross_location_test_list.txt",
    ]
    # Two real-size frames only (one per split of a 2-line random protocol).
    truth = make_release(tmp_path / "raw", height=1080, width=1920)
    lists = tmp_path / "raw" / "GCC" / "txt_list"
    fakes.write_text(lists / "train_list.txt", list_line("/scene_00_0", "1534540881"))
    fakes.write_text(lists / "test_list.txt", list_line("/scene_00_1", "1534541000"))
    builder = fakes.build(gcc.Gcc, tmp_path / "raw", tmp_path / "out", config="random")
    assert builder.builder_config.sigma == 4.0
    for split, key in (
        ("train", ("scene_00_0", "1534540881")),
        ("test", ("scene_00_1", "1534541000")),
    ):
        ex = fakes.read_split(builder, split)[f"{key[0]}/{key[1]}.png"]
        assert np.asarray(ex["image"]).shape == (540, 960, 3)
        fakes.check_example(ex, expected_points(truth[key], 0.5), builder.builder_config)


def test_lists_in_the_release_folder_and_mat_annotations(tmp_path):
    truth = make_release(tmp_path / "raw", lists_in_root=True)
    scene_dir = tmp_path / "raw" / "GCC" / "scene_00_1"
    os.remove(scene_dir / "jsons" / "1534541000.json")
    # mats/NAME.mat as the labeler writes it: image_info struct with location (row, col), number.
    rc = truth[("scene_00_1", "1534541000")]
    info = np.array(
        (rc.astype(int), np.array([[len(rc)]])), dtype=[("location", "O"), ("number", "O")]
    )
    os.makedirs(scene_dir / "mats")
    scipy.io.savemat(scene_dir / "mats" / "1534541000.mat", {"image_info": info})
    builder = fakes.build(gcc.Gcc, tmp_path / "raw" / "GCC", tmp_path / "out", config=config())
    ex = fakes.read_split(builder, "train")["scene_00_1/1534541000.png"]
    fakes.check_example(ex, expected_points(rc), builder.builder_config)


def test_count_mismatch_outside_points_and_unlisted_frames(tmp_path, release, caplog):
    base = tmp_path / "raw" / "GCC"
    fakes.write_text(
        base / "txt_list" / "train_list.txt",
        list_line("/scene_00_0", "1534540881", counts=7) + list_line("/scene_00_1", "1534541000"),
    )
    rc = release[("scene_00_1", "1534541000")].tolist() + [[H + 3, 2]]  # one head below the frame
    fakes.write_json(base / "scene_00_1" / "jsons" / "1534541000.json", {"image_info": rc})
    builder = fakes.build(gcc.Gcc, tmp_path / "raw", tmp_path / "out", config=config())
    assert builder.info.metadata["count_mismatch"] == {"train": 2, "test": 0}
    assert builder.info.metadata["points_outside_image"] == {"train": 1, "test": 0}
    assert "declares 7 heads but annotates 3 points" in caplog.text
    assert "1 frames in no split list" in caplog.text  # scene_01_0/1534600002 (random protocol)
    ex = fakes.read_split(builder, "train")["scene_00_1/1534541000.png"]
    clipped = expected_points(rc)
    clipped[-1, 1] = np.nextafter(np.float32(H), 0)
    fakes.check_example(ex, clipped, builder.builder_config)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("bad_json", r"scene_00_1/jsons/1534541000\.json: malformed JSON"),
        ("json_without_points", r"1534541000\.json: malformed annotation, no 'image_info'"),
        ("bad_points", r"1534541000\.json image_info: expected points of shape \[N, 2\]"),
        ("no_annotation", r"jsons/1534541000\.json: annotation file not found \(nor .*mats/"),
        ("bad_mat", r"mats/1534541000\.mat: malformed \.mat file"),
        ("missing_image", r"scene_00_1/pngs/1534541000\.png: file not found"),
        ("missing_scene", r"scene_07_2/pngs/1534541000\.png: file not found"),
        ("corrupt_image", r"1534541000\.png: corrupt or unreadable image"),
        ("short_line", r"train_list\.txt:2: expected 'crowd_level time weather folder name count'"),
        ("bad_label", r"train_list\.txt:1: crowd_level, time, weather and count must be integers"),
        ("duplicate", r"train_list\.txt:3: frame scene_00_0/1534540881 listed twice"),
        ("empty_list", r"test_list\.txt: empty split"),
        ("missing_test_list", r"test_list\.txt: file not found"),
        ("missing_train_list", r"no txt_list/train_list\.txt"),
    ],
)
def test_bad_input_names_the_file(tmp_path, release, damage, message):
    base = tmp_path / "raw" / "GCC"
    json_path = base / "scene_00_1" / "jsons" / "1534541000.json"
    lists = base / "txt_list"
    good = list_line("/scene_00_0", "1534540881") + list_line("/scene_00_1", "1534541000")
    if damage == "bad_json":
        fakes.write_text(json_path, '{"image_info": [[1, 2],')
    elif damage == "json_without_points":
        fakes.write_json(json_path, {"weather": "CLEAR"})
    elif damage == "bad_points":
        fakes.write_json(json_path, {"image_info": [1, 2, 3]})
    elif damage in ("no_annotation", "bad_mat"):
        os.remove(json_path)
        if damage == "bad_mat":
            fakes.write_text(base / "scene_00_1" / "mats" / "1534541000.mat", "MATLAB garbage")
    elif damage == "missing_image":
        os.remove(base / "scene_00_1" / "pngs" / "1534541000.png")
    elif damage == "missing_scene":
        fakes.write_text(lists / "train_list.txt", good.replace("scene_00_1", "scene_07_2"))
    elif damage == "corrupt_image":
        fakes.corrupt(base / "scene_00_1" / "pngs" / "1534541000.png")
    elif damage == "short_line":
        fakes.write_text(lists / "train_list.txt", good.rsplit(" ", 1)[0] + "\n")
    elif damage == "bad_label":
        fakes.write_text(lists / "train_list.txt", "x" + good[1:])
    elif damage == "duplicate":
        fakes.write_text(lists / "train_list.txt", good + list_line("scene_00_0", "1534540881"))
    elif damage == "empty_list":
        fakes.write_text(lists / "test_list.txt", "\n")
    elif damage == "missing_test_list":
        os.remove(lists / "test_list.txt")
    elif damage == "missing_train_list":
        os.remove(lists / "train_list.txt")
    with pytest.raises(DataError, match=message):
        fakes.build(gcc.Gcc, tmp_path / "raw", tmp_path / "out", config=config())
