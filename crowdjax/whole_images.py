"""A model's predictions on the whole images of a split: what evaluation, a method's
preparation (`crowdjax.methods.base.PrepareContext.predictions`) and DKPNet's stage II share.

Images of any size are padded to a few size buckets by the input pipeline (`image_mask` marks
real pixels), so the jitted prediction compiles once per bucket; batches are padded to a multiple
of the device count (`valid` marks real examples). Every process must iterate: the prediction is
sharded over the devices of every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from crowdjax import sharding
from crowdjax.data import decode, eval_stream


class Predictor(Protocol):
    """What predicting whole images needs of a run: `crowdjax.run.Setup` is one."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    predict: Callable[..., dict]  # (variables, images, image_mask) -> {name: [B, ...]}

    @property
    def output_stride(self) -> int: ...

    def eval_batch_size(self) -> int: ...


def _gather_host_batch(host_batch: dict) -> dict:
    """Host-side fields of every process (for per-image records in multi-process runs)."""
    if jax.process_count() == 1:
        return host_batch
    keys = [k for k in host_batch if k not in ("image",) and isinstance(host_batch[k], np.ndarray)]
    gathered = multihost_utils.process_allgather({k: host_batch[k] for k in keys}, tiled=True)
    return {**host_batch, **gathered}


def stream(
    setup: Predictor, variables: Any, dataset: str, split: str
) -> Iterator[tuple[dict, dict, int]]:
    """Yields (host batch of every process, fetched predictions, index) per real image: the
    batch's fields and the predictions [B, ...] (numpy) hold the image at `index`."""
    for host_batch in eval_stream.eval_iterator(
        setup.config.data,
        split,
        batch_size=setup.eval_batch_size(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        name=dataset,
    ):
        inputs = sharding.host_to_global(
            {"image": host_batch["image"], "image_mask": host_batch["image_mask"]}, setup.mesh
        )
        outputs = setup.predict(variables, inputs["image"], inputs["image_mask"])
        fetched = sharding.global_to_host(outputs)
        batch = _gather_host_batch(host_batch)
        for i in np.flatnonzero(batch["valid"]):
            yield batch, fetched, int(i)


def per_image(
    setup: Predictor, variables: Any, dataset: str, split: str
) -> Iterator[tuple[str, dict]]:
    """Yields (image_id, outputs) per image: the outputs of `setup.predict` for that image
    (batch axis removed, numpy)."""
    for batch, fetched, i in stream(setup, variables, dataset, split):
        yield decode.text(batch["image_id"][i]), {k: v[i] for k, v in fetched.items()}
