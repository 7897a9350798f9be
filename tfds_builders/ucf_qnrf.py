"""UCF-QNRF crowd counting data set, from the original release.

Idrees et al., "Composition loss for counting, density map estimation and localization in dense
crowds", ECCV 2018. 1,535 images (1,201 train / 334 test), 1.25 million heads, up to 9000 x 6000.

Annotations: `img_NNNN_ann.mat` with `annPoints` [N, 2] (x, y) pixels, used as they are
(0-based, like the Bayesian-loss and UOT code). MATLAB v7.3 files are read too.

Config `default`: images are resized (points scaled alike) so that the short side is at least
512 and the long side at most 2048 (UOT/AutoScale practice; the short-side rule is applied first,
see `base.resize_scale`); fixed Gaussian sigma 8 px (AutoScale's QNRF choice, docs/datasets.md);
annotated points outside the image are clipped to the border (counted in the metadata).

Config `l2sm`: images larger than 1920 x 1080 (long side x short side, either orientation) are
downscaled to fit it, aspect ratio kept (points scaled alike), smaller ones are kept as they are
(no minimum short side); fixed Gaussian sigma 8 px. L2SM trains on these whole images, each split
2 x 2 into four tiles (`data.whole_image`, `data.train_tiles`).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, CrowdConfig, bounded_config, require_nonempty

_SPLIT_DIRS = {"train": "Train", "test": "Test"}
_RELEASE_DIR = "UCF-QNRF_ECCV18"


def release_dir(manual_dir: str) -> str:
    """The folder holding Train/ and Test/: the manual dir or its UCF-QNRF_ECCV18 child."""
    for candidate in (manual_dir, _files.find_child(manual_dir, (_RELEASE_DIR,))):
        if candidate and _files.find_child(candidate, (_SPLIT_DIRS["train"],)):
            return candidate
    raise io.DataError(f"{manual_dir}: no Train/ folder (nor {_RELEASE_DIR}/Train/) found")


def read_annotation(path: str):
    """Reads `img_NNNN_ann.mat`: float32 [N, 2] (x, y) points."""
    return io.as_points(io.mat_field(io.load_mat(path), ["annPoints"], name=path), name=path)


class UcfQnrf(CrowdBuilder):
    """UCF-QNRF, read from the original release."""

    name = "ucf_qnrf"
    HOMEPAGE = "https://www.crcv.ucf.edu/data/ucf-qnrf/"
    CITATION = """@inproceedings{idrees2018composition,
  title={Composition loss for counting, density map estimation and localization in dense crowds},
  author={Idrees, Haroon and Tayyab, Muhmmad and Athrey, Kishan and Zhang, Dong and
          Al-Maadeed, Somaya and Rajpoot, Nasir and Shah, Mubarak},
  booktitle={ECCV}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download UCF-QNRF_ECCV18.zip from https://www.crcv.ucf.edu/data/ucf-qnrf/ and unpack it. Pass as
manual_dir the UCF-QNRF_ECCV18 folder (or its parent), which holds:
  Train/img_NNNN.jpg, Train/img_NNNN_ann.mat   (annPoints: N x 2, (x, y))
  Test/img_NNNN.jpg,  Test/img_NNNN_ann.mat
"""
    BUILDER_CONFIGS = [
        bounded_config(sigma=8.0),
        CrowdConfig(
            name="l2sm",
            sigma=8.0,
            max_box=(1920, 1080),
            description=(
                "Downscaled to fit 1920 x 1080 (long x short side, aspect ratio kept), smaller "
                "images kept; fixed Gaussian, sigma 8 px (L2SM's whole-image training)."
            ),
        ),
    ]

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = release_dir(os.fspath(dl_manager.manual_dir))
        return {split: self._generate_examples(root, split) for split in _SPLIT_DIRS}

    def _generate_examples(self, root: str, split: str):
        split_dir = _files.find_child(root, (_SPLIT_DIRS[split],))
        split_dir = _files.require_dir(
            split_dir or os.path.join(root, _SPLIT_DIRS[split]), what="split"
        )
        pairs = _files.pair_files(
            split_dir,
            split_dir,
            ann_name=lambda n: os.path.splitext(n)[0] + "_ann.mat",
            ann_pattern=r".*_ann\.mat",
        )
        require_nonempty(pairs, what="images", where=split_dir)
        yield from _files.ordered_map(lambda pair: self._example(split, *pair), pairs)

    def _example(self, split: str, image_path: str, ann_path: str):
        return self.make_example(
            split=split,
            image_id=os.path.basename(image_path),
            image=_files.read_bytes(image_path),
            points=read_annotation(ann_path),
            name=image_path,
        )
