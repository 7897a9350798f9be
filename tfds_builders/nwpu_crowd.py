"""NWPU-Crowd data set, from the original release.

Wang et al., "NWPU-Crowd: a large-scale benchmark for crowd counting and localization", TPAMI
2021. 5,109 images (3,109 train / 500 val / 1,500 test), 2.13 million heads, 351 negative images.

Layout: `images/NNNN.jpg`, `jsons/NNNN.json` ({"img_id", "human_num", "points": [[x, y], ...],
"boxes": [[x1, y1, x2, y2], ...]}), split lists `train.txt` / `val.txt` / `test.txt` with one
image per line: `id illumination scene_level` (the official evaluation reads the same two labels
from the test-set truth file: 4 illumination classes and 5 scene levels; scene level 0 is the
negative images, 1..4 the count ranges (0, 100], (100, 500], (500, 5000], > 5000 of the paper).

Features added: `illumination` and `scene_level` (int32, -1 when a list line does not give it)
and `has_annotation` (bool). The test annotations are not released: a test image without its
json is stored with zero points, count 0, an all-zero density and `has_annotation = False`
(choice: a flag instead of count -1, so every stored count stays a number of points; evaluation
code must skip or refuse `has_annotation = False`). A train/val image without its json is an
error. Points are used as they are (0-based (x, y)). The head boxes (`boxes`, one per point, for
NWPU's localization thresholds sigma_s / sigma_l, `crowdjax.nwpu_localization`) are stored with
the points, scaled as they are, with the release image's size (`original_size`, for the
test-server files at the original resolution); a json without `boxes` (releases before
2020-05-22) stores NaN boxes and is counted in the metadata (`images_without_boxes`).

Config `default`: resize like UCF-QNRF (short side >= 512, long side <= 2048, points scaled);
fixed Gaussian sigma 6 px (AutoScale's NWPU choice, docs/datasets.md); points outside: clipped.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, bounded_config, require_nonempty

_SPLIT_LISTS = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
_RELEASE_DIR = "NWPU-Crowd"


def release_dir(manual_dir: str) -> str:
    """The folder holding images/ and train.txt: the manual dir or its NWPU-Crowd child."""
    for candidate in (manual_dir, _files.find_child(manual_dir, (_RELEASE_DIR,))):
        if candidate and os.path.isfile(os.path.join(candidate, "train.txt")):
            return candidate
    raise io.DataError(f"{manual_dir}: no train.txt (nor {_RELEASE_DIR}/train.txt) found")


def read_split_list(path: str) -> list[tuple[str, int, int]]:
    """Reads a split list: [(image id, illumination, scene level)], -1 for a missing label."""
    io.require_file(path)
    entries, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 3 or not all(v.lstrip("-").isdigit() for v in fields):
                raise io.DataError(
                    f"{path}:{lineno}: expected 'id illumination scene_level', got {line.strip()!r}"
                )
            image_id = fields[0]
            if image_id in seen:
                raise io.DataError(f"{path}:{lineno}: image {image_id} listed twice")
            seen.add(image_id)
            labels = [int(v) for v in fields[1:]] + [-1] * (3 - len(fields))
            entries.append((image_id, labels[0], labels[1]))
    return entries


def read_annotation(path: str) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Reads `NNNN.json`: (float32 [N, 2] (x, y) points, declared human_num, float32 [N, 4]
    (x1, y1, x2, y2) head boxes or None when the file has no `boxes`)."""
    data = io.load_json(path)
    if not isinstance(data, dict) or "points" not in data:
        raise io.DataError(f"{path}: malformed annotation, no 'points' entry")
    points = io.as_points(data["points"], name=path)
    number = data.get("human_num", len(points))
    boxes = None
    if "boxes" in data:
        boxes = np.asarray(data["boxes"], np.float32) if data["boxes"] else np.zeros((0, 4))
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(points):
            raise io.DataError(
                f"{path}: expected 'boxes' of shape [{len(points)}, 4] (x1, y1, x2, y2), one per "
                f"point, got shape {boxes.shape}"
            )
    return points, _files.as_int(number, name=path, what="human_num"), boxes


class NwpuCrowd(CrowdBuilder):
    """NWPU-Crowd, read from the original release."""

    name = "nwpu_crowd"
    HOMEPAGE = "https://gjy3035.github.io/NWPU-Crowd-Sample-Code/"
    CITATION = """@article{wang2020nwpu,
  title={NWPU-Crowd: A Large-Scale Benchmark for Crowd Counting and Localization},
  author={Wang, Qi and Gao, Junyu and Lin, Wei and Li, Xuelong},
  journal={IEEE TPAMI}, year={2021}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download NWPU-Crowd from https://gjy3035.github.io/NWPU-Crowd-Sample-Code/ (images_part*.zip,
jsons.zip, train.txt, val.txt, test.txt); unzip the image parts into one images/ folder. Pass as
manual_dir the folder (or its parent NWPU-Crowd/) holding:
  images/NNNN.jpg   jsons/NNNN.json   train.txt   val.txt   test.txt
"""
    BUILDER_CONFIGS = [bounded_config(sigma=6.0)]
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        **CrowdBuilder.RELEASE_NOTES,
        "1.2.0": "Head boxes (`boxes`, one per point) and the release image size.",
    }
    HAS_HEAD_BOXES = True

    def extra_features(self):
        return {
            "illumination": tfds.features.Scalar(dtype=np.int32),
            "scene_level": tfds.features.Scalar(dtype=np.int32),
            "has_annotation": tfds.features.Scalar(dtype=np.bool_),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = release_dir(os.fspath(dl_manager.manual_dir))
        lists = {s: read_split_list(os.path.join(root, f)) for s, f in _SPLIT_LISTS.items()}
        image_dir = _files.require_dir(os.path.join(root, "images"), what="images")
        listed = {entry[0] for entries in lists.values() for entry in entries}
        unlisted = [
            n for n in _files.list_images(image_dir) if os.path.splitext(n)[0] not in listed
        ]
        if unlisted:
            logging.warning(
                "%s: %d images in no split list (e.g. %s)", image_dir, len(unlisted), unlisted[:3]
            )
        return {
            split: self._generate_examples(root, split, entries) for split, entries in lists.items()
        }

    def _generate_examples(self, root: str, split: str, entries):
        require_nonempty(
            entries, what="images listed", where=os.path.join(root, _SPLIT_LISTS[split])
        )
        yield from _files.ordered_map(lambda entry: self._example(root, split, *entry), entries)

    def _example(self, root: str, split: str, image_id: str, illumination: int, level: int):
        image_path = os.path.join(root, "images", f"{image_id}.jpg")
        json_path = os.path.join(root, "jsons", f"{image_id}.json")
        has_annotation = os.path.isfile(json_path)
        boxes = np.zeros((0, 4), np.float32)
        if has_annotation:
            points, number, boxes = read_annotation(json_path)
            _files.record_count_mismatch(self, split, json_path, number, len(points))
            self.count_in_metadata("images_without_boxes", split, int(boxes is None))
            if boxes is None:
                logging.warning("%s: no 'boxes'; stored as NaN (no NWPU thresholds)", json_path)
                boxes = np.full((len(points), 4), np.nan, np.float32)
        elif split != "test":
            raise io.DataError(f"{json_path}: annotation file not found for image {image_path}")
        else:
            points = np.zeros((0, 2), np.float32)
        return self.make_example(
            split=split,
            image_id=os.path.basename(image_path),
            image=_files.read_bytes(image_path),
            points=points,
            boxes=boxes,
            name=image_path,
            extra={
                "illumination": np.int32(illumination),
                "scene_level": np.int32(level),
                "has_annotation": np.bool_(has_annotation),
            },
        )
