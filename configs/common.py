"""Shared config blocks. Every config file is plain Python: `get_config(variant)` returns a
ConfigDict; `variant="tiny"` shrinks the run (tiny model, synthetic data, a few steps) for tests.
"""

from __future__ import annotations

import ml_collections

from crowdjax.data.pipeline import default_data_config

TINY_DATA = "synthetic_crowd/tiny"


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = ""
    config.seed = 0
    config.init_from = ""  # Workdir or checkpoint whose params start this run (fine-tuning).
    config.distributed = ml_collections.ConfigDict()  # Multi-process runs (jax.distributed).
    config.distributed.auto = False  # True on TPU pods / SLURM: detect the cluster.
    config.distributed.coordinator_address = ""  # Or explicit, e.g. "127.0.0.1:1234".
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.eval_at_end = True

    config.data = default_data_config()

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier; 1/8 or 1/16 for tiny models.
    config.model.pretrained = ""  # ImageNet VGG weights file (.pth/.npz/.safetensors/.h5).
    config.model.dtype = "float32"  # "bfloat16" computes in bf16 (params stay float32).

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-5
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.optimizer.grad_clip_norm = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.global_batch_size = 1
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 0
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "test"  # Model selection split (the reference code selects on test).
    config.eval.final_split = "test"
    config.eval.global_batch_size = 1  # Raised to the device count when smaller.
    config.eval.peak_threshold = 0.1  # Density peaks (3x3 NMS) above this count as heads.
    config.eval.report_baseline = True
    return config


def steps_for_epochs(epochs: int, train_images: int, batch_size: int) -> int:
    return max(1, epochs * train_images // batch_size)


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a paper config to seconds on a CPU: tiny model, synthetic data, a few steps.

    The method's own settings (loss, optimizer type) are kept, so the tiny run exercises the same
    code path end to end.
    """
    config.data.name = TINY_DATA
    config.data.crop_size = 64
    config.data.max_points = 256
    config.data.eval_split = "test"
    config.model.width = 1 / 16
    config.model.pretrained = ""
    config.train.global_batch_size = 2
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.eval.split = "validation"
    config.eval.final_split = "test"
    config.eval.global_batch_size = 2
    return config
