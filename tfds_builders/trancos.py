"""TRANCOS vehicle counting data set (Guerrero-Gomez-Olmedo et al., IbPRIA 2015).

1244 traffic-camera images (640x480) with one point per vehicle and a region of interest per image.
Release files read (`TRANCOS_v3`, extracted into the manual directory, with or without its top
folder):

  images/image-S-NNNNNN.jpg        the image
  images/image-S-NNNNNN.txt        one vehicle per line, "x y" (whitespace separated) pixel
                                   coordinates, 1-based (MATLAB)
  images/image-S-NNNNNNmask.mat    `BW`: H x W logical region of interest
  image_sets/{training,validation,test}.txt   image file names, one per line

(`images/*dots.png` and `image_sets/trainval.txt` are not read.)

Conventions:
  * Splits `train`, `validation`, `test` from the image sets (GAME is evaluated inside the ROI).
  * The 1-based pixel coordinates become the pixel centre in the project convention by subtracting
    the config's `coordinate_offset` (0.5): 1-based pixel i covers [i - 1, i).
  * Points outside the ROI are kept (the ROI is stored and applied by the metrics); points outside
    the image follow the config's `out_of_image` rule and are counted in `points_outside_image`.
  * Kernel: vehicles are 20-60 px long at 640x480, far larger than heads; fixed sigma 10 px (the
    fixed kernel CSRNet uses for TRANCOS).
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from crowdjax.data import io
from tfds_builders import base

HOMEPAGE = "https://gram.web.uah.es/data/datasets/trancos/index.html"
CITATION = """@inproceedings{guerrero2015extremely,
  title={Extremely Overlapping Vehicle Counting},
  author={Guerrero-G{\\'o}mez-Olmedo, Ricardo and Torre-Jim{\\'e}nez, Beatriz and
          L{\\'o}pez-Sastre, Roberto and Maldonado-Basc{\\'o}n, Saturnino and
          O{\\~n}oro-Rubio, Daniel},
  booktitle={Iberian Conference on Pattern Recognition and Image Analysis (IbPRIA)},
  year={2015}
}"""
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download TRANCOS_v3.tar.gz from {HOMEPAGE} and extract it into the manual directory, giving
  <manual_dir>/TRANCOS_v3/images/image-1-000001.jpg, image-1-000001.txt, image-1-000001mask.mat ...
  <manual_dir>/TRANCOS_v3/image_sets/training.txt, validation.txt, test.txt
(the images/ and image_sets/ folders may also sit directly in <manual_dir>).
"""

SPLIT_FILES = {"train": "training.txt", "validation": "validation.txt", "test": "test.txt"}


@dataclasses.dataclass
class TrancosConfig(base.CrowdConfig):
    """TRANCOS recipe.

    Attributes:
      coordinate_offset: subtracted from the released 1-based pixel (x, y).
    """

    coordinate_offset: float = 0.5


def find_root(manual_dir: str | os.PathLike) -> str:
    """The folder holding `images/` and `image_sets/`: `manual_dir` or `manual_dir/TRANCOS_v3`."""
    manual_dir = os.fspath(manual_dir)
    for root in (manual_dir, os.path.join(manual_dir, "TRANCOS_v3")):
        if os.path.isdir(os.path.join(root, "image_sets")):
            return root
    raise io.DataError(f"{os.path.join(manual_dir, 'TRANCOS_v3', 'image_sets')}: folder not found")


def read_image_set(path: str) -> list[str]:
    """Image file names listed in an image-set file (a missing ".jpg" is added)."""
    io.require_file(path)
    names, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                continue
            if os.path.basename(name) != name:
                raise io.DataError(f"{path}:{lineno}: {name!r} is not a file name")
            if not name.lower().endswith(".jpg"):
                name += ".jpg"
            if name in seen:
                raise io.DataError(f"{path}:{lineno}: {name} is listed twice")
            seen.add(name)
            names.append(name)
    return names


def read_points(path: str, *, image: str) -> np.ndarray:
    """Reads an "x y" per line annotation file as float32 [N, 2] 1-based (x, y)."""
    if not os.path.isfile(path):
        raise io.DataError(f"{path}: file not found, {image} has no annotation")
    return io.as_points(io.load_text_rows(path, min_columns=2), name=path)


def read_mask(path: str) -> np.ndarray:
    """Reads `BW` of an `*mask.mat` as uint8 [H, W], 1 inside the ROI."""
    mask = np.asarray(io.mat_field(io.load_mat(path), ["BW"], name=path))
    if mask.ndim != 2 or mask.size == 0 or mask.dtype.kind not in "biuf":
        raise io.DataError(f"{path}: malformed .mat file, BW has shape {mask.shape} {mask.dtype}")
    return (mask != 0).astype(np.uint8)


class Trancos(base.CrowdBuilder):
    """TRANCOS: vehicles in traffic-camera images, per-image ROI; train/validation/test."""

    HAS_ROI = True
    HOMEPAGE = HOMEPAGE
    CITATION = CITATION
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        TrancosConfig(name="full", description="640x480 images, fixed sigma 10 px.", sigma=10.0),
    ]
    DEFAULT_CONFIG_NAME = "full"

    def _split_generators(self, dl_manager):
        root = find_root(dl_manager.manual_dir)
        images_dir = os.path.join(root, "images")
        splits = {}
        for split, filename in SPLIT_FILES.items():
            path = os.path.join(root, "image_sets", filename)
            names = base.require_nonempty(read_image_set(path), what="image names", where=path)
            # Fail before writing anything when an image or its annotations are missing.
            for name in names:
                stem = os.path.join(images_dir, name[: -len(".jpg")])
                io.require_file(os.path.join(images_dir, name))
                for suffix in (".txt", "mask.mat"):
                    if not os.path.isfile(stem + suffix):
                        raise io.DataError(f"{stem + suffix}: file not found, {name} lacks it")
            splits[split] = self._generate_examples(split, images_dir, names)
        return splits

    def _generate_examples(self, split, images_dir, names):
        cfg: TrancosConfig = self.builder_config
        for name in names:
            path = os.path.join(images_dir, name)
            stem = path[: -len(".jpg")]
            with open(path, "rb") as f:
                image = f.read()
            points = read_points(stem + ".txt", image=path)
            roi = read_mask(stem + "mask.mat")
            key, example = self.make_example(
                split=split,
                image_id=name,
                image=image,
                points=points - np.float32(cfg.coordinate_offset),
                roi=roi,
                name=path,
            )
            height, width = example["density"].shape
            if roi.shape != (height, width):  # nearest neighbour keeps the mask binary
                example["roi"] = cv2.resize(roi, (width, height), interpolation=cv2.INTER_NEAREST)
            yield key, example
