"""`synthetic_crowd`: procedurally rendered crowds, crowdjax's embedded default data set.

No download: every image is rendered from the config's seed (`crowdjax.data.synthetic`), so the
data set builds in seconds and the quickstart, the tests and the multi-domain / domain-adaptation
methods (DKPNet, ASNet) run without real data. Configs are domains that differ in style:

  street   (default) daylight paving, groups from a few people to about 250, heads 3-8.5 px radius
  stadium  coloured stands with seated crowds of 20 to about 700, heads 2.4-5.5 px radius
  night    dim square lit by lamps, low contrast and more noise, 1 to about 300 people

Each has train / validation / test splits of `num_train` / `num_validation` / `num_test` images of
`image_size`, and some empty images. Build: `python -m crowdjax.data.build synthetic_crowd/street`.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io, synthetic
from tfds_builders.base import CrowdBuilder, CrowdConfig, resize_scale


@dataclasses.dataclass
class SyntheticCrowdConfig(CrowdConfig):
    """A synthetic domain: rendering style, seed, image size and split sizes.

    Attributes:
      style: appearance and crowd statistics (`synthetic.SceneStyle`).
      seed: seed of the whole data set; image i of a split is `synthetic.scene_rng(seed, split, i)`.
      image_size: (H, W) in px.
      num_train, num_validation, num_test: images per split.
    """

    style: synthetic.SceneStyle = synthetic.STYLES["street"]
    seed: int = 0
    image_size: tuple[int, int] = (256, 256)
    num_train: int = 400
    num_validation: int = 50
    num_test: int = 100

    def __post_init__(self):
        super().__post_init__()
        if min(self.image_size) < 16:
            raise ValueError(f"image_size must be at least 16x16, got {self.image_size}")
        if min(self.num_train, self.num_validation, self.num_test) < 1:
            raise ValueError("every split needs at least one image")


def _config(name: str, seed: int, description: str) -> SyntheticCrowdConfig:
    return SyntheticCrowdConfig(
        name=name, description=description, style=synthetic.STYLES[name], seed=seed
    )


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG quality 95 without chroma subsampling: heads of 2-3 px radius keep their colours."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise io.DataError(f"could not encode an image of shape {image.shape} as JPEG")
    return buf.tobytes()


class SyntheticCrowd(CrowdBuilder):
    """Procedurally rendered crowds in several styles (domains)."""

    RELEASE_NOTES = {
        **CrowdBuilder.RELEASE_NOTES,
        "1.0.0": "Initial release: street, stadium and night styles.",
    }
    # Different seeds per domain: no two domains share scene layouts.
    BUILDER_CONFIGS = [
        _config("street", 0, "Daylight street scenes, sparse to fairly dense groups."),
        _config("stadium", 1, "Stadium stands, dense seated crowds with small heads."),
        _config("night", 2, "Night square lit by lamps, low contrast and noise."),
        # Seconds to build: the data of the configs' ":tiny" variants (tests, smoke runs).
        SyntheticCrowdConfig(
            name="tiny",
            description="A few small street scenes for tests and smoke runs.",
            style=synthetic.STYLES["street"],
            seed=3,
            image_size=(96, 128),
            num_train=16,
            num_validation=4,
            num_test=4,
        ),
    ]
    IMAGE_FORMAT = "jpeg"

    def extra_features(self):
        # Rendered head radius per point (px): perspective / scale supervision and checks.
        return {"head_radius": tfds.features.Tensor(shape=(None,), dtype=np.float32)}

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg: SyntheticCrowdConfig = self.builder_config
        sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, num: int):
        cfg: SyntheticCrowdConfig = self.builder_config
        size = tuple(cfg.image_size)
        # make_example rescales images and points by the config's resize rule; radii follow.
        scale = np.float32(resize_scale(*size, cfg))
        for index in range(num):
            rng = synthetic.scene_rng(cfg.seed, split, index)
            scene = synthetic.render_scene(cfg.style, rng=rng, size=size)
            yield self.make_example(
                split=split,
                image_id=f"{cfg.name}_{split}_{index:05d}.jpg",
                image=encode_jpeg(scene.image),
                points=scene.points,
                extra={"head_radius": scene.radii * scale},
            )
