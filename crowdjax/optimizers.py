"""Optimizers: one optax transformation per named parameter group.

A method may split its parameters into named groups (`Method.param_group(path, config) -> name`),
e.g. ASNet's generator and its two discriminators. Each group gets its own optimizer from
`config.optimizers.<group>` (the fields of `default_optimizer_config`) and keeps its own optimizer
state, so a step can update some groups and leave the others, parameters and optimizer state,
exactly as they were (no momentum or weight-decay drift on a frozen group). Without
`config.optimizers`, every parameter is in the one group "default", trained by `config.optimizer`.

Example:
  optimizer = Optimizers.from_config(config, total_steps=1000, param_group=method.param_group)
  opt_state = optimizer.init(params)                      # {group: optax state of its params}
  params, opt_state = optimizer.apply(params, opt_state, grads, groups=("d1",))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import ml_collections
import optax
from flax import traverse_util

DEFAULT_GROUP = "default"
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def default_optimizer_config(**overrides) -> ml_collections.ConfigDict:
    """The fields of one optimizer (config.optimizer, or each config.optimizers.<group>).

    Fields:
      name: "adam" (PyTorch's Adam: weight_decay is an L2 term added to the gradient, as
        `torch.optim.Adam(weight_decay=...)` in the reference code), "adamw" (decoupled decay) or
        "sgd" (PyTorch's SGD: L2 term, then momentum).
      learning_rate: peak learning rate.
      weight_decay: see `name`; 0 = none.
      momentum: SGD momentum.
      schedule: "constant", "cosine" (to 0 over the run), "warmup_cosine" (linear warm-up over
        `warmup_steps`, then cosine) or "step" (x `decay_factor` every `decay_every` steps).
      grad_clip_norm: clip gradients to this global norm before the update; 0 = off.
    """
    config = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 1e-5,
            "weight_decay": 0.0,
            "momentum": 0.9,
            "schedule": "constant",
            "warmup_steps": 0,
            "decay_every": 1,
            "decay_factor": 1.0,
            "grad_clip_norm": 0.0,
        }
    )
    config.update(overrides)
    return config


def learning_rate_schedule(cfg, total_steps: int) -> optax.Schedule:
    """The learning rate of each update (a function of the group's update count)."""
    lr = float(cfg.learning_rate)
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    if cfg.schedule == "warmup_cosine":
        warmup = int(cfg.warmup_steps)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
    if cfg.schedule == "step":
        return optax.exponential_decay(
            lr, int(cfg.decay_every), float(cfg.decay_factor), staircase=True
        )
    raise ValueError(f"unknown learning-rate schedule {cfg.schedule!r}; use one of {SCHEDULES}")


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """One optax transformation from an optimizer config (see `default_optimizer_config`)."""
    lr = learning_rate_schedule(cfg, total_steps)
    wd = float(cfg.weight_decay)
    if cfg.name == "adam":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr)) if wd else optax.adam(lr)
    elif cfg.name == "adamw":
        tx = optax.adamw(lr, weight_decay=wd)
    elif cfg.name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, float(cfg.momentum)))
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; use one of {OPTIMIZER_NAMES}")
    if cfg.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip_norm)), tx)
    return tx


def _path_name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


class Optimizers:
    """Named parameter groups, each with its own optax transformation and optimizer state.

    Args:
      transforms: {group: transformation}.
      param_group: (path, ) -> group of the parameter at `path` (a tuple of dict keys, e.g.
        ("generator", "conv1", "kernel")); None puts every parameter in the only group.
    """

    def __init__(
        self,
        transforms: Mapping[str, optax.GradientTransformation],
        param_group: Callable[[tuple], str] | None = None,
    ):
        if not transforms:
            raise ValueError("at least one optimizer group is needed")
        if param_group is None:
            if len(transforms) != 1:
                raise ValueError(
                    f"optimizer groups {sorted(transforms)} need a method that assigns its "
                    "parameters to groups (Method.param_group)"
                )
            (only,) = transforms
            param_group = lambda path: only
        self.transforms = dict(transforms)
        self._param_group = param_group

    @classmethod
    def from_config(cls, config, *, total_steps: int, param_group=None) -> Optimizers:
        """`config.optimizers.<group>` when given (the method's groups), else `config.optimizer`.

        `param_group(path, config)` is the method's assignment of parameters to groups.
        """
        groups = config.optimizers
        if groups:
            transforms = {name: make_optimizer(cfg, total_steps) for name, cfg in groups.items()}
            if param_group is None:
                raise ValueError(
                    f"config.optimizers names groups {sorted(groups)}, but method "
                    f"{config.method!r} declares no parameter groups: use config.optimizer"
                )
            return cls(transforms, lambda path: param_group(path, config))
        return cls({DEFAULT_GROUP: make_optimizer(config.optimizer, total_steps)})

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted(self.transforms))

    def partition(self, params) -> dict[str, dict]:
        """{group: flat {path: leaf}} of `params` (every group non-empty; checked)."""
        flat = traverse_util.flatten_dict(params)
        parts: dict[str, dict] = {group: {} for group in self.transforms}
        for path, leaf in flat.items():
            group = self._param_group(path)
            if group not in parts:
                raise ValueError(
                    f"parameter {_path_name(path)} is in group {group!r}, which has no "
                    f"optimizer; groups with one: {self.groups} (config.optimizers.<group>)"
                )
            parts[group][path] = leaf
        empty = [group for group, part in parts.items() if not part]
        if empty:
            raise ValueError(f"optimizer groups {empty} hold no parameters; groups: {self.groups}")
        return parts

    def init(self, params) -> dict:
        """{group: optimizer state of that group's parameters (a nested dict like params)}."""
        return {
            group: self.transforms[group].init(traverse_util.unflatten_dict(part))
            for group, part in self.partition(params).items()
        }

    def apply(self, params, opt_state: dict, grads, *, groups: Iterable[str] | None = None):
        """Updates the parameters and optimizer states of `groups` (default: all) from `grads`.

        Args:
          params: the parameters.
          opt_state: {group: state}, from `init`.
          grads: gradients with the structure of `params` (only the updated groups are read).
          groups: the groups to update; the others' parameters and states are returned as they
            were (the same arrays).

        Returns:
          (params, opt_state).
        """
        groups = self.groups if groups is None else tuple(groups)
        unknown = sorted(set(groups) - set(self.transforms))
        if unknown:
            raise ValueError(f"unknown optimizer groups {unknown}; groups: {self.groups}")
        param_parts = self.partition(params)
        flat_grads = traverse_util.flatten_dict(grads)
        new_flat = traverse_util.flatten_dict(params)
        new_state = dict(opt_state)
        for group in groups:
            group_params = traverse_util.unflatten_dict(param_parts[group])
            grads_of_group = {p: flat_grads[p] for p in param_parts[group]}
            group_grads = traverse_util.unflatten_dict(grads_of_group)
            updates, new_state[group] = self.transforms[group].update(
                group_grads, opt_state[group], group_params
            )
            new_flat.update(traverse_util.flatten_dict(optax.apply_updates(group_params, updates)))
        return traverse_util.unflatten_dict(new_flat), new_state
