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
    return {**host_batch, **{k: _allgather(host_batch[k]) for k in keys}}


def _allgather(values: np.ndarray) -> np.ndarray:
    """[B, ...] `values` of every process, concatenated in process order. Text (image ids,
    category labels: str or bytes, which JAX arrays cannot hold) travels as UTF-8 bytes."""
    if values.dtype.kind not in "USO":
        return multihost_utils.process_allgather(values, tiled=True)
    items = values.ravel().tolist()
    encoded = [v if isinstance(v, bytes) else str(v).encode() for v in items]
    lengths = np.array([len(e) for e in encoded], np.int32)
    width = int(np.max(multihost_utils.process_allgather(np.max(lengths, initial=1))))
    padded = np.zeros((len(encoded), width), np.uint8)
    for row, e in zip(padded, encoded, strict=True):
        row[: len(e)] = np.frombuffer(e, np.uint8)
    rows = multihost_utils.process_allgather(padded, tiled=True)
    all_lengths = multihost_utils.process_allgather(lengths, tiled=True)
    texts = [bytes(row[:n]) for row, n in zip(rows, all_lengths, strict=True)]
    as_bytes = values.dtype.kind == "S" or (items and isinstance(items[0], bytes))
    texts = texts if as_bytes else [t.decode() for t in texts]
    # The widest of every process's (a fixed-width dtype of this process could cut others').
    gathered = np.empty(len(texts), object) if values.dtype.kind == "O" else None
    if gathered is None:
        gathered = np.array(texts)
    else:
        gathered[:] = texts
    return gathered.reshape(-1, *values.shape[1:])


def stream(
    setup: Predictor,
    variables: Any,
    dataset: str,
    split: str,
    *,
    before_batch: Callable[[], None] | None = None,
) -> Iterator[tuple[dict, dict, int]]:
    """Yields (host batch of every process, fetched predictions, index) per real image: the
    batch's fields and the predictions [B, ...] (numpy) hold the image at `index`.

    `before_batch` is called before each global batch is predicted, on every process alike
    (the final evaluation stops there when the run is preempted)."""
    for host_batch in eval_stream.eval_iterator(
        setup.config.data,
        split,
        batch_size=setup.eval_batch_size(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        name=dataset,
    ):
        if before_batch is not None:
            before_batch()
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
