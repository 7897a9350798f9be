"""What the training and evaluation streams share: size buckets, per-process batch sizes, and
the grain reader.

Batches of whole images are padded to a size bucket (`bucket_shape`), so a jitted step compiles
once per bucket. A global batch is split into equal slices, one per process
(`local_batch_size`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import grain
from absl import flags


def bucket_shape(
    height: int, width: int, *, buckets: Sequence[Sequence[int]] = (), multiple: int = 64
) -> tuple[int, int]:
    """Padded size of an image (evaluation), or of a whole-image training batch's largest image.

    Returns:
      The smallest-area bucket (h, w) that fits the image, else each side rounded up to a multiple
      of `multiple`.
    """
    fits = [(int(h), int(w)) for h, w in buckets if h >= height and w >= width]
    if fits:
        return min(fits, key=lambda b: (b[0] * b[1], b))
    return math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple


def local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    """This process's share of a global batch (checks that the processes share it evenly)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count), got {process_index} of {process_count}"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be positive and divisible by the "
            f"process count {process_count}"
        )
    return global_batch_size // process_count


def to_iter(ds: grain.MapDataset, data_config, *, processes: int = 0) -> grain.IterDataset:
    """The dataset read by `data.worker_threads` threads (and `processes` worker processes),
    `data.prefetch` batches ahead."""
    threads = int(data_config.worker_threads) or min(16, os.cpu_count() or 1)
    options = grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=max(1, int(data_config.prefetch))
    )
    it = ds.to_iter_dataset(options)
    if processes > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice).
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=processes))
    return it
