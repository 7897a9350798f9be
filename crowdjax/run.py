"""The run setup that training, evaluation and preparation share.

`Setup(config)` builds from a config the method (registry), its model, the device mesh and
shardings, the optimizers (one per parameter group) and the jitted functions `init` (a fresh
`TrainState`), `train_step` and `predict`. `crowdjax.trainer` (the training loop) uses
`crowdjax.evaluation` (the evaluators) and `crowdjax.preparation`, which both use this module and
neither imports the other nor the trainer; this module imports none of them (it sits below them,
above `crowdjax.registry` and the methods).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from crowdjax import registry, sharding
from crowdjax.data import settings, train_stream
from crowdjax.optimizers import Optimizers


@flax.struct.dataclass
class TrainState:
    """Everything a training run carries from step to step.

    Attributes:
      step: int32 [], optimisation steps taken.
      params: the model parameters.
      model_state: the other variable collections (e.g. `batch_stats`, AutoScale's center).
      opt_state: {optimizer group: optax state of that group's parameters}.
      rng: PRNG key of the run (each step folds in its step number).
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict:
        """{"params": ..., **model_state}: what `predict_fn` and checkpoints of a model hold."""
        return {"params": self.params, **self.model_state}


def split_variables(variables: dict) -> tuple[Any, dict]:
    """(params, model_state) of a variables dict."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def default_train_step(state: TrainState, batch, *, method, model, config, optimizer):
    """One optimisation step of every group: per-image losses averaged over the global batch."""
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        return method.loss_fn(params, state.model_state, batch, rng, model=model, config=config)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = optimizer.apply(state.params, state.opt_state, grads)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    return new_state, metrics


def init_state(method, model, optimizer: Optimizers, config, rng, *, input_shape) -> TrainState:
    """A fresh state: variables from the method's init on an `input_shape` (h, w) image,
    optimizer states, the run's rng."""
    init_rng, step_rng = jax.random.split(rng)
    variables = method.init_variables(model, init_rng, config, input_shape=input_shape)
    params, model_state = split_variables(dict(variables))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=optimizer.init(params),
        rng=step_rng,
    )


def _predict(variables, images, image_mask, *, method, model, config):
    out = method.predict_fn(variables, images, model=model, config=config, image_mask=image_mask)
    return dict(out) if isinstance(out, dict) else {"density": out}


class Setup:
    """What follows from a config: method, model, mesh, optimizers and the jitted functions.

    Attributes:
      init: rng -> a fresh TrainState (replicated).
      train_step: (state, global batch) -> (state, metrics); the state is donated.
      predict: (variables, images [B, H, W, 3], image_mask [B, H, W]) -> dict of [B, ...]
        arrays: the method's "density" [B, h, w] (density methods; the evaluator weights it by
        the real pixels and the ROI), plus what its `points_fn` needs.
    """

    def __init__(self, config, *, devices=None):
        self.config = config
        self.method = registry.get_method(config.method)
        # Every size the model is given, checked once for the whole run (training, evaluation).
        settings.check_geometry(config.data, self.method.output_stride(config))
        self.model = self.method.make_model(config)
        self.mesh = sharding.make_mesh(devices)
        self.total_steps = int(config.train.num_steps)
        self.optimizer = Optimizers.from_config(
            config, total_steps=self.total_steps, param_group=self.method.param_group
        )
        self.replicated = sharding.replicated(self.mesh)
        self.batch_sharding = sharding.batch_sharded(self.mesh)
        # Computed once here: every method initialises its model on the shape of a training crop.
        self.input_shape = settings.crop_shape(config.data)
        init = functools.partial(
            init_state,
            self.method,
            self.model,
            self.optimizer,
            config,
            input_shape=self.input_shape,
        )
        self.abstract_state = jax.eval_shape(init, jax.random.key(0))
        self.state_sharding = jax.tree.map(lambda _: self.replicated, self.abstract_state)
        self.init = jax.jit(init, out_shardings=self.state_sharding)
        step_fn = functools.partial(
            self.method.train_step or default_train_step,
            method=self.method,
            model=self.model,
            config=config,
            optimizer=self.optimizer,
        )
        self.train_step = jax.jit(
            step_fn,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=(0,),
        )
        predict = functools.partial(_predict, method=self.method, model=self.model, config=config)
        self.predict = jax.jit(
            predict,
            in_shardings=(self.replicated, self.batch_sharding, self.batch_sharding),
            out_shardings=self.batch_sharding,
        )
        opt_sharding = self.state_sharding.opt_state
        self.init_opt_state = jax.jit(self.optimizer.init, out_shardings=opt_sharding)

    @property
    def output_stride(self) -> int:
        return self.method.output_stride(self.config)

    def abstract_with_shardings(self) -> TrainState:
        """The state's shapes, dtypes and shardings (for restoring a checkpoint into)."""
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            self.abstract_state,
            self.state_sharding,
        )

    def abstract_variables(self) -> dict:
        """{"params", **model_state} shapes with shardings (what evaluation restores)."""
        return self.abstract_with_shardings().variables

    def replicate(self, tree):
        """Host arrays -> replicated device arrays (e.g. loaded pretrained variables)."""
        return jax.device_put(tree, jax.tree.map(lambda _: self.replicated, tree))

    def eval_batch_size(self) -> int:
        """`config.eval.global_batch_size` rounded up to a multiple of the devices and processes
        (missing examples of a batch are padding, masked out), so any batch size runs on any
        number of devices."""
        requested = max(1, int(self.config.eval.global_batch_size))
        unit = math.lcm(self.mesh.devices.size, jax.process_count())
        return -(-requested // unit) * unit


def training_batches(setup, start_step: int, prepared):
    """This process's training batches from `start_step`: paired with the target's images when
    `config.data.target` is set, with the preparation's domain labels when it has some."""
    config = setup.config
    kwargs = dict(
        global_batch_size=int(config.train.global_batch_size),
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        output_stride=setup.output_stride,
        domain_labels=(prepared.domain_labels or None) if prepared is not None else None,
    )
    if config.data.target:  # The target's images only: the loss never sees its labels.
        return train_stream.paired_train_iterator(
            config.data,
            settings.target_config(config.data),
            target_keys=("image", "image_mask"),
            **kwargs,
        )
    return train_stream.train_iterator(config.data, **kwargs)
