"""UCF_CC_50 crowd counting data set, from the original release, as 5 cross-validation folds.

Idrees et al., "Multi-source multi-scale counting in extremely dense crowd images", CVPR 2013.
50 grayscale images (`1.jpg` ... `50.jpg`) with 94 to 4,543 heads, `n_ann.mat` holding
`annPoints` [N, 2] (x, y) pixels (used as they are, 0-based).

Splits: `fold1` ... `fold5`, fold k = images 10(k - 1) + 1 ... 10k in the release numbering, the
conventional 5-fold protocol (train on four folds, test on the fifth, average the five MAEs), e.g.
`split="fold1+fold2+fold3+fold4"` for training on the first four.

Some annotated points lie outside their image. Configs:
  clip (default): clipped to the border pixels; `drop`: removed. Either way the number per fold
  is logged and stored in the metadata (`points_outside_image`).
Both use geometry-adaptive kernels (beta 0.3, k 3: the images are as dense as ShanghaiTech A,
as in MCNN/CSRNet) and no resizing. Images are stored as PNG: the grayscale JPEGs are expanded
to RGB without a second lossy compression.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders.base import CrowdBuilder, CrowdConfig

NUM_IMAGES = 50
NUM_FOLDS = 5
_RELEASE_DIR = "UCF_CC_50"


def fold_images(fold: int) -> list[int]:
    """Image numbers of fold 1..5: ten consecutive images of the release numbering."""
    size = NUM_IMAGES // NUM_FOLDS
    return list(range((fold - 1) * size + 1, fold * size + 1))


def release_dir(manual_dir: str) -> str:
    """The folder holding 1.jpg ... 50.jpg: the manual dir or its UCF_CC_50 child."""
    for candidate in (manual_dir, _files.find_child(manual_dir, (_RELEASE_DIR,))):
        if candidate and os.path.isfile(os.path.join(candidate, "1.jpg")):
            return candidate
    raise io.DataError(f"{manual_dir}: no 1.jpg (nor {_RELEASE_DIR}/1.jpg) found")


def read_annotation(path: str):
    """Reads `n_ann.mat`: float32 [N, 2] (x, y) points."""
    return io.as_points(io.mat_field(io.load_mat(path), ["annPoints"], name=path), name=path)


def _config(name: str, rule: str) -> CrowdConfig:
    return CrowdConfig(
        name=name,
        adaptive=True,
        beta=0.3,
        k=3,
        out_of_image=rule,
        description=f"Adaptive kernels; points outside the image: {rule}.",
    )


class UcfCc50(CrowdBuilder):
    """UCF_CC_50 in five folds, read from the original release."""

    name = "ucf_cc_50"
    IMAGE_FORMAT = "png"
    HOMEPAGE = "https://www.crcv.ucf.edu/data/ucf-cc-50/"
    CITATION = """@inproceedings{idrees2013multi,
  title={Multi-source multi-scale counting in extremely dense crowd images},
  author={Idrees, Haroon and Saleemi, Imran and Seibert, Cody and Shah, Mubarak},
  booktitle={CVPR}, year={2013}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download UCF_CC_50.zip from https://www.crcv.ucf.edu/data/ucf-cc-50/ and unpack it. Pass as
manual_dir the UCF_CC_50 folder (or its parent), which holds 1.jpg ... 50.jpg and
1_ann.mat ... 50_ann.mat (annPoints: N x 2, (x, y)).
"""
    BUILDER_CONFIGS = [_config("clip", "clip"), _config("drop", "drop")]

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = release_dir(os.fspath(dl_manager.manual_dir))
        self._check_release(root)
        return {
            f"fold{k}": self._generate_examples(root, f"fold{k}", fold_images(k))
            for k in range(1, NUM_FOLDS + 1)
        }

    def _check_release(self, root: str) -> None:
        """Every file of the release is there, and nothing else that would be left out."""
        expected = {f"{n}.jpg" for n in range(1, NUM_IMAGES + 1)}
        expected |= {f"{n}_ann.mat" for n in range(1, NUM_IMAGES + 1)}
        for name in sorted(expected, key=_files.natural_key):
            io.require_file(os.path.join(root, name))
        pairs = _files.pair_files(
            root,
            root,
            ann_name=lambda n: os.path.splitext(n)[0] + "_ann.mat",
            ann_pattern=r".*_ann\.mat",
        )
        extra = sorted({os.path.basename(p) for pair in pairs for p in pair} - expected)
        if extra:
            raise io.DataError(
                f"{root}: files outside the 50-image release would be left out: {extra[:5]}"
            )

    def _generate_examples(self, root: str, split: str, numbers: list[int]):
        jobs = [
            (os.path.join(root, f"{n}.jpg"), os.path.join(root, f"{n}_ann.mat")) for n in numbers
        ]
        yield from _files.ordered_map(lambda job: self._example(split, *job), jobs)

    def _example(self, split: str, image_path: str, ann_path: str):
        return self.make_example(
            split=split,
            image_id=os.path.basename(image_path),
            image=_files.read_bytes(image_path),
            points=read_annotation(ann_path),
            name=image_path,
        )
