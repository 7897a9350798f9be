"""GCC (GTA5 Crowd Counting) data set, from its public release.

Wang et al., "Learning from Synthetic Data for Crowd Counting in the Wild", CVPR 2019. 15,212
synthetic 1080x1920 frames rendered in GTA V, 100 locations seen by 4 cameras each (400 scene
folders `scene_<location>_<camera>`, `scene_00_0` ... `scene_99_3`), 7,625,843 heads.

Release layout read (sources: the GCC-CL labeler, gjy3035/GCC-CL `GCC-Labeler/main.py`,
`getHead.py`, `mkInfo.py`, README; the C^3-Framework loaders, gjy3035/C-3-Framework
`datasets/GCC/{GCC.py,loading_data.py,prepare_GCC.m}`):

  txt_list/<list>.txt        split lists (also accepted directly in the release folder)
  scene_LL_C/pngs/NAME.png   1080x1920 RGB frame
  scene_LL_C/jsons/NAME.json {"image_info": [[row, col], ...], "weather", "timeInfo", "roi",
                             "camera"}: one head per entry, integer 0-based pixel indices in
                             (row, col) order (the labeler keeps a head only where
                             stencil[row, col] is set; C^3's prepare_GCC.m swaps the two columns
                             to get (x, y))
  scene_LL_C/mats/NAME.mat   the same heads: `image_info` struct, `.location` [N, 2] (row, col),
                             `.number`; read only for a frame whose json is missing
  (jpgs/, segs/, vis/ are not read)

Split lists (C^3-Framework `loading_data.py`): random protocol `train_list.txt` / `test_list.txt`,
cross-camera `cross_camera_{train,test}_list.txt`, cross-location
`cross_location_{train,test}_list.txt`. One frame per line, six whitespace-separated fields
`crowd_level time weather folder name count` (C^3 `GCC.py`): `folder` names the scene folder
(its last path component is used, so "/scene_00_0" and "scene_00_0" both work), `name` the frame
(pngs/NAME.png), `count` its number of heads. The three labels are stored as given:
`crowd_level` (C^3 evaluates 9 levels), `hour` (the `time` field; C^3 groups it as time / 3 into
8 ranges of a 24-hour day) and `weather` (7 classes in C^3's evaluation). No validation split
exists (the engine holds one out of train).

Conventions:
  * points: (x, y) = (col, row) + `pixel_offset` (0.5: the centre of the annotated pixel, in the
    project convention where pixel (r, c) covers [c, c+1) x [r, r+1)); points outside the image
    follow the config's `out_of_image` rule.
  * GT count = number of points; a list `count` that disagrees is logged and counted in the
    metadata (`count_mismatch`); the points are kept.
  * image_id = "scene_LL_C/NAME.png" (frame names are capture timestamps; the scene keeps ids
    unique). Features added: `crowd_level`, `hour`, `weather` (int32, from the list) and `scene`.
  * configs `random` (default), `cross_camera`, `cross_location`: frames downscaled by 1/2 to
    540x960 (`max_box` (960, 540), aspect ratio kept, points scaled alike; C^3 trains on 544x960
    frames, stretched rows) and stored as JPEG; fixed Gaussian sigma 4 px at that size (C^3's
    `k15_s4` density maps at 544x960, `prepare_GCC.m`).

Not established from the sources: the number of frames in each list (the split sizes are whatever
the lists hold), the top folder name of the download (GCC/ is accepted) and whether txt_list/
ships with it or sits next to the scene folders (both are accepted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, CrowdConfig, require_nonempty

HOMEPAGE = "https://gjy3035.github.io/GCC-CL/"
CITATION = """@inproceedings{wang2019learning,
  title={Learning from Synthetic Data for Crowd Counting in the Wild},
  author={Wang, Qi and Gao, Junyu and Lin, Wei and Yuan, Yuan},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2019}}"""
_RELEASE_DIR = "GCC"
_LIST_DIR = "txt_list"
_LIST_FIELDS = "crowd_level time weather folder name count"
# Downscaled by 1/2 (1080x1920 -> 540x960), fixed Gaussian sigma 4 px at that size.
_HALF_SIZE = dict(sigma=4.0, max_box=(960, 540))


@dataclasses.dataclass
class GccConfig(CrowdConfig):
    """GCC recipe.

    Attributes:
      protocol: prefix of the split lists, "" (random: train_list.txt / test_list.txt),
        "cross_camera_" or "cross_location_".
      pixel_offset: added to the released integer (col, row) pixel indices (0.5: pixel centres).
    """

    protocol: str = ""
    pixel_offset: float = 0.5


def list_names(cfg: GccConfig) -> dict[str, str]:
    """Split -> list file name of the config's protocol."""
    return {split: f"{cfg.protocol}{split}_list.txt" for split in ("train", "test")}


def release_dir(manual_dir: str, first_list: str) -> tuple[str, str]:
    """(release folder, folder of the lists): the manual dir or its GCC child, lists in txt_list/
    or in the release folder itself."""
    for root in (manual_dir, _files.find_child(manual_dir, (_RELEASE_DIR,))):
        if not root:
            continue
        for lists in (os.path.join(root, _LIST_DIR), root):
            if os.path.isfile(os.path.join(lists, first_list)):
                return root, lists
    raise io.DataError(
        f"{manual_dir}: no {_LIST_DIR}/{first_list} (nor {first_list}, "
        f"{_RELEASE_DIR}/{_LIST_DIR}/{first_list}) found"
    )


def scene_name(folder: str) -> str:
    """The scene folder of a list's `folder` field: its last path component."""
    parts = [p for p in re.split(r"[\\/]", folder) if p]
    return parts[-1] if parts else ""


def read_split_list(path: str) -> list[dict]:
    """Reads a split list: [{"scene", "name", "crowd_level", "hour", "weather", "count"}]."""
    io.require_file(path)
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise io.DataError(
                    f"{path}:{lineno}: expected '{_LIST_FIELDS}', got {line.strip()!r}"
                )
            level, hour, weather, folder, name, count = fields
            try:
                labels = [int(v) for v in (level, hour, weather, count)]
            except ValueError as e:
                raise io.DataError(
                    f"{path}:{lineno}: crowd_level, time, weather and count must be integers, "
                    f"got {line.strip()!r}"
                ) from e
            scene = scene_name(folder)
            if not scene or scene in (".", ".."):
                raise io.DataError(f"{path}:{lineno}: no scene folder in {folder!r}")
            key = (scene, name)
            if key in seen:
                raise io.DataError(
                    f"{path}:{lineno}: frame {scene}/{name} listed twice (first on line "
                    f"{seen[key]})"
                )
            seen[key] = lineno
            entries.append(
                dict(
                    scene=scene,
                    name=name,
                    crowd_level=labels[0],
                    hour=labels[1],
                    weather=labels[2],
                    count=labels[3],
                )
            )
    return entries


def read_json_annotation(path: str) -> np.ndarray:
    """Reads `jsons/NAME.json`: float32 [N, 2] (row, col) as released."""
    data = io.load_json(path)
    if not isinstance(data, dict) or "image_info" not in data:
        raise io.DataError(f"{path}: malformed annotation, no 'image_info' entry")
    return io.as_points(data["image_info"], name=f"{path} image_info")


def read_mat_annotation(path: str) -> np.ndarray:
    """Reads `mats/NAME.mat`: float32 [N, 2] (row, col) of `image_info.location`."""
    mat = io.load_mat(path)
    info = io.mat_field(mat, ["image_info"], name=path)
    location = _files.struct_field(info, "location", name=path)
    return io.as_points(location, name=f"{path} image_info.location")


def read_annotation(scene_dir: str, name: str) -> tuple[np.ndarray, str]:
    """(row, col) points of a frame and the file read: its json, else its mat."""
    json_path = os.path.join(scene_dir, "jsons", f"{name}.json")
    if os.path.isfile(json_path):
        return read_json_annotation(json_path), json_path
    mat_path = os.path.join(scene_dir, "mats", f"{name}.mat")
    if os.path.isfile(mat_path):
        return read_mat_annotation(mat_path), mat_path
    raise io.DataError(f"{json_path}: annotation file not found (nor {mat_path})")


class Gcc(CrowdBuilder):
    """GCC, read from its public release; one config per official split protocol."""

    name = "gcc"
    HOMEPAGE = HOMEPAGE
    CITATION = CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the GCC data set (links on {HOMEPAGE}) and unpack it. Pass as manual_dir the folder
(or its parent holding it as GCC/) that holds:
  scene_00_0/ ... scene_99_3/   each with pngs/NAME.png and jsons/NAME.json (or mats/NAME.mat)
  txt_list/                     train_list.txt, test_list.txt, cross_camera_{{train,test}}_list.txt,
                                cross_location_{{train,test}}_list.txt (may also sit in the folder)
"""
    BUILDER_CONFIGS = [
        GccConfig(
            name="random",
            protocol="",
            description="Random splitting (train_list.txt / test_list.txt); 540x960, sigma 4.",
            **_HALF_SIZE,
        ),
        GccConfig(
            name="cross_camera",
            protocol="cross_camera_",
            description="Cross-camera splitting (cross_camera_*_list.txt); 540x960, sigma 4.",
            **_HALF_SIZE,
        ),
        GccConfig(
            name="cross_location",
            protocol="cross_location_",
            description="Cross-location splitting (cross_location_*_list.txt); 540x960, sigma 4.",
            **_HALF_SIZE,
        ),
    ]
    DEFAULT_CONFIG_NAME = "random"

    def extra_features(self):
        return {
            "crowd_level": tfds.features.Scalar(dtype=np.int32),
            "hour": tfds.features.Scalar(dtype=np.int32),
            "weather": tfds.features.Scalar(dtype=np.int32),
            "scene": tfds.features.Text(),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        names = list_names(self.builder_config)
        root, list_dir = release_dir(os.fspath(dl_manager.manual_dir), names["train"])
        lists = {split: os.path.join(list_dir, name) for split, name in names.items()}
        entries = {split: read_split_list(path) for split, path in lists.items()}
        _warn_overlap_and_unlisted(root, entries)
        return {
            split: self._generate_examples(root, split, lists[split], items)
            for split, items in entries.items()
        }

    def _generate_examples(self, root: str, split: str, list_path: str, entries):
        require_nonempty(entries, what="frames listed", where=list_path)
        yield from _files.ordered_map(lambda entry: self._example(root, split, entry), entries)

    def _example(self, root: str, split: str, entry: dict):
        cfg: GccConfig = self.builder_config
        scene_dir = os.path.join(root, entry["scene"])
        image_path = os.path.join(scene_dir, "pngs", f"{entry['name']}.png")
        image = _files.read_bytes(image_path)
        rows_cols, ann_path = read_annotation(scene_dir, entry["name"])
        _files.record_count_mismatch(
            self, split, f"{ann_path} (count in the split list)", entry["count"], len(rows_cols)
        )
        points = rows_cols[:, ::-1] + np.float32(cfg.pixel_offset)
        return self.make_example(
            split=split,
            image_id=f"{entry['scene']}/{entry['name']}.png",
            image=image,
            points=points,
            name=image_path,
            extra={
                "crowd_level": np.int32(entry["crowd_level"]),
                "hour": np.int32(entry["hour"]),
                "weather": np.int32(entry["weather"]),
                "scene": entry["scene"],
            },
        )


def _warn_overlap_and_unlisted(root: str, entries: dict[str, list[dict]]) -> None:
    """Logs frames listed in both splits and frames of the release in no list."""
    keys = {split: {(e["scene"], e["name"]) for e in items} for split, items in entries.items()}
    both = keys["train"] & keys["test"]
    if both:
        logging.warning(
            "%s: %d frames are listed in both train and test (e.g. %s)",
            root,
            len(both),
            sorted(both)[:3],
        )
    listed = keys["train"] | keys["test"]
    unlisted = []
    for scene in sorted(os.listdir(root), key=io.natural_key):
        pngs = os.path.join(root, scene, "pngs")
        if not os.path.isdir(pngs):
            continue
        unlisted += [
            f"{scene}/{n}"
            for n in _files.list_images(pngs)
            if n.lower().endswith(".png") and (scene, os.path.splitext(n)[0]) not in listed
        ]
    if unlisted:
        logging.warning(
            "%s: %d frames in no split list of this protocol (e.g. %s)",
            root,
            len(unlisted),
            unlisted[:3],
        )
