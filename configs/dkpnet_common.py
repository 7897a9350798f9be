"""DKPNet (Chen et al., ICCV 2021) settings shared by the joint-training configs (Sec 4).

Sec 4: truncated HRNet-W40 (ImageNet), a 1 x 1 conv to 512 channels, VA / InVA attention, a head
of 1 x 1 convs 64, 32, 1; fixed 15 x 15 Gaussian kernels (sigma 4); images with a short side
under 416 scaled up to 416 (aspect kept); random 400 x 400 crops, horizontal flips and colour
jitter; batch 32; Adam at 5e-5 for the backbone and the new layers, 450 epochs, the rate / 2.5
every 250 epochs; every batch mixes the data sets (images drawn uniformly from their union, as
the public baseline's loader); one evaluation per data set. DKPNet(c, k): c = 3, k = 3 for
3-joint; c = 5, k = 2 for 4-joint (Sec 4.4).

Not in the paper (our choices, each a field below): the latent dimension d = 16 and the MLPs'
128 hidden units (`dkpnet.latent_dim`, `dkpnet.hidden`); the regulariser weight 1 (Eq. 9 as
written, `loss.regularizer_weight`); the ground truth in people per pixel (`loss.density_scale`
1, as the public baseline); colour jitter 0.2 (the public baseline's brightness, contrast and
saturation); the 416 rule for every data set at training and evaluation (the baseline applies
it to SHA only, and its own rules to QNRF and NWPU, which our builders already store with
short side >= 512 and long side <= 2048); an epoch counts the images of all data sets.

Model selection: the mean of the data sets' validation MAEs (`selection.eval` lists the
`val_<data set>` entries; each held out of its train split where there is no official one). A
mean of MAEs weighs the dense data sets (QNRF, NWPU: MAEs near 100) far more than SHB (near 10);
select on one entry with `--config.selection.eval=val_shb`, or on `nae`, to weigh them otherwise.
The public baseline instead saves checkpoints whose test MAEs beat fixed thresholds; the test
splits are read only by the final evaluation here. NWPU's test annotations are not public: the
4-joint configs report its validation split (`val_nwpu`), which also takes part in selection,
so that number is optimistic.

ImageNet weights: `--config.model.pretrained=<file>`, the official HRNet-W40-C classification
state dict (`hrnetv2_w40_imagenet_pretrained.pth`) or timm's `hrnet_w40` (.pth/.safetensors).

Variants (`configs/dkpnet_<setting>.py:<variant>`, comma-separated):
  va (stage I, default of the va configs), jt (no attention), se (SE attention): `dkpnet_va`
  inva (stage II, default of the inva configs): `dkpnet_inva`, from the stage-I run
      `dkpnet.stage1` (default: the default workdir of the matching va config)
  tiny: the tiny test run
"""

from __future__ import annotations

import ml_collections

from configs import common

STAGE_ONE = ("jt", "se", "va")
VARIANTS = (*STAGE_ONE, "inva")
ATTENTION = {"jt": "none", "se": "se", "va": "va", "inva": "inva"}


def dkpnet_config(
    keys: tuple[str, ...],
    *,
    variant: str,
    clusters: int,
    sub_centers: int,
    stage1: str,
    epochs: int = 450,
    decay_epochs: int = 250,
    batch: int = 32,
    crop: int = 400,
) -> ml_collections.ConfigDict:
    """DKPNet jointly on the data sets `keys` (of `configs/datasets.py`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown DKPNet variant {variant!r}; choose from {VARIANTS}")
    config = common.base_config()
    config.method = "dkpnet_inva" if variant == "inva" else "dkpnet_va"
    facts = [common.datasets.get(k) for k in keys]
    config.data.name = [f.name for f in facts]
    config.data.holdout_mode = "random"
    config.data.crop_size = crop
    config.data.hflip = True
    config.data.color_jitter = 0.2
    config.data.density_sigma = 4.0
    config.data.density_truncate = 1.75  # radius int(1.75 * 4 + 0.5) = 7: 15 x 15
    config.data.min_short_side = 416
    config.data.output_stride = 4
    config.data.max_points = 8192
    config.data.eval_bucket_multiple = 64

    config.model.channels = 512
    # The density head's initialisation: "default" (flax's, as the public baseline's PyTorch) or
    # "small" (N(0, 0.01), the output conv at zero: the count starts at 0).
    config.model.head_init = "default"
    config.model.hrnet_blocks = 4
    config.model.hrnet_stage3_modules = 4

    config.dkpnet = ml_collections.ConfigDict()
    config.dkpnet.attention = ATTENTION[variant]
    config.dkpnet.latent_dim = 16
    config.dkpnet.hidden = 128
    config.dkpnet.clusters = clusters  # C̄ (InVA)
    config.dkpnet.sub_centers = sub_centers  # k (InVA)
    config.dkpnet.sub_center_dropout = 0.2
    config.dkpnet.stage1 = stage1  # InVA: the stage-I (VA) workdir whose attention is clustered

    config.loss = ml_collections.ConfigDict()
    config.loss.density_scale = 1.0  # Ground truth x this in training; predictions / it.
    config.loss.regularizer_weight = 1.0

    images = sum(f.training_images(config.data.holdout_fraction) for f in facts)
    config.train.global_batch_size = batch
    config.train.num_steps = common.steps_for_epochs(epochs, images, batch)
    config.optimizer = common.default_optimizer_config(
        name="adam",
        learning_rate=5e-5,
        schedule="step",
        decay_every=common.steps_for_epochs(decay_epochs, images, batch),
        decay_factor=1 / 2.5,
    )
    config.train.log_every = 100
    config.train.eval_every = max(1, 5 * images // batch)
    config.train.checkpoint_every = max(1, images // batch)

    del config.evals.val, config.evals.test
    for key, f in zip(keys, facts, strict=True):
        config.evals[f"val_{key}"] = common.eval_entry(f.name, "validation", during_training=True)
    for key, f in zip(keys, facts, strict=True):
        if f.public_test:  # NWPU: its validation split is its reported result.
            config.evals[f"test_{key}"] = common.eval_entry(f.name, "test")
    config.selection.eval = ",".join(f"val_{key}" for key in keys)
    return config


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The common tiny run: one domain (the tiny data), a two-block HRNet, InVA with 2
    clusters of 2 sub-centers from the stage-I tiny run in `dkpnet.stage1`."""
    for prefix in list(config.evals.keys()):
        del config.evals[prefix]
    config = common.make_tiny(config)
    config.data.name = [common.TINY_DATA]
    config.data.min_short_side = 0
    config.data.output_stride = 4
    config.model.hrnet_blocks = 1
    config.model.hrnet_stage3_modules = 1
    config.dkpnet.clusters = 2
    config.dkpnet.sub_centers = 2
    config.evals.val = common.eval_entry(split="validation", during_training=True)
    config.evals.test = common.eval_entry(split="test")
    config.selection.eval = "val"
    return config


def make_cpu(config: ml_collections.ConfigDict, *, num_steps: int) -> ml_collections.ConfigDict:
    """The `:cpu` recipe of the joint config on ShanghaiTech parts A and B (see
    `configs/dkpnet_va_shanghaitech.py`): from scratch at half width, long sides at most 512 px,
    256 crops at batch 4, the kernel of sigma 4 halved to sigma 2, Adam 1e-4 constant, the
    density head's output conv at zero, BatchNorm statistics re-estimated on 40 training batches
    before each evaluation."""
    facts = [common.datasets.get(f"{key}_512") for key in ("sha", "shb")]
    names = [f.name.removesuffix("_512") for f in facts]
    if list(config.data.name) != names:
        raise ValueError(f"the DKPNet :cpu recipe trains on {names}, not {config.data.name}")
    config.data.name = [f.name for f in facts]
    halved = {name: f.name for name, f in zip(names, facts, strict=True)}
    for spec in config.evals.values():
        spec.dataset = halved[spec.dataset]
    config.data.crop_size = 256
    config.data.min_short_side = 0  # 416 would scale the halved images back up.
    config.data.density_sigma = 2.0  # The paper's sigma 4 on the halved images,
    config.data.density_truncate = 2.25  # radius int(2.25 * 2 + 0.5) = 5: 11 x 11.
    config.data.max_points = 4096
    config.data.eval_buckets = common.CPU_BUCKETS
    config.model.pretrained = ""  # No HRNet weights here: from scratch,
    config.model.width = 0.5  # so at half width (a quarter of W40's computation).
    config.model.head_init = "small"  # Counts start at 0, not at thousands a crop.
    # A few hundred steps at 1e-4 leave the running BatchNorm averages stale (crowdjax.precise_bn).
    config.eval.recompute_batch_stats = 40
    config.train.global_batch_size = 4
    config.optimizer = common.default_optimizer_config(name="adam", learning_rate=1e-4)
    common.cpu_schedule(config, num_steps=num_steps, evaluations=2)
    return config


def get_variant(
    make_config, variant: str, *, allowed: tuple[str, ...], cpu=None
) -> ml_collections.ConfigDict:
    """`make_config(variant)` for "<variant>[,cpu][,tiny]", variant one of `allowed` (default:
    the last); "cpu" (only where `cpu` is given) applies `cpu(config)`."""
    parts = common.variant_options(variant, (*allowed, *(("cpu",) if cpu else ()), "tiny"))
    names = [p for p in parts if p not in ("cpu", "tiny")]
    if len(names) > 1:
        raise ValueError(f"unknown DKPNet variant {variant!r}; choose one of {allowed} [,tiny]")
    config = make_config(names[0] if names else allowed[-1])
    if "cpu" in parts:
        config = cpu(config)
    return make_tiny(config) if "tiny" in parts else config
