"""Building and opening the crowd-counting data sets by name.

A data set is named `builder[/config]` (e.g. `shanghaitech/part_b`, `synthetic_crowd/street`;
your own images: `user_crowd/<name>`, see `tfds_builders.user_crowd`).
Builders live in the `tfds_builders` package and write `array_record` files under `data_dir`;
reading uses `tfds.data_source` (random access, no TensorFlow).
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data.io import DataError

# Builder name -> module of `tfds_builders` defining it (imported lazily: importing registers it).
BUILDER_MODULES = {
    "shanghaitech": "tfds_builders.shanghaitech",
    "ucf_qnrf": "tfds_builders.ucf_qnrf",
    "ucf_cc_50": "tfds_builders.ucf_cc_50",
    "nwpu_crowd": "tfds_builders.nwpu_crowd",
    "jhu_crowd": "tfds_builders.jhu_crowd",
    "mall": "tfds_builders.mall",
    "ucsd": "tfds_builders.ucsd",
    "trancos": "tfds_builders.trancos",
    "synthetic_crowd": "tfds_builders.synthetic_crowd",
    "gcc": "tfds_builders.gcc",
    "user_crowd": "tfds_builders.user_crowd",  # your own images: user_crowd/<name>
}


def default_data_dir() -> str:
    """`$CROWDJAX_DATA_DIR`, else `~/crowdjax_data`."""
    return os.environ.get("CROWDJAX_DATA_DIR", os.path.expanduser("~/crowdjax_data"))


def _split_name(name: str) -> tuple[str, str | None]:
    builder, _, config = name.partition("/")
    if builder not in BUILDER_MODULES:
        raise ValueError(f"unknown data set {builder!r}; known: {sorted(BUILDER_MODULES)}")
    importlib.import_module(BUILDER_MODULES[builder])
    return builder, config or None


def get_builder(name: str, *, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Returns the builder of `name` (`builder[/config]`) writing array_record under `data_dir`."""
    builder, config = _split_name(name)
    kwargs = dict(
        data_dir=data_dir or default_data_dir(), file_format=tfds.core.FileFormat.ARRAY_RECORD
    )
    cls = tfds.builder_cls(builder)
    if getattr(cls, "OPEN_CONFIGS", False):
        # Any config name is valid (user_crowd/<name>); tfds.builder would open a prepared one with
        # a file reader that lacks the builder's recipe (kernel, edges), so build the class itself.
        return cls(config=config, **kwargs)
    return tfds.builder(builder, config=config, **kwargs)


def build_command(name: str, *, data_dir: str | None = None) -> str:
    """The shell command that prepares `name`; quoted in 'data set missing' errors."""
    manual = "" if name.startswith("synthetic_crowd") else " --manual_dir=<download dir>"
    if name.startswith("user_crowd"):
        manual = " --manual_dir=<your folder of images and annotations>"
    return (
        f"python -m crowdjax.data.build {name}{manual} --data_dir={data_dir or default_data_dir()}"
    )


def build(name: str, *, data_dir: str | None = None, manual_dir: str | None = None):
    """Prepares `name` (no-op when already prepared). Returns the builder."""
    builder = get_builder(name, data_dir=data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def is_prepared(name: str, *, data_dir: str | None = None) -> bool:
    """Whether `name` has been prepared under `data_dir`."""
    return get_builder(name, data_dir=data_dir).is_prepared()


def data_source(name: str, split: str, *, data_dir: str | None = None):
    """Random-access source of one split of a prepared data set.

    Raises:
      DataError: the data set is not prepared; the message gives the command that builds it.
    """
    builder = get_builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DataError(
            f"data set {name!r} is not prepared in {builder.data_dir}. Build it with:\n  "
            + build_command(name, data_dir=data_dir)
        )
    for part in split.split("+"):  # "fold1+fold2", "test[:25]": each named split must exist
        if part.split("[")[0] not in builder.info.splits:
            raise DataError(
                f"data set {name!r} has no split {part!r}; splits: {list(builder.info.splits)}"
            )
    return builder.as_data_source(split=split)


def raw_source(name: str, split: str, *, data_dir: str | None = None):
    """Random-access source whose images and ZLIB maps stay undecoded (decoded per crop).

    Image features come as encoded bytes, ZLIB tensors as `{"shape": [H, W], "value": bytes,
    "dtype": stored numpy dtype}` (decode with `decode.decode_tensor`: density maps are stored
    as float16 since builder version 1.1.0, float32 before); scalars, text and points are decoded
    as usual.
    """
    source = data_source(name, split, data_dir=data_dir)
    features = source.dataset_info.features
    skip = {}
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            skip[key] = tfds.decode.SkipDecoding()
        elif _is_zlib(feature):
            skip[key] = _UndecodedTensor()
    return source.__class__(dataset_info=source.dataset_info, split=split, decoders=skip)


class _UndecodedTensor(tfds.decode.SkipDecoding):
    """Keeps a ZLIB tensor compressed and adds its stored dtype (which the bytes do not tell)."""

    def decode_example_np(self, serialized_example):
        return {**serialized_example, "dtype": np.dtype(self.feature.np_dtype)}


def _is_zlib(feature) -> bool:
    if not isinstance(feature, tfds.features.Tensor):
        return False
    encoding = getattr(feature.to_json_content(), "encoding", "none")  # Scalars have none.
    return encoding == tfds.features.Encoding.ZLIB.value
