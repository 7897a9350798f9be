"""ShanghaiTech crowd counting data set (parts A and B), from the original release.

Zhang et al., "Single-image crowd counting via multi-column convolutional neural network",
CVPR 2016.
Part A: 300 train / 182 test images from the Internet (dense). Part B: 400 train / 316 test street
photos of 1024x768 (sparser).

Annotations: `GT_IMG_n.mat` holds `image_info`, a 1x1 cell with a struct of fields `location`
(float [N, 2], (x, y) pixels) and `number` (N). Checked on the real part B (1024 x 768 images):
all 88,272 points lie inside (0, W) x (0, H), x in [0.118, 1023.95], y in [0.001, 766.38], with
uniformly spread fractional parts. So the coordinates are used as they are, as 0-based (x, y)
with pixel (r, c) covering [c, c+1) x [r, r+1), as most codebases do (a 1-based MATLAB pixel
convention would put them in [0.5, W + 0.5], and y = 0.001 would be outside the image).

Configs (ground-truth recipe):
  part_a: geometry-adaptive kernels (MCNN; sigma_i = 0.3 * mean distance to the 3 nearest heads),
    the common choice for the dense part A.
  part_b: fixed sigma = 8 px, AutoScale's choice for part B (docs/datasets.md).
  part_a_512, part_b_512: the same recipes with every image's long side at most 512 px (part B's
    1024 x 768 images halved to 512 x 384, points scaled; part B's sigma halved to 4 px, the
    same kernel relative to the image): one scale for training and evaluation on a CPU (the
    `:cpu` configs). Other recipes (e.g.
    CSRNet's sigma 15) are a `CrowdConfig` away: `tfds.builder("shanghaitech",
    config=CrowdConfig(name="part_b_s15", sigma=15.0, ...))` with a name starting with the part.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, CrowdConfig, require_nonempty

_PART_DIRS = {"a": ("part_A", "part_A_final"), "b": ("part_B", "part_B_final")}
_SPLIT_DIRS = {"train": "train_data", "test": "test_data"}


def part_of(config: CrowdConfig) -> str:
    """'a' or 'b': the part a config reads, from its name (`part_a`, `part_b_...`)."""
    name = config.name.lower()
    for part in ("a", "b"):
        if name == f"part_{part}" or name.startswith(f"part_{part}_"):
            return part
    raise ValueError(f"ShanghaiTech config names start with part_a or part_b, got {config.name!r}")


def part_dir(manual_dir: str, part: str) -> str:
    """The `part_X` folder: the manual dir's child, or the manual dir itself.

    Raises:
      DataError: neither layout is found, or the manual dir is the other part's folder.
    """
    child = _files.find_child(manual_dir, _PART_DIRS[part])
    if child is not None:
        return child
    if os.path.isdir(os.path.join(manual_dir, _SPLIT_DIRS["train"])):
        other = "b" if part == "a" else "a"
        base = os.path.basename(os.path.normpath(manual_dir)).lower()
        if base in (d.lower() for d in _PART_DIRS[other]):
            raise io.DataError(
                f"{manual_dir}: this is part {other.upper()}, not part {part.upper()}"
            )
        return manual_dir
    raise io.DataError(
        f"{manual_dir}: neither a ShanghaiTech root (with {_PART_DIRS[part][0]}/) nor a part "
        "folder (with train_data/ and test_data/)"
    )


def read_annotation(path: str) -> tuple[np.ndarray, int]:
    """Reads `GT_IMG_n.mat`: returns (points [N, 2] float32 (x, y), declared number)."""
    mat = io.load_mat(path)
    info = _files.unwrap(io.mat_field(mat, ["image_info"], name=path))
    names = getattr(getattr(info, "dtype", None), "names", None) or ()
    if "location" not in names:
        raise io.DataError(
            f"{path}: malformed .mat file, image_info has no struct with a 'location' field"
        )
    record = info.flat[0] if isinstance(info, np.ndarray) else info
    points = io.as_points(_files.unwrap(record["location"]), name=path)
    number = (
        _files.as_int(record["number"], name=path, what="image_info.number")
        if "number" in names
        else len(points)
    )
    return points, number


class ShanghaiTech(CrowdBuilder):
    """ShanghaiTech part A / part B, read from the original release."""

    name = "shanghaitech"
    HOMEPAGE = "https://github.com/desenzhou/ShanghaiTechDataset"
    CITATION = """@inproceedings{zhang2016single,
  title={Single-image crowd counting via multi-column convolutional neural network},
  author={Zhang, Yingying and Zhou, Desen and Chen, Siqin and Gao, Shenghua and Ma, Yi},
  booktitle={CVPR}, year={2016}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download ShanghaiTech from the authors (https://github.com/desenzhou/ShanghaiTechDataset) and
unpack it. Pass as manual_dir either the root containing part_A/ and part_B/ (or part_A_final/,
part_B_final/) or one part folder itself. Each part has:
  {train,test}_data/images/IMG_n.jpg
  {train,test}_data/ground-truth/GT_IMG_n.mat   (image_info{1}.location N x 2 (x, y), .number)
"""
    BUILDER_CONFIGS = [
        CrowdConfig(
            name="part_a",
            adaptive=True,
            beta=0.3,
            k=3,
            description="Part A; geometry-adaptive kernels (beta 0.3, k 3).",
        ),
        CrowdConfig(name="part_b", sigma=8.0, description="Part B; fixed Gaussian, sigma 8 px."),
        CrowdConfig(
            name="part_a_512",
            adaptive=True,
            beta=0.3,
            k=3,
            max_long_side=512,
            description="Part A, long side <= 512 px; geometry-adaptive kernels (beta 0.3, k 3).",
        ),
        CrowdConfig(
            name="part_b_512",
            sigma=4.0,
            max_long_side=512,
            description="Part B halved to 512 x 384; fixed Gaussian, sigma 4 px.",
        ),
    ]

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = part_dir(os.fspath(dl_manager.manual_dir), part_of(self.builder_config))
        return {split: self._generate_examples(root, split) for split in _SPLIT_DIRS}

    def _generate_examples(self, root: str, split: str):
        split_dir = _files.require_dir(os.path.join(root, _SPLIT_DIRS[split]), what="split")
        image_dir = _files.require_dir(os.path.join(split_dir, "images"), what="images")
        gt_dir = _files.require_dir(os.path.join(split_dir, "ground-truth"), what="ground-truth")
        pairs = _files.pair_files(
            image_dir,
            gt_dir,
            ann_name=lambda n: "GT_" + os.path.splitext(n)[0] + ".mat",
            ann_pattern=r"GT_.*\.mat",
        )
        require_nonempty(pairs, what="images", where=image_dir)
        yield from _files.ordered_map(lambda pair: self._example(split, *pair), pairs)

    def _example(self, split: str, image_path: str, gt_path: str):
        points, number = read_annotation(gt_path)
        _files.record_count_mismatch(self, split, gt_path, number, len(points))
        return self.make_example(
            split=split,
            image_id=os.path.basename(image_path),
            image=_files.read_bytes(image_path),
            points=points,
            name=image_path,
        )
