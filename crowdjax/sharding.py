"""Device mesh and shardings for data-parallel training with `jax.jit`.

Parameters and optimizer state are replicated over the `data` mesh axis; every batch array is split
along its leading (example) axis. Each process feeds its own slice of the global batch
(`host_to_global`), so the same code runs on one CPU, eight simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) and multi-host TPU pods.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize_distributed(config) -> None:
    """Calls `jax.distributed.initialize` when the config asks for multi-process training.

    `config.distributed.auto`: detect the cluster (TPU pods, SLURM). Otherwise a non-empty
    `config.distributed.coordinator_address` with `num_processes` and `process_id` (e.g. two
    processes on localhost). Neither: a single process.
    """
    spec = config.distributed
    if not (spec.auto or spec.coordinator_address) or jax.distributed.is_initialized():
        return  # Single process, or initialized already (e.g. by an earlier fold of the command).
    # CPU processes (tests, localhost runs) need gloo for cross-process collectives; GPU and TPU
    # backends ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
        )
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process), axis named `data`."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """Fails early when the global batch does not divide evenly over devices and processes."""
    devices, processes = mesh.devices.size, jax.process_count()
    if global_batch_size % devices or global_batch_size % processes:
        raise ValueError(
            f"global batch size {global_batch_size} must be divisible by the number of devices "
            f"({devices}) and of processes ({processes})"
        )


def host_to_global(batch, mesh: Mesh):
    """Assembles each process's slice of a batch (numpy pytree) into global sharded arrays."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def global_to_host(tree):
    """Fetches (fully replicated or batch-sharded) global arrays to numpy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def process_0_decides(flag: bool) -> bool:
    """Process 0's value of `flag`, on every process: for decisions that every process must take
    alike (a checkpoint save is a collective; a branch may run the sharded model)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def barrier(name: str) -> None:
    """Every process waits here for the others (no-op for a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
