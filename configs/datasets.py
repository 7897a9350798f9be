"""Facts about each data set, in one place: every config reads them from here.

Split sizes are those of the official releases (the builders check them against the files).
`validation` is the size of an official validation split; where there is none (None), the
engine holds `data.holdout_fraction` of the training split out for model selection (see
`crowdjax.data.splits`), so a run trains on `training_images(...)` images. Resize rules are
applied by the builders and repeated here for the docs. What a method sets per data set (its
crop, its paper's Gaussian sigma) lives with the method's configs (e.g. `configs/uot_common.py`;
docs/methods/); resize rules are documented in docs/datasets.md.
Your own data sets (`user_crowd/<name>`) are not listed: `get` reads their facts from the
prepared data (`user_facts`).
"""

from __future__ import annotations

import dataclasses

from crowdjax.data import datasets as data_sources
from crowdjax.data import settings, splits


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """One data set.

    Attributes:
      name: the data set, `builder[/config]`.
      train, test: official split sizes (images).
      validation: official validation split size, or None (held out of train).
      resize: the builder's resize rule (documentation).
      holdout_mode: "random" images, or a "block" of consecutive frames (video data sets, whose
        neighbouring frames are near duplicates).
      public_test: the test split's annotations are released (NWPU-Crowd's are not).
    """

    name: str
    train: int
    test: int
    validation: int | None = None
    resize: str = "none"
    holdout_mode: str = "random"
    public_test: bool = True

    def training_images(self, holdout_fraction: float) -> int:
        """Images in the training stream: all of train, or train without its held-out part."""
        if self.validation is not None or holdout_fraction <= 0:
            return self.train
        return self.train - splits.holdout_size(self.train, holdout_fraction)


DATASETS = {
    "sha": DatasetFacts(
        "shanghaitech/part_a",
        train=300,
        test=182,
        resize="none (geometry-adaptive kernels, beta 0.3, k 3)",
    ),
    "shb": DatasetFacts(
        "shanghaitech/part_b",
        train=400,
        test=316,
    ),
    # Long side <= 512 px (part B halved): one scale for training and evaluation on a CPU.
    "sha_512": DatasetFacts(
        "shanghaitech/part_a_512",
        train=300,
        test=182,
        resize="long side <= 512 (geometry-adaptive kernels, beta 0.3, k 3)",
    ),
    "shb_512": DatasetFacts(
        "shanghaitech/part_b_512",
        train=400,
        test=316,
        resize="halved to 512 x 384 (sigma 4 px)",
    ),
    "qnrf": DatasetFacts(
        "ucf_qnrf",
        train=1201,
        test=334,
        resize="short side >= 512, long side <= 2048",
    ),
    "nwpu": DatasetFacts(
        "nwpu_crowd",
        train=3109,
        validation=500,
        test=1500,
        resize="short side >= 512, long side <= 2048 (test labels are not public)",
        public_test=False,
    ),
    "jhu": DatasetFacts(
        "jhu_crowd",
        train=2272,
        validation=500,
        test=1600,
        resize="short side >= 512, long side <= 2048",
    ),
    "trancos": DatasetFacts(
        "trancos",
        train=403,
        validation=420,
        test=421,
    ),
    "mall": DatasetFacts("mall/full", train=800, test=1200, holdout_mode="block"),
    "ucsd": DatasetFacts("ucsd/native", train=800, test=1200, holdout_mode="block"),
    "ucf_cc_50": DatasetFacts("ucf_cc_50/clip", train=40, test=10),  # one fold of five tests
    # GCC's list files decide its splits; no source at hand gives their sizes. 75% / 25% of the
    # 15,212 frames (the random protocol's proportions) sizes the schedule of configs only.
    "gcc": DatasetFacts(
        "gcc/random",
        train=11409,
        test=3803,
        resize="downscaled by 1/2 to 540 x 960",
    ),
    "synthetic": DatasetFacts("synthetic_crowd/street", train=400, validation=50, test=100),
    "synthetic_night": DatasetFacts("synthetic_crowd/night", train=400, validation=50, test=100),
    "synthetic_stadium": DatasetFacts(
        "synthetic_crowd/stadium", train=400, validation=50, test=100
    ),
}


USER_BUILDER = "user_crowd"


def user_facts(name: str, *, data_dir: str | None = None) -> DatasetFacts:
    """The facts of your own data set `user_crowd/<name>` (tfds_builders/user_crowd.py), read from
    its prepared splits: sizes, an official validation split when the folder had one (else it is
    held out of train, as for ShanghaiTech); kernel and resize rule are the folder's (crowd.json),
    the crop is the method's default for a data set it does not list.

    Raises:
      DataError: the data set is not prepared (the message gives the build command).
    """
    train = data_sources.data_source(name, "train", data_dir=data_dir)  # Raises if not prepared.
    splits = train.dataset_info.splits
    validation = splits["validation"].num_examples if "validation" in splits else None
    test = splits["test"].num_examples if "test" in splits else 0
    return DatasetFacts(name, train=len(train), test=test, validation=validation)


def get(key: str) -> DatasetFacts:
    """The facts of a data set by its short name (or `user_crowd/<name>`, see `user_facts`); an
    unknown name lists the known ones."""
    if key.startswith(USER_BUILDER + "/"):
        return user_facts(key)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {key!r}; known: {sorted(DATASETS)}")
    return DATASETS[key]


# ------------------------------------------------------------------------------ image size rules


@dataclasses.dataclass(frozen=True)
class PaperSizeRule:
    """The image size rule a paper states for a data set, and how crowdjax's configs apply it.

    Attributes:
      stated: the paper's rule in its words (or "none stated").
      where: where the paper says it.
      crowdjax: the rule the method's configs run (`size_rule`), and any departure.
    """

    stated: str
    where: str
    crowdjax: str


_BOUNDED = "builder default: short side >= 512, long side <= 2048 (aspect kept)"
_AUTOSCALE = PaperSizeRule(
    stated="resize all the images by setting the longer side size to 2048, ratio kept",
    where="AutoScale Sec. 4.2",
    crowdjax=_BOUNDED + "; departure: images whose long side is under 2048 are not upscaled "
    "to it unless their short side is under 512",
)
_UOT = PaperSizeRule(
    stated="none stated",
    where="UOT Sec. 4.2",
    crowdjax=_BOUNDED + " (the Bayesian-loss preprocessing UOT builds on)",
)
# (method, data set key) -> the paper's rule; the tables show it next to `size_rule`.
PAPER_SIZE_RULES = {
    ("autoscale", "qnrf"): _AUTOSCALE,
    ("autoscale", "nwpu"): _AUTOSCALE,
    ("autoscale", "jhu"): _AUTOSCALE,
    ("uot", "qnrf"): _UOT,
    ("uot", "nwpu"): _UOT,
    ("uot", "jhu"): _UOT,
    ("l2sm", "qnrf"): PaperSizeRule(
        stated="images of resolution larger than 1080p down-sampled to 1920 x 1080",
        where="L2SM Sec. 4.2",
        crowdjax="builder config ucf_qnrf/l2sm: fit into 1920 x 1080 (either orientation), "
        "aspect kept, no minimum",
    ),
    ("dkpnet", "qnrf"): PaperSizeRule(
        stated="shortest side under 416 resized to 416, aspect kept",
        where="DKPNet Sec. 4, implementation details",
        crowdjax=_BOUNDED + ", then data.min_short_side = 416 when loading",
    ),
    ("dkpnet", "nwpu"): PaperSizeRule(
        stated="shortest side under 416 resized to 416, aspect kept",
        where="DKPNet Sec. 4, implementation details",
        crowdjax=_BOUNDED + ", then data.min_short_side = 416 when loading",
    ),
}


def size_rule(data_config) -> str:
    """The image size rule a run's data follow: each training data set's stored rule (the
    catalog's `resize`, else its builder config's description) and the loader's
    `data.min_short_side`.

    Args:
      data_config: a run's `config.data`.
    """
    by_name = {facts.name: facts for facts in DATASETS.values()}
    rules = []
    for name in settings.dataset_names(data_config):
        if name in by_name:
            stored = by_name[name].resize
        else:
            builder = data_sources.get_builder(name, data_dir="/nonexistent")  # Reads no data.
            stored = builder.builder_config.description
        rules.append(f"{name}: {stored}")
    text = "; ".join(rules)
    min_side = int(data_config.get("min_short_side", 0) or 0)
    if min_side:
        text += f"; then short side scaled up to {min_side} when loading (data.min_short_side)"
    return text
