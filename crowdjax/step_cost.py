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
import os

import jax
import ml_collections
import numpy as np

from crowdjax import registry, run, sharding
from crowdjax.data import settings, train_stream
from crowdjax.embedded_data import build_embedded_data
from crowdjax.metric_writers import log

CACHE_FILE = "cost_cache.json"
TINY_DATA = "synthetic_crowd/tiny"
EVAL_SHAPE = (768, 1024)
DEVICE = "A100"
UTILISATION = 0.4
# A100 dense peaks (FLOP/s): float32 matmuls run as TF32, JAX's default precision on A100.
PEAK_FLOPS = {"float32": 156e12, "bfloat16": 312e12}


def _first_batch(config) -> dict:
    """One global batch of the run's pipeline with the tiny data in place of its data sets."""
    config = ml_collections.ConfigDict(config.to_dict())
    name = config.data.name
    config.data.name = [TINY_DATA] if not isinstance(name, str) else TINY_DATA
    config.data.data_dir = ""
    if config.data.get("target"):
        config.data.target = TINY_DATA
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
    return next(iterator)


def _abstract(batch, mesh) -> dict:
    shard = sharding.batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=shard), batch)


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # Older jax: one dict per computation.
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def _peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def eval_shape(config) -> tuple[int, int]:
    buckets = config.data.get("eval_buckets")
    if buckets:
        return tuple(max(settings.buckets(buckets)))
    return EVAL_SHAPE


def measure(config) -> dict:
    """FLOPs per training step and per evaluated image, and the step's peak memory (bytes)."""
    setup = run.Setup(config, devices=jax.devices()[:1])
    batch = _abstract(_first_batch(config), setup.mesh)
    step = setup.train_step.lower(setup.abstract_with_shardings(), batch).compile()
    h, w = eval_shape(config)
    shard = sharding.batch_sharded(setup.mesh)
    images = jax.ShapeDtypeStruct((1, h, w, 3), np.float32, sharding=shard)
    mask = jax.ShapeDtypeStruct((1, h, w), np.bool_, sharding=shard)
    predict = setup.predict.lower(setup.abstract_variables(), images, mask).compile()
    return {
        "train_flops": _flops(step),
        "train_peak_bytes": _peak_bytes(step),
        "eval_flops": _flops(predict),
        "eval_shape": [h, w],
        "backend": jax.default_backend(),
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

    def get(self, config, *, progress: str = "") -> dict:
        cache = self._load()
        key = cache_key(config)
        if key not in cache:
            log(f"compiling {progress or 'the run'}'s steps for their cost (cached after)...")
            cache[key] = measure(config)
            merged = self._load() | {key: cache[key]}  # Another row's entry may be new.
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(self.path + ".tmp", "w") as f:
                json.dump(merged, f, indent=1)
            os.replace(self.path + ".tmp", self.path)
        return cache[key]


def accelerator_hours(config, cost: dict) -> float:
    """Training hours on `DEVICE` at `UTILISATION` of its peak for the config's dtype."""
    peak = PEAK_FLOPS.get(str(config.model.dtype), PEAK_FLOPS["float32"])
    return int(config.train.num_steps) * cost["train_flops"] / (peak * UTILISATION) / 3600


def describe(config, cost: dict | None) -> str:
    """One line: steps, batch, and (with a cost) FLOPs, memory and hours."""
    steps, batch = int(config.train.num_steps), int(config.train.global_batch_size)
    text = f"{steps} steps x batch {batch}"
    if cost is None:
        return text
    h, w = cost["eval_shape"]
    peak = PEAK_FLOPS.get(str(config.model.dtype), PEAK_FLOPS["float32"])
    return (
        f"{text}; {cost['train_flops'] / 1e12:.3g} TFLOP/step, peak "
        f"{cost['train_peak_bytes'] / 2**30:.3g} GiB/step; {cost['eval_flops'] / 1e9:.4g} "
        f"GFLOP per {h}x{w} eval image; ~{accelerator_hours(config, cost):.3g} {DEVICE}-h "
        f"({config.model.dtype} at {UTILISATION:.0%} of {peak / 1e12:g} TFLOP/s; training "
        f"only; XLA on {cost['backend']})"
    )
