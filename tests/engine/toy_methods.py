"""Toy methods that exercise what the engine offers the methods to come (tiny, fast to compile).

* TWO_PLAYER: a density generator and a critic in two optimizer groups, trained on paired
  source/target batches by its own train step (ASNet's shape): the critic learns source vs.
  target densities, then the generator learns the source density and to fool the critic.
  `config.toy.groups` lists the groups a step updates.
* BATCH_NORM: conv -> MaskedBatchNorm -> ReLU -> conv, following `crowdjax.models.batch_norm`.
* PREPARED: a density regressor with a preparation (the mean training count into the model
  state, and a domain label per image: its number of heads modulo 2).
* CONSTANT: a density of one learnt value everywhere (exact counts for evaluation tests).

Named from configs as "tests.engine.toy_methods:TWO_PLAYER" (no registry entry needed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from crowdjax.methods.base import Method, Preparation
from crowdjax.models.batch_norm import MaskedBatchNorm


def _density_mse(density, batch):
    mask = batch["image_mask"].astype(jnp.float32)
    return (jnp.square(density - batch["density"]) * mask).sum(axis=(1, 2)).mean()


# ---------------------------------------------------------------------------------- two players


class Generator(nn.Module):
    @nn.compact
    def __call__(self, images):
        x = nn.relu(nn.Conv(4, (3, 3))(images))
        return jnp.abs(nn.Conv(1, (1, 1))(x)[..., 0])


class Critic(nn.Module):
    @nn.compact
    def __call__(self, density):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2))(density[..., None]))
        return nn.Dense(1)(x.mean(axis=(1, 2)))[:, 0]


class TwoPlayerNet(nn.Module):
    def setup(self):
        self.generator = Generator()
        self.critic = Critic()

    def __call__(self, images):
        return self.generator(images)

    def score(self, density):
        return self.critic(density)

    def init_all(self, images):
        return self.critic(self.generator(images))


def _two_player_init(model, rng, config, *, input_shape):
    return model.init(rng, jnp.zeros((1, *input_shape, 3)), method=model.init_all)


def _two_player_loss(params, model_state, batch, rng, *, model, config):
    """The generator's loss alone (the default step's view; the method uses its own step)."""
    del rng
    density = model.apply({"params": params}, batch["source"]["image"])
    loss = _density_mse(density, batch["source"])
    return loss, ({"density": loss}, model_state)


def _two_player_step(state, batch, *, method, model, config, optimizer):
    source, target = batch["source"], batch["target"]
    apply = lambda params, images: model.apply({"params": params}, images)
    score = lambda params, d: model.apply({"params": params}, d, method=model.score)
    updates = tuple(config.toy.groups)

    def critic_loss(params):
        d_source = jax.lax.stop_gradient(apply(params, source["image"]))
        d_target = jax.lax.stop_gradient(apply(params, target["image"]))
        # BCE, source labelled 1 and target 0.
        return (
            jax.nn.softplus(-score(params, d_source)).mean()
            + jax.nn.softplus(score(params, d_target)).mean()
        )

    def generator_loss(params):
        density = _density_mse(apply(params, source["image"]), source)
        fool = jax.nn.softplus(-score(params, apply(params, target["image"]))).mean()
        return density + config.toy.adversarial_weight * fool, density

    params, opt_state = state.params, state.opt_state
    critic, critic_grads = jax.value_and_grad(critic_loss)(params)
    if "critic" in updates:
        params, opt_state = optimizer.apply(params, opt_state, critic_grads, groups=("critic",))
    (loss, density), grads = jax.value_and_grad(generator_loss, has_aux=True)(params)
    if "generator" in updates:
        params, opt_state = optimizer.apply(params, opt_state, grads, groups=("generator",))
    metrics = {"loss": loss, "density": density, "critic": critic}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _predict(variables, images, *, model, config, image_mask=None):
    del config, image_mask
    return model.apply(variables, images)


TWO_PLAYER = Method(
    name="toy_two_player",
    make_model=lambda config: TwoPlayerNet(),
    init_variables=_two_player_init,
    loss_fn=_two_player_loss,
    predict_fn=_predict,
    output_stride=lambda config: 1,
    train_step=_two_player_step,
    param_group=lambda path, config: path[0],
)


# ---------------------------------------------------------------------------------- BatchNorm


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, images, *, train: bool, mask=None):
        x = nn.Conv(8, (3, 3), use_bias=False)(images)
        x = nn.relu(MaskedBatchNorm(momentum=0.1)(x, train=train, mask=mask))
        return jnp.abs(nn.Conv(1, (1, 1))(x)[..., 0])


def _bn_init(model, rng, config, *, input_shape):
    return model.init(rng, jnp.zeros((1, *input_shape, 3)), train=False)


def _bn_loss(params, model_state, batch, rng, *, model, config):
    del rng
    density, updates = model.apply(
        {"params": params, **model_state},
        batch["image"],
        train=True,
        mask=batch["image_mask"],
        mutable=["batch_stats"],
    )
    loss = _density_mse(density, batch)
    return loss, ({"density": loss}, {**model_state, **updates})


def _bn_predict(variables, images, *, model, config, image_mask=None):
    del config, image_mask  # Running averages: nothing is computed from the batch.
    return model.apply(variables, images, train=False)


BATCH_NORM = Method(
    name="toy_batch_norm",
    make_model=lambda config: BatchNormNet(),
    init_variables=_bn_init,
    loss_fn=_bn_loss,
    predict_fn=_bn_predict,
    output_stride=lambda config: 1,
)


# ---------------------------------------------------------------------------------- preparation


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, images):
        return jnp.abs(nn.Conv(1, (3, 3))(images)[..., 0])


def _prepared_init(model, rng, config, *, input_shape):
    variables = dict(model.init(rng, jnp.zeros((1, *input_shape, 3))))
    variables["prior"] = {"mean_count": jnp.zeros((), jnp.float32)}  # Filled by `prepare`.
    return variables


def _prepared_loss(params, model_state, batch, rng, *, model, config):
    del rng
    density = model.apply({"params": params}, batch["image"])
    loss = _density_mse(density, batch)
    metrics = {
        "density": loss,
        "prior_mean_count": model_state["prior"]["mean_count"],
        "domain_mean": batch["domain"].astype(jnp.float32).mean(),
    }
    return loss, (metrics, model_state)


def _prepare(context) -> Preparation:
    counts, labels = [], {}
    for view in context.training_splits():
        labels[view.dataset] = {}
        for example in context.examples(view.dataset):
            counts.append(len(example["points"]))
            labels[view.dataset][example["image_id"]] = len(example["points"]) % 2
    mean = float(np.mean(counts))
    return Preparation(
        model_state={"prior": {"mean_count": np.float32(mean)}},
        domain_labels=labels,
        info={"mean_count": mean, "images": len(counts)},
    )


PREPARED = Method(
    name="toy_prepared",
    make_model=lambda config: Regressor(),
    init_variables=_prepared_init,
    loss_fn=_prepared_loss,
    predict_fn=lambda variables, images, *, model, config, image_mask=None: model.apply(
        {"params": variables["params"]}, images
    ),
    output_stride=lambda config: 1,
    prepare=_prepare,
)


# ---------------------------------------------------------------------------------- a stub


class Constant(nn.Module):
    """A density of one learnable value c everywhere, at stride `stride`."""

    stride: int

    @nn.compact
    def __call__(self, images):
        c = self.param("c", nn.initializers.constant(0.5), ())
        b, h, w = images.shape[:3]
        return jnp.full((b, h // self.stride, w // self.stride), c)


def _constant_loss(params, model_state, batch, rng, *, model, config):
    del rng, batch
    loss = jnp.square(params["c"] - 0.25)
    return loss, ({"c": params["c"]}, model_state)


CONSTANT = Method(
    name="toy_constant",
    make_model=lambda config: Constant(stride=config.toy.stride),
    init_variables=lambda model, rng, config, *, input_shape: model.init(
        rng, jnp.zeros((1, *input_shape, 3))
    ),
    loss_fn=_constant_loss,
    predict_fn=_predict,
    output_stride=lambda config: config.toy.stride,
)
