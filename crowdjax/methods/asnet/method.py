"""ASNet: adversarial scoring network for domain-adaptive counting (Zou et al., ACM MM 2021).

Training pairs every source batch (images, density maps) with a batch of target images
(`config.data.target`; the engine passes only their images and masks). One jitted step follows
Alg. 1 of the supplementary:
  1. G predicts the density maps of both batches (held fixed for the discriminator steps);
  2. D1 step: BCE of the whole maps, source 1 / target 0 (Eq. 1); its outputs on the source
     maps give the scores W1 (image) and W3 (pixel) (Eq. 5-6);
  3. D2 step: the same on the S x S patches (Eq. 2), its loss scaled by lambda_3; scores W2
     (patch) and W4 (patch-pixel);
  4. G step (D1, D2 fixed, as just updated): L = L_dens (Eq. 8, the scores weighting the squared
     errors of the source maps) + lambda_1 L_adv1 + lambda_2 L_adv2 (Eq. 3-4, target maps only).
Each network is its own optimizer group ("generator", "d1", "d2"; `config.optimizers.<group>`):
a phase updates one group and leaves the others, parameters and optimizer states, unchanged.

Config fields (configs/asnet_common.py):
  model.{width, pools, map_stride, activation, leaky_slope, pretrained, dtype}
  asnet.global_discriminator, asnet.local_discriminator   each discriminator on or off
  asnet.scores      the score levels used, a subset of ("w1", "w2", "w3", "w4")
  asnet.residual    (1 + W) weights (Eq. 8) or W (Table 7 without the residual mechanism)
  asnet.patches     S
  asnet.scores_from "before_update": the scores come from the discriminator outputs that give
                    its loss, before its step (Alg. 1's order), or "after_update"
  loss.adv_global_weight, loss.adv_local_weight, loss.local_discriminator_weight  lambda_1-3
  loss.density_scale  the ground-truth maps are multiplied by it for training and predictions
                    divided by it (the paper gives no scale; the C^3 framework's LOG_PARA)
Ablations (Tables 4, 5, 7): NoAdapt = both discriminators off; CoarseAdapt = discriminators,
no scores; FineAdapt = discriminators and scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from crowdjax.data import settings
from crowdjax.losses.adversarial import (
    adversarial_scores,
    domain_bce,
    output_mask,
    scored_density_loss,
    split_patches,
)
from crowdjax.methods.asnet.model import MIN_DISCRIMINATOR_SIDE, ASNet
from crowdjax.methods.base import Method
from crowdjax.models import importers, layers

SCORES = ("w1", "w2", "w3", "w4")
GLOBAL_SCORES = ("w1", "w3")  # From D1.
LOCAL_SCORES = ("w2", "w4")  # From D2.
SCORES_FROM = ("before_update", "after_update")
GROUPS = ("generator", "d1", "d2")


def check_config(config) -> None:
    """Refuses settings that cannot run, naming the field."""
    cfg = config.asnet
    scores = tuple(cfg.scores)
    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise ValueError(f"asnet.scores: unknown levels {unknown}; choose from {SCORES}")
    for needed, on, field in (
        (GLOBAL_SCORES, cfg.global_discriminator, "asnet.global_discriminator"),
        (LOCAL_SCORES, cfg.local_discriminator, "asnet.local_discriminator"),
    ):
        used = [s for s in scores if s in needed]
        if used and not on:
            raise ValueError(f"asnet.scores {used} come from a discriminator that {field} is off")
    if cfg.scores_from not in SCORES_FROM:
        raise ValueError(f"asnet.scores_from must be one of {SCORES_FROM}, got {cfg.scores_from!r}")
    _check_geometry(config)


def _check_geometry(config) -> None:
    """Sizes G takes (multiples of its stride) and D2 takes (patches of at least 16 px)."""
    stride, map_stride = 2 ** int(config.model.pools), int(config.model.map_stride)
    s = int(config.asnet.patches)
    crop = settings.crop_shape(config.data)
    settings.check_geometry(config.data, stride, stride_name="G's stride", hint=" (model.pools)")
    if stride % map_stride:
        raise ValueError(f"model.map_stride {map_stride} must divide G's stride {stride}")
    sides = [n // map_stride for n in crop]
    if any(n % s or n // s < MIN_DISCRIMINATOR_SIDE for n in sides):
        raise ValueError(
            f"a {crop[0]} x {crop[1]} crop at model.map_stride {map_stride} gives "
            f"{sides[0]} x {sides[1]} maps: D2 needs them split into asnet.patches = {s} equal "
            f"patches of at least {MIN_DISCRIMINATOR_SIDE} px a side; lower model.map_stride or "
            "asnet.patches"
        )


def make_model(config) -> ASNet:
    check_config(config)
    return ASNet(
        width=config.model.width,
        pools=int(config.model.pools),
        map_stride=int(config.model.map_stride),
        activation=config.model.activation,
        patches=int(config.asnet.patches),
        leaky_slope=float(config.model.leaky_slope),
        input_convention=importers.model_input_convention(config.model.pretrained),
        head_init=config.model.head_init,
        dtype=layers.compute_dtype(config.model.dtype),
        remat=bool(config.model.remat),
    )


def init_variables(model, rng, config, *, input_shape):
    h, w = input_shape
    return model.init(rng, jnp.zeros((1, h, w, 3), jnp.float32), method=model.init_all)


def param_group(path, config) -> str:
    del config
    if path[0] not in GROUPS:
        raise ValueError(f"ASNet parameter {'/'.join(path)} is outside {GROUPS}")
    return path[0]


# ----------------------------------------------------------------------------------------------
# The pieces of a step (shared by the train step and `loss_fn`).


def map_mask(image_mask, shape) -> jax.Array:
    """[B, h, w] float32: the map pixels on real image pixels (a cell's top-left pixel)."""
    stride = image_mask.shape[1] // shape[0]  # Heights: the crops need not be square.
    return image_mask[:, ::stride, ::stride][:, : shape[0], : shape[1]].astype(jnp.float32)


def generate(params, images, image_mask, *, model):
    """(G's maps [B, h, w], zero on padding, and the real map pixels [B, h, w])."""
    maps = model.apply({"params": params}, images)
    mask = map_mask(image_mask, maps.shape[1:])
    return maps * mask, mask


def discriminate(params, maps, mask, *, model, local: bool, patches: int):
    """(logits, 0/1 weights of the logits over real pixels only) of D2 (local) or D1."""
    method = model.local_logits if local else model.global_logits
    logits = model.apply({"params": params}, maps, method=method)
    if local:
        return logits, output_mask(split_patches(mask, patches), logits.shape[3:])
    return logits, output_mask(mask, logits.shape[1:])


def discriminator_loss(params, source, target, *, model, local: bool, patches: int):
    """Eq. 1 (D1) or Eq. 2 (D2), unscaled, on (maps, mask) pairs; returns (loss, source logits)."""
    kw = dict(model=model, local=local, patches=patches)
    source_logits, source_mask = discriminate(params, *source, **kw)
    target_logits, target_mask = discriminate(params, *target, **kw)
    loss = (
        domain_bce(source_logits, source=True, mask=source_mask).mean()
        + domain_bce(target_logits, source=False, mask=target_mask).mean()
    )
    return loss, source_logits


def scores_of(global_logits, local_logits, source_mask, config) -> dict:
    """{level: score [B, ...]} of the configured levels from the discriminators' logits on the
    source maps (None: that discriminator is off); levels left out are off."""
    cfg = config.asnet
    if global_logits is None and local_logits is None:
        return {}
    s = int(cfg.patches)
    b = source_mask.shape[0]
    # adversarial_scores reads both outputs; the stand-in of an absent one gives unused levels.
    o1 = jax.nn.sigmoid(global_logits) if global_logits is not None else jnp.ones((b, 1, 1))
    o2 = jax.nn.sigmoid(local_logits) if local_logits is not None else jnp.ones((b, s, s, 1, 1))
    w1, w2, w3, w4 = adversarial_scores(
        o1, o2, map_shape=source_mask.shape[1:], patches=s, map_mask=source_mask
    )
    levels = {"w1": w1, "w2": w2, "w3": w3, "w4": w4}
    return {k: jax.lax.stop_gradient(v) for k, v in levels.items() if k in tuple(cfg.scores)}


def adapts(config) -> bool:
    """Whether any discriminator is on (else NoAdapt: the target batch is not even predicted)."""
    return bool(config.asnet.global_discriminator or config.asnet.local_discriminator)


def objective_of_maps(params, source, target, gt, scores: dict, *, model, config):
    """L_All (Eq. 9) of G's (maps, mask) on the source and the target batch, with the
    discriminators in `params`; returns (loss, metrics)."""
    cfg, loss_cfg = config.asnet, config.loss
    pred, _ = source
    per_image = scored_density_loss(
        pred,
        gt,
        scores.get("w1"),
        scores.get("w2"),
        scores.get("w3"),
        scores.get("w4"),
        patches=int(cfg.patches),
        residual=bool(cfg.residual),
    )
    loss = density = per_image.mean()
    scale = float(loss_cfg.density_scale)
    metrics = {
        "density": density,
        "density_mse": jnp.square(pred - gt).sum(axis=(1, 2)).mean(),
        "count_mae": jnp.abs(pred.sum(axis=(1, 2)) - gt.sum(axis=(1, 2))).mean() / scale,
    }
    for on, local, weight, name in (
        (cfg.global_discriminator, False, loss_cfg.adv_global_weight, "global"),
        (cfg.local_discriminator, True, loss_cfg.adv_local_weight, "local"),
    ):
        if on:
            logits, mask = discriminate(
                params, *target, model=model, local=local, patches=int(cfg.patches)
            )
            adv = domain_bce(logits, source=True, mask=mask).mean()  # Eq. 3-4: targets only.
            loss = loss + float(weight) * adv
            metrics[f"adv_{name}"] = adv
    return loss, metrics


def _generate_both(params, batch, *, model, config):
    source = generate(params, batch["source"]["image"], batch["source"]["image_mask"], model=model)
    if not adapts(config):
        return source, None
    target = generate(params, batch["target"]["image"], batch["target"]["image_mask"], model=model)
    return source, target


def _source_logits(params, source, *, model, config):
    """(D1 logits or None, D2 logits or None) on source maps, for the discriminators that are on."""
    cfg = config.asnet
    kw = dict(model=model, patches=int(cfg.patches))
    return (
        discriminate(params, *source, local=False, **kw)[0] if cfg.global_discriminator else None,
        discriminate(params, *source, local=True, **kw)[0] if cfg.local_discriminator else None,
    )


def loss_fn(params, model_state, batch, rng, *, model, config):
    """The generator's objective L_All with the current discriminators (the G phase alone)."""
    del rng
    source, target = _generate_both(params, batch, model=model, config=config)
    fixed = jax.lax.stop_gradient(source)
    global_logits, local_logits = _source_logits(params, fixed, model=model, config=config)
    scores = scores_of(global_logits, local_logits, fixed[1], config)
    gt = batch["source"]["density"] * float(config.loss.density_scale)
    loss, metrics = objective_of_maps(
        params, source, target, gt, scores, model=model, config=config
    )
    return loss, (metrics, model_state)


def train_step(state, batch, *, method, model, config, optimizer):
    """Alg. 1: a D1 step, a D2 step (G fixed), then a G step (D1, D2 fixed), one jitted step.

    G runs forward once: its maps feed the discriminator phases as constants, and the G phase's
    gradient with respect to them goes back through G by the same forward's VJP.
    """
    del method
    cfg = config.asnet
    params, opt_state = state.params, state.opt_state

    def generator_maps(generator_params):
        return _generate_both(
            {**params, "generator": generator_params}, batch, model=model, config=config
        )

    (source, target), pull_back = jax.vjp(generator_maps, params["generator"])
    metrics = {}
    logits = {"d1": None, "d2": None}
    for group, on, local, weight in (
        ("d1", cfg.global_discriminator, False, 1.0),
        ("d2", cfg.local_discriminator, True, float(config.loss.local_discriminator_weight)),
    ):
        if not on:
            continue

        def d_loss(p, local=local, weight=weight):
            loss, source_logits = discriminator_loss(
                p, source, target, model=model, local=local, patches=int(cfg.patches)
            )
            return weight * loss, (loss, source_logits)

        (_, (loss, source_logits)), grads = jax.value_and_grad(d_loss, has_aux=True)(params)
        params, opt_state = optimizer.apply(params, opt_state, grads, groups=(group,))
        if cfg.scores_from == "after_update":
            source_logits, _ = discriminate(
                params, *source, model=model, local=local, patches=int(cfg.patches)
            )
        logits[group] = source_logits
        metrics[f"d_{'local' if local else 'global'}"] = loss
    scores = scores_of(logits["d1"], logits["d2"], source[1], config)
    gt = batch["source"]["density"] * float(config.loss.density_scale)

    def g_loss(maps):
        return objective_of_maps(params, *maps, gt, scores, model=model, config=config)

    (loss, g_metrics), map_grads = jax.value_and_grad(g_loss, has_aux=True)((source, target))
    (generator_grads,) = pull_back(map_grads)
    grads = {"generator": generator_grads}
    params, opt_state = optimizer.apply(params, opt_state, grads, groups=("generator",))
    metrics.update(g_metrics)
    metrics.update({f"score_{k}": v.mean() for k, v in scores.items()})
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.global_norm(generator_grads)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def predict_fn(variables, images, *, model, config, image_mask=None):
    del image_mask  # The evaluator masks the padding of the density.
    return model.apply(variables, images) / float(config.loss.density_scale)


load_pretrained = importers.vgg_backbone_loader("vgg16", make_model)


METHOD = Method(
    name="asnet",
    make_model=make_model,
    init_variables=init_variables,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    output_stride=lambda config: int(config.model.map_stride),
    train_step=train_step,
    param_group=param_group,
    load_pretrained=load_pretrained,
)
