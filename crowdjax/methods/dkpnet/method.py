"""DKPNet: variational attention for multi-domain joint training (Chen et al., ICCV 2021).

Registered as ``dkpnet_va`` (stage I: JT, SE or VA, `dkpnet.attention`) and ``dkpnet_inva``
(stage II). One model is trained on several data sets at once (`data.name` a list; every batch
mixes them, each image carries its domain id) and evaluated on each separately.

Loss per batch of B images (Eq. 9), with c = the image's domain:
  1/(2B) sum_b ||Ŷ_b - Y_b||^2  (sum over the real cells of the stride-4 map)
  + 1/B sum_b [KL(q(z|x_b) || N(u_c, Sigma_c)) + log sum_i exp(z_b^T u_i - z_b^T u_c)
               + (log det Sigma_c)^2]                    (`variational_attention_regularizer`)
The regulariser is weighted by `loss.regularizer_weight` (1 = Eq. 9) and is absent for JT and SE.

Stage II (InVA, Sec 3.3) is a preparation (`crowdjax.methods.base.Preparation`) followed by a
fresh training run from ImageNet weights:
  1. `prepare` loads the stage-I run `dkpnet.stage1` (a workdir: its config.json and its best
     checkpoint), predicts every training image of every data set (whole images, evaluation
     mode: z = mu) and collects the attention outputs y [512];
  2. scikit-learn's `GaussianMixture` (`dkpnet.clusters` = C̄ components, diagonal
     covariances, seeded) clusters them; each image's cluster is its new domain label, stored
     in `<workdir>/preparation/` with the cluster/data-set contingency table and agreement
     scores (a resumed run reads them back and never clusters again);
  3. training uses those labels as `domain`, with k = `dkpnet.sub_centers` sub-centers per
     cluster chosen per image by Eq. 8 (`select_sub_centers`, dropout `dkpnet.sub_center_dropout`).

Choices the paper leaves open are in `configs/dkpnet_common.py` and the model's docstring.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from crowdjax import storage, whole_images
from crowdjax.data import settings
from crowdjax.losses.variational import (
    diag_gaussian_kl,
    select_sub_centers,
    variational_attention_regularizer,
)
from crowdjax.methods.base import Method, Preparation, PrepareContext
from crowdjax.methods.dkpnet.model import ATTENTIONS, OUTPUT_STRIDE, DKPNet
from crowdjax.metric_writers import log
from crowdjax.models import layers
from crowdjax.models.batch_norm import mask_to_features
from crowdjax.models.hrnet_import import hrnet_backbone_loader

STAGE_ONE = ("none", "se", "va")


# ----------------------------------------------------------------------------------------------
# Model and variables.


def hrnet_settings(config) -> dict:
    """HRNetStage3 fields: W40 at `model.width` 1, every channel count scaled by it otherwise."""
    w = float(config.model.width)
    scale = lambda c: max(2, round(c * w))
    return {
        "branch_channels": tuple(scale(c) for c in (40, 80, 160)),
        "stem_channels": scale(64),
        "layer1_planes": scale(64),
        "blocks": int(config.model.hrnet_blocks),
        "stage3_modules": int(config.model.hrnet_stage3_modules),
        "remat": bool(config.model.remat),
    }


def num_domains(config) -> int:
    """C: the data sets of the joint stream (VA), or the clusters C̄ (InVA)."""
    if config.dkpnet.attention == "inva":
        return int(config.dkpnet.clusters)
    return len(settings.dataset_names(config.data))


def _model(config, allowed: tuple[str, ...]) -> DKPNet:
    attention = config.dkpnet.attention
    if attention not in allowed:
        raise ValueError(
            f"method {config.method!r} trains dkpnet.attention in {allowed}, got {attention!r} "
            f"(all: {ATTENTIONS}; 'inva' is method 'dkpnet_inva')"
        )
    w = float(config.model.width)
    return DKPNet(
        hrnet=tuple(hrnet_settings(config).items()),
        channels=max(2, round(int(config.model.channels) * w)),
        attention=attention,
        domains=num_domains(config),
        sub_centers=int(config.dkpnet.sub_centers),
        latent_dim=int(config.dkpnet.latent_dim),
        hidden=max(2, round(int(config.dkpnet.hidden) * w)),
        head_channels=tuple(max(2, round(c * w)) for c in (64, 32)),
        head_init=config.model.head_init,
        dtype=layers.compute_dtype(config.model.dtype),
    )


def init_variables(model, rng, config, *, input_shape):
    h, w = input_shape
    images = jnp.zeros((1, h, w, 3), jnp.float32)
    # An RBG key for the initialisers: with threefry keys XLA compiles the HRNet's ~200
    # initialisers for 12-15 s on a CPU, with RBG in 3-4 s (the draws are as random).
    key = jax.random.key(jax.random.bits(rng, dtype=jnp.uint32), impl="rbg")
    return dict(model.init(key, images, method=model.init_all))


load_pretrained = hrnet_backbone_loader(
    lambda config: _model(config, ATTENTIONS), prefix="backbone"
)


# ----------------------------------------------------------------------------------------------
# Training.


def real_cells(image_mask: jax.Array, shape) -> jax.Array:
    """[B, h, w] float32: the output cells that hold real pixels."""
    return mask_to_features(image_mask, shape).astype(jnp.float32)


def domain_priors(params, model, mu, rng, config):
    """(prior_mu [C, d] or per image [B, C, d], prior_var [C, d]) for the regulariser."""
    prior_mu, prior_var = model.apply({"params": params}, method=model.priors)
    if model.attention == "inva":
        prior_mu, _ = select_sub_centers(
            prior_mu, mu, rng=rng, rate=float(config.dkpnet.sub_center_dropout)
        )
    return prior_mu, prior_var


def loss_fn(params, model_state, batch, rng, *, model, config):
    """Eq. 9 (see the module doc): mean over the global batch of the per-image loss."""
    latent_rng, dropout_rng = jax.random.split(rng)
    out, updates = model.apply(
        {"params": params, **model_state},
        batch["image"],
        train=True,
        mask=batch["image_mask"],
        rngs={"latent": latent_rng},
        mutable=["batch_stats"],
    )
    scale = float(config.loss.density_scale)
    real = real_cells(batch["image_mask"], out["density"].shape[1:])
    target = batch["density"].astype(jnp.float32) * scale
    density_loss = 0.5 * jnp.sum(real * jnp.square(out["density"] - target), axis=(1, 2))
    count = jnp.sum(out["density"] * real, axis=(1, 2)) / scale
    metrics = {
        "density_loss": density_loss.mean(),
        "count_mae": jnp.abs(count - batch["count"]).mean(),
    }
    loss = density_loss
    if model.variational:
        domain = batch["domain"]
        prior_mu, prior_var = domain_priors(params, model, out["mu"], dropout_rng, config)
        reg = variational_attention_regularizer(
            out["z"], out["mu"], out["var"], domain, prior_mu, prior_var
        )
        rows = jnp.arange(domain.shape[0])
        own = prior_mu[rows, domain] if prior_mu.ndim == 3 else prior_mu[domain]
        kl = diag_gaussian_kl(out["mu"], out["var"], own, prior_var[domain])
        loss = loss + float(config.loss.regularizer_weight) * reg
        metrics.update(regularizer=reg.mean(), kl=kl.mean(), latent_var=out["var"].mean())
    return loss.mean(), (metrics, {**model_state, **updates})


# ----------------------------------------------------------------------------------------------
# Prediction.


def predict_fn(variables, images, *, model, config, image_mask=None):
    """{"density" [B, H/4, W/4] (people per cell), "attention" y [B, C] and, for VA/InVA,
    "mu" [B, d]}: evaluation mode (running BatchNorm statistics, z = mu)."""
    out = model.apply(variables, images, train=False, mask=image_mask)
    density = out["density"] / float(config.loss.density_scale)
    if image_mask is not None:
        density = density * real_cells(image_mask, density.shape[1:])
    result = {"density": density, "attention": out["attention"]}
    if model.variational:
        result["mu"] = out["mu"]
    return result


# ----------------------------------------------------------------------------------------------
# Stage II's preparation: clustering the stage-I attention outputs into new domain labels.


def stage_one_run(context: PrepareContext):
    """(config, setup, variables, checkpoint info) of the stage-I run named by `dkpnet.stage1`,
    read through the context's earlier runs."""
    config = context.config
    workdir = str(config.dkpnet.stage1)
    if not workdir or not storage.isdir(workdir):
        raise FileNotFoundError(
            f"dkpnet.stage1={workdir!r}: no stage-I run there. Train stage I first (e.g. "
            "python train.py --config=configs/dkpnet_va_3joint.py) and pass its workdir with "
            "--config.dkpnet.stage1=<workdir>"
        )
    if context.runs is None:
        raise ValueError("DKPNet's stage II reads its stage-I run: the context gives no runs")
    stage1 = context.runs.load_config(workdir)
    if stage1.method != "dkpnet_va" or stage1.dkpnet.attention not in ("se", "va"):
        raise ValueError(
            f"{workdir}: stage I must be a dkpnet_va run with attention 'va' (or 'se'), it is "
            f"{stage1.method!r} with attention {stage1.dkpnet.get('attention')!r}"
        )
    names = settings.dataset_names(config.data)
    if settings.dataset_names(stage1.data) != names:
        raise ValueError(
            f"{workdir}: stage I trained on {settings.dataset_names(stage1.data)}, stage II "
            f"trains on {names}; the clusters must come from the same data sets"
        )
    # The images as this run sees them and its training split (the same held-out images), with
    # stage I's preprocessing of each image.
    for key in ("data_dir", "train_split", "holdout_fraction", "holdout_seed", "holdout_mode"):
        stage1.data[key] = config.data[key]
    stage1.eval.global_batch_size = config.eval.global_batch_size
    setup, variables, info = context.runs.restore(stage1, workdir)
    return stage1, setup, variables, info


def attention_outputs(context: PrepareContext) -> tuple[list[tuple[str, str]], np.ndarray, dict]:
    """([(data set, image id)], y [N, C], the stage-I checkpoint's info): the stage-I attention
    of every training image (held-out validation images excluded)."""
    _, setup, variables, checkpoint = stage_one_run(context)
    keys, rows = [], []
    for view in context.training_splits():
        ids = set()
        for image_id, outputs in whole_images.per_image(setup, variables, view.dataset, view.split):
            ids.add(image_id)
            keys.append((view.dataset, image_id))
            rows.append(np.asarray(outputs["attention"], np.float64))
        if len(ids) != view.size:  # Every training image needs a label, once.
            raise ValueError(
                f"{view.dataset} {view.split!r}: {view.size} training images but {len(ids)} "
                "distinct image ids were predicted"
            )
    if not rows:
        raise ValueError("the DKPNet preparation found no training image")
    return keys, np.stack(rows), checkpoint


def cluster(attention: np.ndarray, clusters: int, *, seed: int) -> np.ndarray:
    """Gaussian-mixture labels [N] of the attention outputs (scikit-learn, diagonal)."""
    from sklearn.mixture import GaussianMixture

    if clusters < 1 or clusters > len(attention):
        raise ValueError(f"dkpnet.clusters={clusters} must be in 1..{len(attention)} (images)")
    mixture = GaussianMixture(
        n_components=clusters, covariance_type="diag", n_init=3, random_state=seed
    )
    return mixture.fit_predict(attention).astype(np.int64)


def agreement(datasets: list[str], labels: np.ndarray, clusters: int) -> dict:
    """How the clusters relate to the data sets: contingency table, purity, ARI, NMI."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    names = sorted(set(datasets), key=datasets.index)
    table = np.zeros((clusters, len(names)), np.int64)
    for name, label in zip(datasets, labels, strict=True):
        table[label, names.index(name)] += 1
    return {
        "datasets": names,
        "contingency": table.tolist(),  # [cluster][data set] image counts
        "purity": float(table.max(axis=1).sum() / max(1, table.sum())),
        "adjusted_rand": float(adjusted_rand_score(datasets, labels)),
        "normalized_mutual_info": float(normalized_mutual_info_score(datasets, labels)),
    }


def prepare(context: PrepareContext) -> Preparation:
    config = context.config
    clusters = int(config.dkpnet.clusters)
    keys, attention, checkpoint = attention_outputs(context)
    labels = cluster(attention, clusters, seed=int(config.seed))
    domain_labels: dict = {}
    for (dataset, image_id), label in zip(keys, labels, strict=True):
        domain_labels.setdefault(dataset, {})[image_id] = int(label)
    datasets = [dataset for dataset, _ in keys]
    sizes = np.bincount(labels, minlength=clusters)
    info = {
        "stage1": storage.absolute(str(config.dkpnet.stage1)),
        "stage1_checkpoint": checkpoint,
        "images": len(keys),
        "clusters": clusters,
        "cluster_sizes": sizes.tolist(),
        **agreement(datasets, labels, clusters),
    }
    log("DKPNet clusters: " + json.dumps(info))
    return Preparation(domain_labels=domain_labels, info=info)


def _method(name: str, allowed: tuple[str, ...], *, preparation=None) -> Method:
    return Method(
        name=name,
        make_model=lambda config: _model(config, allowed),
        init_variables=init_variables,
        loss_fn=loss_fn,
        predict_fn=predict_fn,
        output_stride=lambda config: OUTPUT_STRIDE,
        load_pretrained=load_pretrained,
        prepare=preparation,
    )


VA = _method("dkpnet_va", STAGE_ONE)
INVA = _method("dkpnet_inva", ("inva",), preparation=prepare)
