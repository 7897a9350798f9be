"""JHU-Crowd++ (v2.0) data set, from the original release.

Sindagi et al., "JHU-CROWD++: large-scale crowd counting dataset and a benchmark method", TPAMI
2020. 4,372 images (2,272 train / 500 val / 1,600 test), 1.51 million heads.

Layout per split `{train,val,test}/`: `images/NNNN.jpg`; `gt/NNNN.txt`, one head per line
`x y w h o b` (head location (x, y), box size, occlusion level 1..3, blur 0/1; the points (x, y)
are used as they are, 0-based); `image_labels.txt`, one image per line
`NNNN,total count,scene type,weather,distractor` (weather 0 none, 1 fog/haze, 2 rain, 3 snow;
distractor 0/1).

Features added: `weather` (ClassLabel none/fog_haze/rain/snow), `scene_type` (text),
`distractor` (bool) and `density_level` (ClassLabel low/medium/high for 0-50, 51-500, > 500
annotated heads, the JHU paper's categories; from the number of annotated points before the
out-of-image rule). The total count of image_labels.txt is checked against the points
(`count_mismatch` in the metadata).

Config `default`: resize like UCF-QNRF (short side >= 512, long side <= 2048, points scaled);
fixed Gaussian sigma 8 px (AutoScale's JHU choice, docs/datasets.md); points outside: clipped.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, bounded_config, require_nonempty

_SPLIT_DIRS = {"train": "train", "validation": "val", "test": "test"}
_RELEASE_DIR = "jhu_crowd_v2.0"
WEATHER = ("none", "fog_haze", "rain", "snow")
DENSITY_LEVELS = ("low", "medium", "high")


def density_level(count: int) -> int:
    """JHU-Crowd++ density category: 0 low (0-50), 1 medium (51-500), 2 high (> 500)."""
    return 0 if count <= 50 else 1 if count <= 500 else 2


def release_dir(manual_dir: str) -> str:
    """The folder holding train/ val/ test/: the manual dir or its jhu_crowd_v2.0 child."""
    for candidate in (manual_dir, _files.find_child(manual_dir, (_RELEASE_DIR,))):
        if candidate and os.path.isfile(os.path.join(candidate, "train", "image_labels.txt")):
            return candidate
    raise io.DataError(
        f"{manual_dir}: no train/image_labels.txt (nor {_RELEASE_DIR}/train/...) found"
    )


def read_image_labels(path: str) -> dict[str, tuple[int, str, int, bool]]:
    """Reads image_labels.txt: {image id: (total count, scene type, weather, distractor)}."""
    io.require_file(path)
    labels = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = [v.strip() for v in line.split(",")]
            try:
                image_id, count, scene, weather, distractor = fields
                count, weather, distractor = int(count), int(weather), int(distractor)
            except ValueError as e:
                raise io.DataError(
                    f"{path}:{lineno}: expected 'id,count,scene,weather,distractor', "
                    f"got {line.strip()!r}"
                ) from e
            if not 0 <= weather < len(WEATHER) or distractor not in (0, 1) or count < 0:
                raise io.DataError(f"{path}:{lineno}: label out of range in {line.strip()!r}")
            if image_id in labels:
                raise io.DataError(f"{path}:{lineno}: image {image_id} listed twice")
            labels[image_id] = (count, scene, weather, bool(distractor))
    return labels


def read_annotation(path: str) -> np.ndarray:
    """Reads `gt/NNNN.txt` (x y w h o b per line): float32 [N, 2] (x, y) points."""
    rows = io.load_text_rows(path, min_columns=6)
    return io.as_points(rows[:, :2], name=path)


class JhuCrowd(CrowdBuilder):
    """JHU-Crowd++ v2.0, read from the original release."""

    name = "jhu_crowd"
    HOMEPAGE = "http://www.crowd-counting.com/"
    CITATION = """@article{sindagi2020jhu,
  title={JHU-CROWD++: Large-Scale Crowd Counting Dataset and A Benchmark Method},
  author={Sindagi, Vishwanath A and Yasarla, Rajeev and Patel, Vishal M},
  journal={IEEE TPAMI}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download jhu_crowd_v2.0 from http://www.crowd-counting.com/ and unpack it. Pass as manual_dir the
jhu_crowd_v2.0 folder (or its parent), which holds, for each of train/, val/, test/:
  images/NNNN.jpg   gt/NNNN.txt (x y w h o b per head)   image_labels.txt
"""
    BUILDER_CONFIGS = [bounded_config(sigma=8.0)]

    def extra_features(self):
        return {
            "weather": tfds.features.ClassLabel(names=WEATHER),
            "scene_type": tfds.features.Text(),
            "distractor": tfds.features.Scalar(dtype=np.bool_),
            "density_level": tfds.features.ClassLabel(names=DENSITY_LEVELS),
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = release_dir(os.fspath(dl_manager.manual_dir))
        return {
            split: self._generate_examples(os.path.join(root, d), split)
            for split, d in _SPLIT_DIRS.items()
        }

    def _generate_examples(self, split_dir: str, split: str):
        image_dir = _files.require_dir(os.path.join(split_dir, "images"), what="images")
        gt_dir = _files.require_dir(os.path.join(split_dir, "gt"), what="gt")
        labels_path = os.path.join(split_dir, "image_labels.txt")
        labels = read_image_labels(labels_path)
        pairs = _files.pair_files(
            image_dir,
            gt_dir,
            ann_name=lambda n: os.path.splitext(n)[0] + ".txt",
            ann_pattern=r".*\.txt",
        )
        require_nonempty(pairs, what="images", where=image_dir)
        ids = [os.path.splitext(os.path.basename(image))[0] for image, _ in pairs]
        for image_id in ids:
            if image_id not in labels:
                raise io.DataError(f"{labels_path}: no line for image {image_id}")
        missing = sorted(set(labels) - set(ids), key=_files.natural_key)
        if missing:
            raise io.DataError(f"{labels_path}: lists images not in {image_dir}: {missing[:5]}")
        jobs = [(image, gt, labels[i]) for (image, gt), i in zip(pairs, ids, strict=True)]
        yield from _files.ordered_map(lambda job: self._example(split, *job), jobs)

    def _example(self, split: str, image_path: str, gt_path: str, label):
        total, scene, weather, distractor = label
        points = read_annotation(gt_path)
        name = f"{gt_path} (total count in image_labels.txt)"
        _files.record_count_mismatch(self, split, name, total, len(points))
        return self.make_example(
            split=split,
            image_id=os.path.basename(image_path),
            image=_files.read_bytes(image_path),
            points=points,
            name=image_path,
            extra={
                "weather": weather,
                "scene_type": scene,
                "distractor": np.bool_(distractor),
                "density_level": density_level(len(points)),
            },
        )
