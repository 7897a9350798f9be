"""What a run costs before it runs, from XLA: FLOPs of one training step and of one evaluated
image (`cost_analysis()` of the lowered and compiled step), the step's peak memory
(`memory_analysis()`), the schedule's steps, and an estimate of accelerator hours.

The training step is compiled on the shapes of the run's own batches: one batch of the run's
input pipeline with the embedded tiny data in place of its data sets (the crop, batch size,
point padding and method's labels are the run's, so the shapes are), never its real data. The
evaluated image is `EVAL_SHAPE` (a typical 768 x 1024 crowd photo) unless the config fixes its
evaluation buckets. Compiling a paper-size step on a CPU takes a minute: results are cached per
config in a JSON file (`CostCache`).

The estimate: steps x FLOPs per step / (peak x `UTILISATION`) on `DEVICE`, training only (the
evaluations add their images x the FLOPs per image). XLA counts the body of a loop once: a loss
that iterates inside the step (UOT's L-BFGS solve, Sinkhorn) costs more than its FLOPs say, and
a batch-1 step rarely reaches 40% of a device, so the hours are a lower bound.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import jax
import ml_collections
import numpy as np

from crowdjax import registry, run, sharding
from crowdjax.data import settings, train_stream
from crowdjax.embedded_data import build_embedded_data
from crowdjax.metric_writers import log
from crowdjax.models import conv

CACHE_FILE = "cost_cache.json"
TINY_DATA = "synthetic_crowd/tiny"
EVAL_SHAPE = (768, 1024)
DEVICE = "A100"
UTILISATION = 0.4
# Dense peaks (FLOP/s) by device and dtype; float32 convolutions and matmuls run on the tensor
# cores (TF32 on NVIDIA, bfloat16 passes on TPU) at JAX's default precision.
ACCELERATORS = {
    # NVIDIA A100 SXM datasheet: 156 TFLOP/s TF32, 312 bfloat16 (dense).
    "A100": {"float32": 156e12, "bfloat16": 312e12},
    # NVIDIA H100 SXM datasheet: 494.7 TFLOP/s TF32, 989.4 bfloat16 (dense; 2x with sparsity).
    "H100": {"float32": 494.7e12, "bfloat16": 989.4e12},
    # Google Cloud TPU v4 chip: 275 TFLOP/s bfloat16; float32 matmuls default to bfloat16 passes.
    "TPU v4": {"float32": 275e12, "bfloat16": 275e12},
}
PEAK_FLOPS = ACCELERATORS[DEVICE]
# Entries written before a field existed are measured again (3: measured with XLA's convolutions).
MEASURE_VERSION = 3
# The convolutions of the measured step: those an accelerator runs. On a CPU, conv "auto" takes
# a matmul kernel gradient (crowdjax.models.conv) whose buffers are not a GPU's or a TPU's.
ACCELERATOR_CONV = "xla"


def train_batches(config, *, data: str = TINY_DATA, data_dir: str = "", **options):
    """The run's training pipeline (its crop, batch, augmentation and labels) on `data` in place
    of its data sets (and of its adaptation target): an iterator of global batches.

    Args:
      config: the run's config.
      data: a prepared data set; the embedded tiny data by default (built on first use).
      data_dir: where `data` is prepared ("" the default folder).
      **options: data settings to override (e.g. worker_threads, worker_processes).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    name = config.data.name
    config.data.name = [data] if not isinstance(name, str) else data
    config.data.data_dir = data_dir
    if config.data.get("target"):
        config.data.target = data
    for key, value in options.items():
        config.data[key] = value
    if data == TINY_DATA:
        build_embedded_data(config, ())
    stride = registry.get_method(config.method).output_stride(config)
    kwargs = dict(
        global_batch_size=int(config.train.global_batch_size),
        seed=config.seed,
        output_stride=stride,
    )
    if config.data.get("target"):
        iterator = train_stream.paired_train_iterator(
            config.data,
            settings.target_config(config.data),
            target_keys=("image", "image_mask"),
            **kwargs,
        )
    else:
        iterator = train_stream.train_iterator(config.data, **kwargs)
    return iterator


def _first_batch(config) -> dict:
    """One global batch of the run's pipeline with the tiny data in place of its data sets."""
    iterator = train_batches(config)
    batch = next(iterator)
    if hasattr(iterator, "close"):
        iterator.close()
    return batch


def _abstract(batch, mesh) -> dict:
    shard = sharding.batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=shard), batch)


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # Older jax: one dict per computation.
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def _memory(compiled) -> dict:
    """XLA's buffer sizes of a compiled program (bytes): arguments (the state and the batch),
    outputs, temporaries (the activations kept for the backward pass and the scratch), the
    outputs aliased onto donated arguments, and their peak (all live at once, less aliasing)."""
    m = compiled.memory_analysis()
    sizes = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
    }
    peak = sizes["argument_bytes"] + sizes["output_bytes"] + sizes["temp_bytes"]
    return sizes | {"train_peak_bytes": peak - sizes["alias_bytes"]}


def _tree_bytes(tree) -> int:
    # x.dtype.itemsize, not np.dtype(...): a PRNG key's dtype is not a numpy one.
    return int(sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def eval_shape(config) -> tuple[int, int]:
    buckets = config.data.get("eval_buckets")
    if buckets:
        return tuple(max(settings.buckets(buckets)))
    return EVAL_SHAPE


def measure(config) -> dict:
    """What one training step and one evaluated image cost, from XLA, with the convolutions an
    accelerator runs (`ACCELERATOR_CONV`, whatever the process's conv implementation).

    Returns:
      train_flops, eval_flops: FLOPs of the compiled step on one global batch and of the
        prediction of one `eval_shape` image (from the lowered program: it is not compiled).
      param_bytes, state_bytes: the parameters, and the whole train state (parameters, optimizer
        moments, model state).
      argument_bytes, output_bytes, temp_bytes, alias_bytes, train_peak_bytes: `_memory`.
      compile_s: seconds to lower and compile the step on this machine (a load from JAX's
        persistent compilation cache where the process enabled one: paper_costs.py does not).
      batch_shape: the global batch of images [B, H, W, 3] (a paired batch's first, the
        source's); eval_shape [H, W]; backend; conv (`ACCELERATOR_CONV`).
    """
    with conv.conv_impl(ACCELERATOR_CONV):  # Read when the step is traced (lowered) below.
        return _measure(config)


def _measure(config) -> dict:
    setup = run.Setup(config, devices=jax.devices()[:1])
    batch = _abstract(_first_batch(config), setup.mesh)
    state = setup.abstract_with_shardings()
    start = time.perf_counter()
    lowered = setup.train_step.lower(state, batch)
    step = lowered.compile()
    compile_s = time.perf_counter() - start
    h, w = eval_shape(config)
    shard = sharding.batch_sharded(setup.mesh)
    images = jax.ShapeDtypeStruct((1, h, w, 3), np.float32, sharding=shard)
    mask = jax.ShapeDtypeStruct((1, h, w), np.bool_, sharding=shard)
    predict = setup.predict.lower(setup.abstract_variables(), images, mask)
    # The (first) images of the batch: a paired batch holds the source's and the target's.
    paths = jax.tree_util.tree_flatten_with_path(batch)[0]
    train_images = next(x for path, x in paths if getattr(path[-1], "key", None) == "image")
    return {
        "train_flops": _flops(step),
        "eval_flops": _flops(predict),
        "param_bytes": _tree_bytes(state.params),
        "state_bytes": _tree_bytes(state),
        **_memory(step),
        "compile_s": round(compile_s, 1),
        "batch_shape": list(train_images.shape),
        "eval_shape": [h, w],
        "backend": jax.default_backend(),
        "conv": ACCELERATOR_CONV,
        "version": MEASURE_VERSION,
    }


# Fields that change neither a step's program nor its shapes: where the run's files are, how it
# is evaluated and selected, how long it runs. The cache ignores them, so a row's cost survives
# a new evaluation setting and a paper-scale row shares it whatever its paths.
COST_FREE_FIELDS = (
    "distributed",
    "eval",
    "eval_at_end",
    "evals",
    "init_from",
    "selection",
    "data.data_dir",
    "dkpnet.stage1",
    "model.pretrained",
    "model.head_init",  # Initial values only: the step's program is the same.
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
)


def cache_key(config) -> str:
    """The config's fields that decide the cost (all but `COST_FREE_FIELDS`), hashed."""
    tree = json.loads(config.to_json_best_effort())
    for field in COST_FREE_FIELDS:
        *parents, leaf = field.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    if not tree.get("model", {}).get("remat", True):  # Off: the program of before the field.
        del tree["model"]["remat"]
    text = json.dumps(tree, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CostCache:
    """`measure` results by config, in a JSON file (compiling a paper-size step is slow)."""

    def __init__(self, path: str):
        self.path = path

    def _load(self) -> dict:
        if not os.path.exists(self.path):
            return {}
        with open(self.path) as f:
            return json.load(f)

    def has(self, config) -> bool:
        """Whether the config's cost is cached (and of this `MEASURE_VERSION`)."""
        return self._load().get(cache_key(config), {}).get("version") == MEASURE_VERSION

    def get(self, config, *, progress: str = "") -> dict:
        cache = self._load()
        key = cache_key(config)
        if cache.get(key, {}).get("version") != MEASURE_VERSION:
            log(f"compiling {progress or 'the run'}'s steps for their cost (cached after)...")
            cache[key] = measure(config)
            merged = self._load() | {key: cache[key]}  # Another row's entry may be new.
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path + ".tmp", "w") as f:
                json.dump(merged, f, indent=1)
            os.replace(self.path + ".tmp", self.path)
        return cache[key]


def peak_flops(config, device: str = DEVICE) -> float:
    """`device`'s dense peak (FLOP/s) for the config's dtype."""
    peaks = ACCELERATORS[device]
    return peaks.get(str(config.model.dtype), peaks["float32"])


def step_seconds(config, cost: dict, device: str = DEVICE) -> float:
    """Seconds of one training step on `device` at `UTILISATION` of its peak."""
    return cost["train_flops"] / (peak_flops(config, device) * UTILISATION)


def accelerator_hours(config, cost: dict, device: str = DEVICE) -> float:
    """Training hours on `device` at `UTILISATION` of its peak for the config's dtype."""
    return int(config.train.num_steps) * step_seconds(config, cost, device) / 3600


def crops_per_second_needed(config, cost: dict, device: str = DEVICE) -> float:
    """The crops/s the input pipeline must give so that `device` never waits for a batch."""
    return int(config.train.global_batch_size) / step_seconds(config, cost, device)


def describe(config, cost: dict | None) -> str:
    """One line: steps, batch, and (with a cost) FLOPs, memory and hours."""
    steps, batch = int(config.train.num_steps), int(config.train.global_batch_size)
    text = f"{steps} steps x batch {batch}"
    if cost is None:
        return text
    h, w = cost["eval_shape"]
    peak = peak_flops(config)
    return (
        f"{text}; {cost['train_flops'] / 1e12:.3g} TFLOP/step, peak "
        f"{cost['train_peak_bytes'] / 2**30:.3g} GiB/step; {cost['eval_flops'] / 1e9:.4g} "
        f"GFLOP per {h}x{w} eval image; ~{accelerator_hours(config, cost):.3g} {DEVICE}-h "
        f"({config.model.dtype} at {UTILISATION:.0%} of {peak / 1e12:g} TFLOP/s; training "
        f"only; XLA on {cost['backend']})"
    )
