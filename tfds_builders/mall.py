"""Mall data set (Chen et al., BMVC 2012): 2000 frames of one shopping-mall surveillance camera.

Release files read (`mall_dataset.zip`, extracted into the manual directory, with or without its
top folder `mall_dataset/`):

  frames/seq_000001.jpg ... seq_002000.jpg   640x480 RGB frames, numbered from 1
  mall_gt.mat          `frame`: 1x2000 cell of structs, `frame{i}.loc` N_i x 2 head points (x, y);
                       `count`: 2000x1 head counts
  perspective_roi.mat  `roi.mask`: 480x640 region of interest; `pMapN`: 480x640 perspective map

`frame` stored as a 1x2000 struct array (`frame(i).loc`) is read as well. MATLAB v7.3 (HDF5) files
with cells are not supported (the release uses MATLAB v5 files).

Conventions:
  * The points are MATLAB pixel coordinates (centre of the top-left pixel at (1, 1)); the config's
    `coordinate_offset` (0.5) is subtracted to reach the project convention (pixel (r, c) covers
    [c, c+1) x [r, r+1)). Assumed from the MATLAB tooling of the release, not checked on it.
  * Splits: frames 1..800 `train`, 801..2000 `test` (the protocol of the paper).
  * GT count = number of points. Where `count(i)` disagrees with the points, the points win; each
    disagreement is logged and counted in the metadata (`count_mismatch`).
  * Points outside the ROI are kept (the ROI is stored and applied by the metrics); points outside
    the image follow the config's `out_of_image` rule and are counted in `points_outside_image`.
  * The perspective map is stored as `perspective` (values as released, only resampled to the stored
    image size; an empty [0, 0] array if the release lacks `pMapN`).
  * Kernel: fixed Gaussian, sigma 4 px at 640x480 (heads are about 10-25 px wide in this view, the
    usual 15x15 / sigma 4 recipe for Mall); sigma 2 for the 320x240 config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import cv2
import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import base
from tfds_builders._files import resize_like, struct_field

HOMEPAGE = "https://personal.ie.cuhk.edu.hk/~ccloy/downloads_mall_dataset.html"
CITATION = """@inproceedings{chen2012feature,
  title={Feature Mining for Localised Crowd Counting},
  author={Chen, Ke and Loy, Chen Change and Gong, Shaogang and Xiang, Tao},
  booktitle={British Machine Vision Conference (BMVC)},
  year={2012}
}"""
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download mall_dataset.zip from {HOMEPAGE} and extract it into the manual directory, giving
  <manual_dir>/mall_dataset/frames/seq_000001.jpg ... seq_002000.jpg
  <manual_dir>/mall_dataset/mall_gt.mat
  <manual_dir>/mall_dataset/perspective_roi.mat
(the files may also sit directly in <manual_dir>).
"""

_FRAME_RE = re.compile(r"^seq_(\d{6})\.jpg$")


@dataclasses.dataclass
class MallConfig(base.CrowdConfig):
    """Mall recipe.

    Attributes:
      num_train: frames 1..num_train form `train`, the others `test`.
      coordinate_offset: subtracted from the released (x, y) (MATLAB pixel centres at integers).
    """

    num_train: int = 800
    coordinate_offset: float = 0.5


def find_root(manual_dir: str | os.PathLike) -> str:
    """The folder holding `mall_gt.mat`: `manual_dir` or `manual_dir/mall_dataset`."""
    for root in (os.fspath(manual_dir), os.path.join(manual_dir, "mall_dataset")):
        if os.path.isfile(os.path.join(root, "mall_gt.mat")):
            return root
    raise io.DataError(f"{os.path.join(manual_dir, 'mall_dataset', 'mall_gt.mat')}: file not found")


def read_annotations(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """Reads `mall_gt.mat`.

    Returns:
      (points, counts): points[i] float32 [N_i, 2] MATLAB (x, y) of frame i + 1; counts int64 [F].
    """
    path = os.fspath(path)
    mat = io.load_mat(path)
    frame = io.mat_field(mat, ["frame"], name=path)
    count = np.asarray(io.mat_field(mat, ["count"], name=path))
    if not isinstance(frame, np.ndarray) or frame.ndim != 2 or 1 not in frame.shape:
        raise io.DataError(
            f"{path}: malformed .mat file, `frame` is not a 1xF cell or struct array"
        )
    if frame.dtype.names:  # struct array: frame(i).loc
        if "loc" not in frame.dtype.names:
            raise io.DataError(f"{path}: malformed .mat file, `frame` has no field 'loc'")
        locs = list(frame["loc"].ravel())
    else:  # cell of structs: frame{i}.loc
        locs = [
            struct_field(cell, "loc", name=f"{path} frame{{{i + 1}}}")
            for i, cell in enumerate(frame.ravel())
        ]
    points = [io.as_points(loc, name=f"{path} frame{{{i + 1}}}.loc") for i, loc in enumerate(locs)]
    if count.size != len(points) or not np.issubdtype(count.dtype, np.number):
        raise io.DataError(
            f"{path}: malformed .mat file, `count` has {count.size} entries, `frame` {len(points)}"
        )
    return points, count.ravel().astype(np.int64)


def read_perspective_roi(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads `perspective_roi.mat`: ROI mask uint8 [H, W] (1 inside) and `pMapN` or None."""
    path = os.fspath(path)
    mat = io.load_mat(path)
    mask = np.asarray(struct_field(io.mat_field(mat, ["roi"], name=path), "mask", name=path))
    if mask.ndim != 2 or mask.size == 0:
        raise io.DataError(f"{path}: malformed .mat file, roi.mask has shape {mask.shape}")
    pmap = mat.get("pMapN")
    if pmap is not None:
        pmap = np.asarray(pmap, np.float32)
        if pmap.shape != mask.shape or not np.all(np.isfinite(pmap)):
            raise io.DataError(f"{path}: malformed pMapN of shape {pmap.shape} (ROI {mask.shape})")
    else:
        logging.warning("%s: no pMapN, the `perspective` feature will be empty", path)
    return (mask != 0).astype(np.uint8), pmap


def list_frames(frames_dir: str, num_annotated: int) -> dict[int, str]:
    """Maps frame number (1-based) -> path; every image needs an annotation and vice versa."""
    if not os.path.isdir(frames_dir):
        raise io.DataError(f"{frames_dir}: folder not found")
    frames = {}
    for entry in sorted(os.listdir(frames_dir)):
        match = _FRAME_RE.match(entry)
        if not match:
            continue  # e.g. Thumbs.db or duplicated "seq_000001 (1).jpg" copies
        index = int(match.group(1))
        if not 1 <= index <= num_annotated:
            raise io.DataError(
                f"{os.path.join(frames_dir, entry)}: image without annotation "
                f"(mall_gt.mat annotates frames 1..{num_annotated})"
            )
        frames[index] = os.path.join(frames_dir, entry)
    for index in range(1, num_annotated + 1):
        if index not in frames:
            io.require_file(os.path.join(frames_dir, f"seq_{index:06d}.jpg"))
    return frames


class Mall(base.CrowdBuilder):
    """Mall: 2000 frames, ROI and perspective map; train 1..800, test 801..2000."""

    HAS_ROI = True
    HOMEPAGE = HOMEPAGE
    CITATION = CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        MallConfig(name="full", description="640x480 frames, fixed sigma 4 px.", sigma=4.0),
        MallConfig(
            name="half",
            description="320x240 frames (the size quoted by ASNet), fixed sigma 2 px.",
            sigma=2.0,
            max_long_side=320,
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"

    def extra_features(self):
        return {
            "frame_index": tfds.features.Scalar(dtype=np.int32),
            "perspective": tfds.features.Tensor(
                shape=(None, None), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
            ),
        }

    def _split_generators(self, dl_manager):
        cfg: MallConfig = self.builder_config
        root = find_root(dl_manager.manual_dir)
        points, counts = read_annotations(os.path.join(root, "mall_gt.mat"))
        roi, pmap = read_perspective_roi(os.path.join(root, "perspective_roi.mat"))
        frames_dir = os.path.join(root, "frames")
        frames = list_frames(frames_dir, len(points))
        splits = {
            "train": [i for i in sorted(frames) if i <= cfg.num_train],
            "test": [i for i in sorted(frames) if i > cfg.num_train],
        }
        data = dict(frames=frames, points=points, counts=counts, roi=roi, pmap=pmap)
        return {
            split: self._generate_examples(
                split, base.require_nonempty(ids, what="frames", where=frames_dir), **data
            )
            for split, ids in splits.items()
        }

    def _generate_examples(self, split, ids, *, frames, points, counts, roi, pmap):
        cfg: MallConfig = self.builder_config
        for index in ids:
            path = frames[index]
            with open(path, "rb") as f:
                image = f.read()
            pts = points[index - 1]
            # The points are the ground truth; a disagreeing `count` is reported, not used.
            self.count_in_metadata("count_mismatch", split, int(counts[index - 1] != len(pts)))
            if counts[index - 1] != len(pts):
                logging.warning(
                    "%s: mall_gt.mat count %d != %d annotated points; the points are kept",
                    path,
                    counts[index - 1],
                    len(pts),
                )
            key, example = self.make_example(
                split=split,
                image_id=os.path.basename(path),
                image=image,
                points=pts - np.float32(cfg.coordinate_offset),
                roi=roi,
                name=path,
            )
            shape = example["density"].shape
            # Nearest-neighbour ROI resampling (independent of how the base class resizes it).
            example["roi"] = resize_like(roi, shape, cv2.INTER_NEAREST)
            perspective = np.zeros((0, 0), np.float32) if pmap is None else pmap
            if perspective.size and perspective.shape != shape:
                perspective = resize_like(perspective, shape, cv2.INTER_LINEAR)
            example["frame_index"] = np.int32(index)
            example["perspective"] = perspective
            yield key, example
