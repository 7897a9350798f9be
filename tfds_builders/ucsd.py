"""UCSD pedestrian counting data set (Chan et al., CVPR 2008): 2000 frames of one walkway.

Release files read (`ucsdpeds.zip` and `vidf-cvpr.zip`, extracted into the manual directory):

  vidf1_33_00X.y/vidf1_33_00X_fNNN.png    X = 0..9, NNN = 001..200: 238x158 grayscale frames
                                          (also found under `vidf/` or `ucsdpeds/vidf/`)
  vidf-cvpr/vidf1_33_00X_frame_full.mat   `frame`: 1x200 cell of structs, `frame{i}.loc` N_i x 3
                                          (x, y, z) head points of frame i (z unused)
  vidf-cvpr/vidf1_33_roi_mainwalkway.mat  `roi.mask`: 158x238 region of interest
  vidf-cvpr/vidf1_33_dmap3.mat            `dmap.pmapxy`: 158x238 perspective map (optional)

Conventions:
  * The points are MATLAB pixel coordinates (pixel centres at integers, from 1); the config's
    `coordinate_offset` (0.5) is subtracted to reach the project convention (a public port
    reports that this shift best reproduces the release's own in-ROI counts).
  * Splits: the standard protocol, frames 601-1400 (sequences 003-006) `train`, the other 1200
    frames `test`.
  * Grayscale frames are stored as RGB PNG (three equal channels).
  * Points outside the ROI are kept (the ROI is stored, applied by the metrics); points outside the
    image follow the config's `out_of_image` rule and are counted in `points_outside_image`.
  * `perspective` holds `dmap.pmapxy` (values as released, resampled to the stored image size), or
    an empty [0, 0] array when `vidf1_33_dmap3.mat` is absent.
  * Kernels: pedestrians are tiny here (heads about 3-5 px at 238x158), so the native config uses a
    fixed sigma of 1.5 px (kernel radius 6 px). The `x4` config upsamples the frames 4x to 952x632
    (as CSRNet does) and scales sigma with it (6 px), keeping the same kernel in scene units;
    CSRNet's own choice there is sigma 3 (a sharper target).
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

HOMEPAGE = "http://www.svcl.ucsd.edu/projects/peoplecnt/"
CITATION = """@inproceedings{chan2008privacy,
  title={Privacy Preserving Crowd Monitoring: Counting People without People Models or Tracking},
  author={Chan, Antoni B. and Liang, Zhang-Sheng John and Vasconcelos, Nuno},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2008}
}"""
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download db/ucsdpeds.zip (frames) and db/vidf-cvpr.zip (annotations) from {HOMEPAGE} and extract
both into the manual directory, giving
  <manual_dir>/ucsdpeds/vidf/vidf1_33_000.y/vidf1_33_000_f001.png ... vidf1_33_009.y/..._f200.png
  <manual_dir>/vidf-cvpr/vidf1_33_00X_frame_full.mat (X = 0..9)
  <manual_dir>/vidf-cvpr/vidf1_33_roi_mainwalkway.mat and vidf1_33_dmap3.mat
(the vidf1_33_00X.y folders may also sit directly in <manual_dir> or in <manual_dir>/vidf).
"""

SEQUENCES = tuple(range(10))
_FRAME_RE = re.compile(r"^vidf1_33_(\d{3})_f(\d{3})\.png$")


@dataclasses.dataclass
class UcsdConfig(base.CrowdConfig):
    """UCSD recipe.

    Attributes:
      train_sequences: sequences (0..9) of the `train` split; the others form `test`.
      coordinate_offset: subtracted from the released (x, y) (MATLAB pixel centres at integers).
    """

    train_sequences: tuple[int, ...] = (3, 4, 5, 6)
    coordinate_offset: float = 0.5


def seq_name(seq: int) -> str:
    return f"vidf1_33_{seq:03d}"


def find_frames_root(manual_dir: str | os.PathLike) -> str:
    """The folder holding the `vidf1_33_00X.y` frame folders."""
    manual_dir = os.fspath(manual_dir)
    candidates = [manual_dir, os.path.join(manual_dir, "vidf")]
    candidates.append(os.path.join(manual_dir, "ucsdpeds", "vidf"))
    for root in candidates:
        if os.path.isdir(os.path.join(root, seq_name(0) + ".y")):
            return root
    raise io.DataError(f"{os.path.join(candidates[-1], seq_name(0) + '.y')}: folder not found")


def read_frame_points(path: str | os.PathLike) -> list[np.ndarray]:
    """Reads a `*_frame_full.mat`: float32 [N_i, 2] MATLAB (x, y) per frame, in frame order."""
    path = os.fspath(path)
    frame = io.mat_field(io.load_mat(path), ["frame"], name=path)
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
    return [io.as_points(loc, name=f"{path} frame{{{i + 1}}}.loc") for i, loc in enumerate(locs)]


def read_map(path: str, struct: str, field: str, *, shape: tuple[int, int] | None = None):
    """Reads the 2D array `struct.field` of a .mat file as float32 (finite, optional shape)."""
    value = struct_field(io.mat_field(io.load_mat(path), [struct], name=path), field, name=path)
    value = np.asarray(value, np.float32)
    if value.ndim != 2 or value.size == 0 or (shape is not None and value.shape != shape):
        raise io.DataError(f"{path}: malformed {struct}.{field} of shape {value.shape}")
    if not np.all(np.isfinite(value)):
        raise io.DataError(f"{path}: non-finite values in {struct}.{field}")
    return value


def list_frames(seq_dir: str, seq: int, num_annotated: int) -> dict[int, str]:
    """Frame number (1-based) -> PNG path; every image needs an annotation and vice versa."""
    if not os.path.isdir(seq_dir):
        raise io.DataError(f"{seq_dir}: folder not found")
    frames = {}
    for entry in sorted(os.listdir(seq_dir)):
        if not entry.lower().endswith(".png"):
            continue
        path = os.path.join(seq_dir, entry)
        match = _FRAME_RE.match(entry)
        if not match or int(match.group(1)) != seq:
            raise io.DataError(f"{path}: unexpected frame name (want {seq_name(seq)}_fNNN.png)")
        index = int(match.group(2))
        if not 1 <= index <= num_annotated:
            raise io.DataError(
                f"{path}: image without annotation "
                f"({seq_name(seq)}_frame_full.mat annotates frames 1..{num_annotated})"
            )
        frames[index] = path
    for index in range(1, num_annotated + 1):
        if index not in frames:
            io.require_file(os.path.join(seq_dir, f"{seq_name(seq)}_f{index:03d}.png"))
    return frames


class Ucsd(base.CrowdBuilder):
    """UCSD vidf1_33: 10 x 200 frames, ROI and perspective map; train = sequences 003-006."""

    HAS_ROI = True
    IMAGE_FORMAT = "png"
    HOMEPAGE = HOMEPAGE
    CITATION = CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        UcsdConfig(name="native", description="238x158 frames, fixed sigma 1.5 px.", sigma=1.5),
        UcsdConfig(
            name="x4",
            description="Frames upsampled 4x to 952x632 (CSRNet), fixed sigma 6 px.",
            sigma=6.0,
            min_short_side=632,
        ),
    ]
    DEFAULT_CONFIG_NAME = "native"

    def extra_features(self):
        return {
            "sequence": tfds.features.Scalar(dtype=np.int32),
            "frame_index": tfds.features.Scalar(dtype=np.int32),
            "perspective": tfds.features.Tensor(
                shape=(None, None), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB
            ),
        }

    def _split_generators(self, dl_manager):
        cfg: UcsdConfig = self.builder_config
        unknown = set(cfg.train_sequences) - set(SEQUENCES)
        if unknown:
            raise ValueError(f"train_sequences must be in {SEQUENCES}, got {sorted(unknown)}")
        frames_root = find_frames_root(dl_manager.manual_dir)
        ann_dir = os.path.join(dl_manager.manual_dir, "vidf-cvpr")
        roi = read_map(os.path.join(ann_dir, "vidf1_33_roi_mainwalkway.mat"), "roi", "mask")
        roi = (roi != 0).astype(np.uint8)
        dmap_path = os.path.join(ann_dir, "vidf1_33_dmap3.mat")
        if os.path.exists(dmap_path):
            pmap = read_map(dmap_path, "dmap", "pmapxy", shape=roi.shape)
        else:
            logging.warning("%s: not found, the `perspective` feature will be empty", dmap_path)
            pmap = np.zeros((0, 0), np.float32)
        items = {"train": [], "test": []}
        for seq in SEQUENCES:
            points = read_frame_points(os.path.join(ann_dir, f"{seq_name(seq)}_frame_full.mat"))
            seq_dir = os.path.join(frames_root, seq_name(seq) + ".y")
            frames = list_frames(seq_dir, seq, len(points))
            split = "train" if seq in cfg.train_sequences else "test"
            items[split] += [(seq, i, frames[i], points[i - 1]) for i in sorted(frames)]
        return {
            split: self._generate_examples(
                split,
                base.require_nonempty(its, what="annotated frames", where=frames_root),
                roi=roi,
                pmap=pmap,
            )
            for split, its in items.items()
        }

    def _generate_examples(self, split, items, *, roi, pmap):
        cfg: UcsdConfig = self.builder_config
        for seq, index, path, points in items:
            with open(path, "rb") as f:
                image = f.read()
            key, example = self.make_example(
                split=split,
                image_id=os.path.basename(path),
                image=image,
                points=points - np.float32(cfg.coordinate_offset),
                roi=roi,
                name=path,
            )
            shape = example["density"].shape
            # Nearest-neighbour ROI resampling (independent of how the base class resizes it).
            example["roi"] = resize_like(roi, shape, cv2.INTER_NEAREST)
            example["perspective"] = (
                resize_like(pmap, shape, cv2.INTER_LINEAR) if pmap.size else pmap
            )
            example["sequence"] = np.int32(seq)
            example["frame_index"] = np.int32(index)
            yield key, example
