"""`user_crowd` builder: a user's folder of images and point annotations in every accepted form,
list-file and drawn splits, the bad-input errors (each names the file), and a tiny config that
trains and evaluates on a folder by name."""

from __future__ import annotations

import csv
import json
import os
import re

import cv2
import numpy as np
import pytest

from configs import datasets as config_datasets
from crowdjax import evals, media, trainer
from crowdjax.data import datasets, labels, splits, train_stream
from crowdjax.data.io import DataError
from tests.builders import fakes
from tests.engine.conftest import run_script
from tfds_builders import user_crowd
from tfds_builders.user_crowd import UserCrowd

H, W = 40, 50
# image -> (heads, split of the list files); IMG_2 has nobody in it.
IMAGES = {
    "IMG_1.jpg": (4, "train"),
    "IMG_2.jpg": (0, "train"),
    "IMG_3.png": (3, "train"),
    "IMG_10.jpg": (5, "validation"),
    "IMG_4.jpg": (2, "test"),
}
LIST_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
FORMATS = ("json_all", "csv_all", "json", "nwpu_json", "labelme", "csv", "mat")


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def write_points_csv(path, points, *, header: bool = True) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(["x", "y"])
        writer.writerows(points.tolist())


def make_folder(root, fmt: str, *, images=IMAGES, lists: bool = True, manifest=None) -> dict:
    """Writes a user folder with annotations in `fmt`; returns {image name: points [N, 2]}.

    Layouts differ by format: "mat" is ShanghaiTech's (images/ + ground-truth/), "csv" keeps the
    images and their CSVs directly in the folder, the others use images/ (+ annotations/).
    """
    root = os.fspath(root)
    image_dir = root if fmt == "csv" else os.path.join(root, "images")
    ann_dir = {"mat": "ground-truth", "csv": ""}.get(fmt, "annotations")
    truth, table = {}, {}
    for i, (name, (heads, _)) in enumerate(images.items()):
        fakes.write_image(os.path.join(image_dir, name), H, W, seed=i)
        points = fakes.random_points(heads, H, W, seed=10 + i)
        truth[name] = points
        per_image = os.path.join(root, ann_dir, _stem(name))
        if fmt in ("json_all", "csv_all"):
            table[name] = points
        elif fmt == "json":
            fakes.write_json(per_image + ".json", points.tolist())
        elif fmt == "nwpu_json":
            payload = {"human_num": heads, "points": [{"x": x, "y": y} for x, y in points]}
            fakes.write_json(per_image + ".json", payload)
        elif fmt == "labelme":
            shapes = [
                {"label": "head", "points": [p.tolist()], "shape_type": "point"} for p in points
            ]
            fakes.write_json(per_image + ".json", {"shapes": shapes, "imagePath": name})
        elif fmt == "csv":
            write_points_csv(per_image + ".csv", points, header=i % 2 == 0)
        elif fmt == "mat":
            fakes.write_shanghaitech_mat(
                os.path.join(root, ann_dir, f"GT_{_stem(name)}.mat"), points
            )
    if fmt == "json_all":
        fakes.write_json(
            os.path.join(root, "annotations.json"), {k: v.tolist() for k, v in table.items()}
        )
    if fmt == "csv_all":
        rows = ["image,x,y"]
        for name, points in table.items():
            rows += (
                [f"{name},{float(x)!r},{float(y)!r}" for x, y in points]
                if len(points)
                else [f"{name},,"]
            )
        fakes.write_text(os.path.join(root, "annotations.csv"), "\n".join(rows) + "\n")
    if lists:
        for split, file in LIST_FILES.items():
            names = [n for n, (_, s) in images.items() if s == split]
            fakes.write_text(os.path.join(root, file), "# my split\n" + "\n".join(names) + "\n")
    if manifest is not None:
        fakes.write_json(os.path.join(root, "crowd.json"), manifest)
    return truth


def check_example(ex, points, recipe) -> None:
    """Points, count and both ground-truth maps against the recipe's maps of the given points.

    The density is compared to within float16 rounding (2^-11 of a value), the precision the
    builders may store it with; its sum to the count to 1e-3 of it.
    """
    image = np.asarray(ex["image"])
    h, w = image.shape[:2]
    want_points = np.asarray(points, np.float32).reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(ex["points"]), want_points, atol=1e-4)
    assert int(ex["count"]) == len(want_points)
    density = np.asarray(ex["density"], np.float64)
    assert density.shape == (h, w)
    np.testing.assert_allclose(density.sum(), len(want_points), rtol=1e-3, atol=1e-6)
    want = labels.density_map(
        want_points,
        (h, w),
        sigma=recipe.sigma,
        adaptive=recipe.adaptive,
        beta=recipe.beta,
        k=recipe.k,
    )
    np.testing.assert_allclose(density, want, rtol=1e-3, atol=1e-7)
    classes = labels.distance_label_map(want_points, (h, w), edges=recipe.distance_edges)
    np.testing.assert_array_equal(np.asarray(ex["distance_label"]), classes)


def build(root, data_dir, name: str = "mine"):
    return fakes.build(UserCrowd, root, data_dir, config=name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_builds_the_annotated_points(tmp_path, fmt):
    truth = make_folder(tmp_path / "raw", fmt, manifest={"sigma": 2.5, "description": "street"})
    builder = build(tmp_path / "raw", tmp_path / "out")
    recipe = builder.builder_config
    assert recipe.sigma == 2.5 and not recipe.adaptive
    for split in ("train", "validation", "test"):
        examples = fakes.read_split(builder, split)
        assert sorted(examples) == sorted(n for n, (_, s) in IMAGES.items() if s == split)
        for name, ex in examples.items():
            check_example(ex, truth[name], recipe)
            # Independently of the recipe object: the sigma of crowd.json.
            want = labels.density_map(truth[name].astype(np.float32), (H, W), sigma=2.5)
            np.testing.assert_allclose(np.asarray(ex["density"]), want, rtol=1e-3, atol=1e-7)
            assert int(ex["count"]) == IMAGES[name][0]
    meta = builder.info.metadata
    assert meta["points_outside_image"] == {"train": 0, "validation": 0, "test": 0}
    assert meta["count_mismatch"] == {"train": 0, "validation": 0, "test": 0}
    assert meta["recipe"]["sigma"] == 2.5 and meta["source"]["description"] == "street"
    assert meta["source"]["splits"] == "list files: train.txt, val.txt, test.txt"


def test_prepared_name_reads_back_its_recipe_and_is_found_by_name(tmp_path):
    make_folder(tmp_path / "raw", "json", manifest={"adaptive": True, "k": 2, "beta": 0.5})
    data_dir = os.fspath(tmp_path / "out")
    datasets.build("user_crowd/street_cam", data_dir=data_dir, manual_dir=tmp_path / "raw")
    builder = datasets.get_builder("user_crowd/street_cam", data_dir=data_dir)
    # A fresh builder (no folder given) has the recipe it was built with: the pipeline's kernel.
    assert isinstance(builder, UserCrowd) and builder.is_prepared()
    assert (builder.builder_config.adaptive, builder.builder_config.k) == (True, 2)
    assert builder.builder_config.beta == 0.5
    assert len(datasets.data_source("user_crowd/street_cam", "test", data_dir=data_dir)) == 1
    facts = config_datasets.user_facts("user_crowd/street_cam", data_dir=data_dir)
    assert (facts.train, facts.validation, facts.test) == (3, 1, 1)
    # Another name is another data set; an unprepared one says how to build it.
    assert not datasets.is_prepared("user_crowd/other", data_dir=data_dir)
    with pytest.raises(DataError, match=r"build user_crowd/other --manual_dir=<your folder"):
        datasets.data_source("user_crowd/other", "train", data_dir=data_dir)
    for bad in ("user_crowd", "user_crowd/two words"):
        with pytest.raises(ValueError, match=r"user_crowd/<name>"):
            datasets.get_builder(bad, data_dir=data_dir)


def test_rebuilding_a_name_from_a_changed_folder_is_an_error(tmp_path):
    make_folder(tmp_path / "raw", "json")
    data_dir = tmp_path / "out"
    build(tmp_path / "raw", data_dir)
    build(tmp_path / "raw", data_dir)  # unchanged: a no-op
    fakes.write_json(tmp_path / "raw" / "annotations" / "IMG_4.json", [[1.0, 2.0]])
    with pytest.raises(DataError, match=r"already prepared from .*raw.*differs"):
        build(tmp_path / "raw", data_dir)
    assert (
        int(fakes.read_split(build(tmp_path / "raw", data_dir, "v2"), "test")["IMG_4.jpg"]["count"])
        == 1
    )


def test_drawn_splits_are_seeded_by_the_manifest(tmp_path):
    images = {f"frame_{i}.jpg": (i % 3, "train") for i in range(10)}
    split = {"test": 0.3, "validation": 0.2, "seed": 5}
    make_folder(tmp_path / "raw", "json_all", images=images, lists=False, manifest={"split": split})
    builder = build(tmp_path / "raw", tmp_path / "out")
    got = {s: sorted(fakes.read_split(builder, s)) for s in ("train", "validation", "test")}
    # Independently: a permutation of the naturally sorted names (frame_2 before frame_10).
    names = [f"frame_{i}.jpg" for i in range(10)]
    order = np.random.default_rng(5).permutation(10)
    want = {
        "test": sorted(names[i] for i in order[:3]),
        "validation": sorted(names[i] for i in order[3:5]),
        "train": sorted(names[i] for i in order[5:]),
    }
    assert got == want
    # Defaults: 20% test, no validation split (the engine holds one out of train).
    make_folder(tmp_path / "raw2", "json_all", images=images, lists=False)
    splits, rule, _ = user_crowd.assign_splits(
        os.fspath(tmp_path / "raw2"), "", user_crowd.find_images(tmp_path / "raw2")[1], {}
    )
    assert {s: len(v) for s, v in splits.items()} == {"test": 2, "train": 8}
    assert rule == "drawn: test 0.2, validation 0, seed 0 (10 images)"
    other = user_crowd.assign_splits("", "", names, {"split": {"seed": 6}})[0]
    assert other["test"] != splits["test"]


def test_manifest_resize_and_out_of_image_rules(tmp_path):
    images = {"a.jpg": (3, "train"), "b.jpg": (1, "test")}
    manifest = {"max_long_side": 25, "out_of_image": "drop", "split": {"test": 0.5}}
    truth = make_folder(tmp_path / "raw", "json_all", images=images, lists=False, manifest=manifest)
    table = {k: v.tolist() for k, v in truth.items()}
    table["a.jpg"].append([W + 3.0, 1.0])  # outside: dropped and counted
    fakes.write_json(tmp_path / "raw" / "annotations.json", table)
    builder = build(tmp_path / "raw", tmp_path / "out")
    examples = {**fakes.read_split(builder, "train"), **fakes.read_split(builder, "test")}
    for name, ex in examples.items():
        assert np.asarray(ex["image"]).shape == (H // 2, W // 2, 3)
        check_example(ex, truth[name] * 0.5, builder.builder_config)
    assert sum(builder.info.metadata["points_outside_image"].values()) == 1
    per_image = builder.info.metadata["images_with_points_outside"]
    assert {k: n for split in per_image.values() for k, n in split.items()} == {"a.jpg": 1}
    (report,) = builder.build_report()
    assert re.search(r"'drop' dropped 1 annotated points .* in 1 images: \w+/a\.jpg \(1\)", report)


# EXIF orientation -> the pixel grid a camera stores for the upright picture `u` that viewers
# (and annotation tools) show. The test checks each against prediction's reader (`media`).
STORED_GRID = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # mirrored
    3: lambda u: np.rot90(u, 2),
    5: lambda u: u.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda u: np.rot90(u, 1),  # a phone held upright: shown turned 90 degrees clockwise
    7: lambda u: np.rot90(u, 2).transpose(1, 0, 2),
    8: lambda u: np.rot90(u, -1),
}
UPRIGHT_H, UPRIGHT_W = 48, 64


def _marked_picture(points: np.ndarray) -> np.ndarray:
    """The upright picture: dark smooth background, a white 5 x 5 marker on each head."""
    rng = np.random.default_rng(0)
    small = rng.integers(20, 60, (4, 4, 3), dtype=np.uint8)
    image = cv2.resize(small, (UPRIGHT_W, UPRIGHT_H), interpolation=cv2.INTER_LINEAR)
    for x, y in points.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    return image


def test_exif_orientation_is_applied_as_prediction_applies_it(tmp_path, caplog):
    """Phone pictures are annotated upright (as viewers show them): the stored image is the
    picture predict.py reads, and the annotated points land on the heads in it."""
    root = tmp_path / "raw"
    table, files = {}, {}
    for i, orientation in enumerate(STORED_GRID):
        name = f"phone_{orientation}.jpg"
        # Three heads away from the border and from any symmetric position.
        points = np.array([[8.5 + 3 * i, 10.5], [40.5, 30.5 - i], [55.5, 40.5]], np.float32)
        upright = _marked_picture(points)
        path = root / "images" / name
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(
            fakes.exif_orientation_jpeg(STORED_GRID[orientation](upright), orientation)
        )
        files[name], table[name] = os.fspath(path), points
        shown = media.read_image(files[name])  # what predict.py counts
        assert shown.shape == upright.shape  # the grid above is the one viewers turn upright
        assert np.abs(shown.astype(int) - upright).mean() < 2
    fakes.write_json(root / "annotations.json", {k: v.tolist() for k, v in table.items()})
    fakes.write_text(root / "test.txt", "phone_6.jpg\n")
    fakes.write_text(root / "train.txt", "\n".join(n for n in table if n != "phone_6.jpg"))
    with caplog.at_level("WARNING"):
        builder = build(root, tmp_path / "out")
    examples = {**fakes.read_split(builder, "train"), **fakes.read_split(builder, "test")}
    assert sorted(examples) == sorted(table)
    for name, ex in examples.items():
        stored, shown = np.asarray(ex["image"]), media.read_image(files[name])
        assert stored.shape == shown.shape == (UPRIGHT_H, UPRIGHT_W, 3), name
        if name == "phone_1.jpg":  # already upright: stored as it is
            np.testing.assert_array_equal(stored, shown)
        else:  # turned upright and encoded again (JPEG quality 95)
            assert np.abs(stored.astype(int) - shown).mean() < 1.5, name
        np.testing.assert_array_equal(np.asarray(ex["points"]), table[name])
        for x, y in table[name].astype(int):
            assert stored[y, x].min() > 200, (name, x, y)  # the point is on its marker
        check_example(ex, table[name], builder.builder_config)
    assert builder.info.metadata["images_turned_upright"] == {
        "train": ["phone_2.jpg", "phone_3.jpg", "phone_5.jpg", "phone_7.jpg", "phone_8.jpg"],
        "test": ["phone_6.jpg"],
    }
    report = [r.getMessage() for r in caplog.records if "turned upright" in r.getMessage()]
    assert len(report) == 1 and "6 images" in report[0] and "test/phone_6.jpg" in report[0]
    assert "points outside" not in caplog.text  # every point is on the upright picture


def test_clip_reports_the_points_it_moved(tmp_path, caplog):
    images = {"a.jpg": (3, "train"), "b.jpg": (2, "validation"), "c.jpg": (1, "test")}
    truth = make_folder(tmp_path / "raw", "json_all", images=images)
    table = {k: v.tolist() for k, v in truth.items()}
    table["a.jpg"] += [[W + 3.0, 1.0], [-1.0, 5.0]]  # moved to (W - eps, 1) and (0, 5)
    table["c.jpg"] += [[2.0, H + 0.5]]  # moved to (2, H - eps)
    fakes.write_json(tmp_path / "raw" / "annotations.json", table)
    with caplog.at_level("WARNING"):
        builder = build(tmp_path / "raw", tmp_path / "out")
    meta = builder.info.metadata
    assert meta["points_outside_image"] == {"train": 2, "validation": 0, "test": 1}
    assert meta["images_with_points_outside"] == {
        "train": {"a.jpg": 2},
        "validation": {},
        "test": {"c.jpg": 1},
    }
    below_w, below_h = np.nextafter(np.float32(W), 0), np.nextafter(np.float32(H), 0)
    moved = {"a.jpg": [[below_w, 1.0], [0.0, 5.0]], "b.jpg": [], "c.jpg": [[2.0, below_h]]}
    examples = {}
    for split in ("train", "validation", "test"):
        examples.update(fakes.read_split(builder, split))
    assert sorted(examples) == sorted(images)
    for name, ex in examples.items():
        want = np.concatenate([truth[name], np.reshape(moved[name], (-1, 2))])
        np.testing.assert_array_equal(np.asarray(ex["points"]), want.astype(np.float32))
    summary = [r.getMessage() for r in caplog.records if "in 2 images" in r.getMessage()]
    assert len(summary) == 1, caplog.text
    assert "clipped 3 annotated points" in summary[0]
    assert "train/a.jpg (2)" in summary[0] and "test/c.jpg (1)" in summary[0]


def test_declared_count_mismatch_is_counted_and_points_kept(tmp_path):
    make_folder(tmp_path / "raw", "nwpu_json")
    path = tmp_path / "raw" / "annotations" / "IMG_1.json"
    payload = json.load(open(path))
    payload["human_num"] = 9
    fakes.write_json(path, payload)
    builder = build(tmp_path / "raw", tmp_path / "out")
    assert builder.info.metadata["count_mismatch"]["train"] == 1
    assert int(fakes.read_split(builder, "train")["IMG_1.jpg"]["count"]) == 4


def _write(rel: str, text: str):
    return lambda root: fakes.write_text(os.path.join(root, rel), text)


def _remove(rel: str):
    return lambda root: os.remove(os.path.join(root, rel))


def _add_image(root: str, name: str) -> None:
    """An annotated image that no split list names."""
    fakes.write_image(os.path.join(root, "images", name), H, W)
    fakes.write_json(os.path.join(root, "annotations", _stem(name) + ".json"), [])


def _json(rel: str, payload):
    return lambda root: fakes.write_json(os.path.join(root, rel), payload)


# (format of the valid folder, how it is broken, the error: the file named, and what is wrong)
BAD = {
    "corrupt image": (
        "json",
        lambda root: fakes.corrupt(os.path.join(root, "images", "IMG_3.png")),
        r"images/IMG_3\.png \(points: .*IMG_3\.json\): corrupt",
    ),
    "empty image": ("json", _write("images/IMG_1.jpg", ""), r"images/IMG_1\.jpg .*: empty image"),
    "malformed json": (
        "json",
        _write("annotations/IMG_1.json", "[[1, 2"),
        r"IMG_1\.json: malformed JSON",
    ),
    "malformed json file": (
        "json_all",
        _write("annotations.json", "{"),
        r"annotations\.json: malformed JSON",
    ),
    "json not numeric": (
        "json",
        _json("annotations/IMG_1.json", [[1, "a"]]),
        r"IMG_1\.json: point 0 .* not two finite",
    ),
    "json bad point": (
        "json_all",
        _json("annotations.json", {"IMG_1.jpg": [[1]]}),
        r"annotations\.json \['IMG_1\.jpg'\]: point 0",
    ),
    "json wrong shape": (
        "json",
        _json("annotations/IMG_1.json", {"heads": []}),
        r"IMG_1\.json: expected a list",
    ),
    "labelme box": (
        "labelme",
        _json(
            "annotations/IMG_1.json",
            {"shapes": [{"shape_type": "rectangle", "points": [[1, 1], [3, 3]]}]},
        ),
        r"IMG_1\.json: LabelMe shape 0 is a rectangle, not a point",
    ),
    "csv not numeric": (
        "csv",
        _write("IMG_1.csv", "x,y\n1,2\n3,abc\n"),
        r"IMG_1\.csv:3: 'abc' is not a number",
    ),
    "csv short row": ("csv", _write("IMG_1.csv", "x,y\n1\n"), r"IMG_1\.csv:2: expected x,y"),
    "csv no y column": (
        "csv",
        _write("IMG_1.csv", "x,z\n1,2\n"),
        r"IMG_1\.csv:1: header .* no column y",
    ),
    "csv file not numeric": (
        "csv_all",
        _write("annotations.csv", "image,x,y\nIMG_1.jpg,1,nan\n"),
        r"annotations\.csv:2: 'nan' is not a finite",
    ),
    "csv file half empty row": (
        "csv_all",
        _write("annotations.csv", "file,x,y\nIMG_1.jpg,1,\n"),
        r"annotations\.csv:2: '' is not a number",
    ),
    "malformed mat": (
        "mat",
        _write("ground-truth/GT_IMG_1.mat", "not a mat"),
        r"GT_IMG_1\.mat: malformed \.mat",
    ),
    "mat without points": (
        "mat",
        lambda root: fakes.write_points_mat(
            os.path.join(root, "ground-truth", "GT_IMG_1.mat"), [], key="other"
        ),
        r"GT_IMG_1\.mat: malformed \.mat file, none of \['annPoints'\]",
    ),
    "points outside (error rule)": (
        "json",
        lambda root: (
            fakes.write_json(os.path.join(root, "crowd.json"), {"out_of_image": "error"}),
            fakes.write_json(os.path.join(root, "annotations", "IMG_10.json"), [[1, 1], [-2, 5]]),
        ),
        r"images/IMG_10\.jpg \(points: .*IMG_10\.json\): 1 annotated points lie outside",
    ),
    "image without annotation": (
        "json",
        _remove("annotations/IMG_3.json"),
        r"images/IMG_3\.png: no annotation file \(IMG_3\.json",
    ),
    "image without annotation (one file)": (
        "json_all",
        _json("annotations.json", {"IMG_1.jpg": []}),
        r"annotations\.json: no annotation of image .*IMG_2\.jpg",
    ),
    "annotation without image": (
        "mat",
        _remove("images/IMG_4.jpg"),
        r"GT_IMG_4\.mat: annotation file without its image",
    ),
    "annotation without image (one file)": (
        "csv_all",
        lambda root: open(os.path.join(root, "annotations.csv"), "a").write("IMG_9.jpg,1,1\n"),
        r"annotations\.csv: annotation of 'IMG_9\.jpg', but .* has no such image",
    ),
    "two annotation files": (
        "json",
        lambda root: write_points_csv(
            os.path.join(root, "annotations", "IMG_1.csv"), np.zeros((0, 2))
        ),
        r"images/IMG_1\.jpg: several annotation files",
    ),
    "one file and per-image files": (
        "json",
        _json("annotations.json", {}),
        r"annotations\.json: and per-image annotation files",
    ),
    "shared stem": (
        "json",
        lambda root: fakes.write_image(os.path.join(root, "images", "IMG_1.png"), H, W),
        r"IMG_1\.(png|jpg): shares the annotation stem 'IMG_1'",
    ),
    "empty split": ("json", _write("val.txt", "# nothing yet\n"), r"val\.txt: empty split"),
    "image in two splits": (
        "json",
        _write("test.txt", "IMG_4.jpg\nIMG_1.jpg\n"),
        r"test\.txt:2: IMG_1\.jpg is listed twice \(also at .*train\.txt:2\)",
    ),
    "listed file missing": (
        "json",
        _write("val.txt", "IMG_10.jpg\nIMG_99.jpg\n"),
        r"val\.txt:2: 'IMG_99\.jpg' is not an image of",
    ),
    "unlisted image": (
        "json",
        lambda root: _add_image(root, "IMG_5.jpg"),
        r"images/IMG_5\.jpg: in no split list",
    ),
    "no test list": (
        "json",
        _remove("test.txt"),
        r"no test\.txt \(train and test lists are required",
    ),
    "lists and fractions": (
        "json",
        _json("crowd.json", {"split": {"test": 0.5}}),
        r"crowd\.json: 'split' fractions and split lists",
    ),
    "unknown option": (
        "json",
        _json("crowd.json", {"sigam": 3}),
        r"crowd\.json: unknown option\(s\) \['sigam'\]",
    ),
    "bad option value": (
        "json",
        _json("crowd.json", {"out_of_image": "ignore"}),
        r"crowd\.json: out_of_image must be one of",
    ),
    "bad option type": (
        "json",
        _json("crowd.json", {"sigma": "4"}),
        r"crowd\.json: option 'sigma' = '4'",
    ),
    "annotations in two folders": (
        "json",
        _json("images/IMG_1.json", [[1, 1]]),
        r"raw/annotations and .*raw/images: annotation files in both",
    ),
    "nested images": (
        "json",
        lambda root: fakes.write_image(os.path.join(root, "images", "cam2", "x.jpg"), H, W),
        r"images/cam2: a subfolder with images",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_an_error_naming_the_file(tmp_path, case):
    fmt, breaks, message = BAD[case]
    make_folder(tmp_path / "raw", fmt)
    breaks(os.fspath(tmp_path / "raw"))
    with pytest.raises(DataError, match=message):
        build(tmp_path / "raw", tmp_path / "out")


def test_files_that_are_not_read_are_reported(tmp_path, caplog):
    make_folder(tmp_path / "raw", "json")
    fakes.write_text(tmp_path / "raw" / "images" / "IMG_7.gif", "GIF89a")
    with caplog.at_level("WARNING"):
        build(tmp_path / "raw", tmp_path / "out")
    assert re.search(r"raw/images: 1 file\(s\) .* are not read: IMG_7\.gif", caplog.text)


def test_too_few_images_for_drawn_splits(tmp_path):
    make_folder(tmp_path / "raw", "json", images={"a.jpg": (1, "train")}, lists=False)
    with pytest.raises(DataError, match=r"raw: 1 image\(s\), too few for a test split of 0\.2"):
        build(tmp_path / "raw", tmp_path / "out")
    with pytest.raises(DataError, match=r"crowd\.json: split fractions need"):
        user_crowd.assign_splits(
            os.fspath(tmp_path / "raw"), "", ["a.jpg", "b.jpg"], {"split": {"test": 1.0}}
        )


@pytest.fixture(scope="module")
def cli_built(tmp_path_factory) -> str:
    """A folder of 12 images (one CSV, drawn splits) built with the command line; its data dir."""
    root = tmp_path_factory.mktemp("user_folder")
    images = {f"IMG_{i}.jpg": (2 + i % 4, "train") for i in range(12)}
    make_folder(root, "csv_all", images=images, lists=False, manifest={"split": {"test": 0.25}})
    data_dir = os.fspath(root / "data")
    args = ["-m", "crowdjax.data.build", "user_crowd/my_crowd", f"--manual_dir={root}"]
    proc = run_script([*args, f"--data_dir={data_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prepared in" in proc.stdout, proc.stdout
    return data_dir


def _tiny_config(data_dir: str):
    from configs import uot_shb

    config = uot_shb.get_config("tiny")  # tiny model and schedule; the data set is the folder
    config.data.name = "user_crowd/my_crowd"
    config.data.data_dir = data_dir
    return config


def test_a_config_reads_a_folder_by_name(cli_built):
    """The README's path up to training: the splits, the selection and a training batch."""
    config = _tiny_config(cli_built)
    name = "user_crowd/my_crowd"
    # No validation split in the folder: 10% of the 9 training images held out for selection.
    held = splits.resolve(config.data, name, "validation")
    kept = splits.resolve(config.data, name, "train")
    assert (held.size, kept.size, held.source_split) == (1, 8, "train")
    assert not set(held.indices) & set(kept.indices) and "held out" in held.description
    assert splits.resolve(config.data, name, "test").size == 3
    entries = evals.parse(config).selection.entries
    assert [(e.dataset, e.split) for e in entries] == [(name, "validation")]
    batch = next(train_stream.train_iterator(config.data, global_batch_size=2, seed=0))
    assert batch["image"].shape == (2, 64, 64, 3)
    # Crops of 40 x 50 images padded to 64: every head of the image is in its crop.
    np.testing.assert_allclose(batch["density"].sum((1, 2)), batch["count"], rtol=1e-3)
    assert set(batch["count"].tolist()) <= {2.0, 3.0, 4.0, 5.0}


@pytest.mark.slow  # ~60 s of CPU (compiling the tiny UOT model), 2 min on a shared machine
def test_a_config_trains_and_evaluates_on_a_folder_by_name(cli_built, tmp_path):
    """The README's path: build with the command line, then any config with data.name set."""
    config = _tiny_config(cli_built)
    workdir = tmp_path / "run"
    results = trainer.run_main(config, os.fspath(workdir))
    assert set(results) == {"val", "test"}
    assert results["test"]["num_images"] == 3 and np.isfinite(results["test"]["mae"])
    val = json.load(open(workdir / "eval_val.json"))
    assert val["num_images"] == 1 and "held out" in val["split_description"]
    assert val["selected_by"]["eval"] == "val" and not val["selected_by"]["test_split"]
    gt = sorted(r["gt_count"] for r in json.load(open(workdir / "eval_test.json"))["per_image"])
    source = datasets.data_source("user_crowd/my_crowd", "test", data_dir=cli_built)
    assert gt == sorted(float(source[i]["count"]) for i in range(len(source)))
