"""ASNet (Zou et al., ACM MM 2021) settings shared by the adaptation configs (Sec 4.1, supp. C-D).

Sec 4.1: G is VGG16 (ImageNet) with a dilated back-end, trained with SGD at 1e-6; D1 and D2 with
Adam at 1e-4; lambda_1 = 1e-3 (global adversarial), lambda_2 = 1e-4 (local adversarial), lambda_3
= 1e-1 (D2's loss); S = 4 patches a side; 512 x 512 input patches; ground truth as MCNN
(geometry-adaptive kernels on part A: the builder's default; fixed kernels elsewhere).

Not in the paper (our choices, each a field below): density maps at the input resolution
(`model.map_stride = 1`: G's stride-16 output bilinearly upsampled; D2's 8 x 8 patches of a
stride-16 map of a 512 crop would vanish in Table 9's four stride-2 convs); the ground truth as
the builders store it, people per pixel (`loss.density_scale = 1`: Eq. 7 as written; the paper
gives no scale, the C^3 framework multiplies by 100 but averages over pixels, where Eq. 7 sums;
not validated against the paper's numbers here); SGD momentum 0.9; LeakyReLU slope 0.2; batch 4
(pairs of source and target crops); 200 epochs of the source; 512 crops taken from the images as
the builders store them rather than resized (smaller images are padded, and the discriminators'
outputs over padding are left out of their losses and of the scores, so that image size does not
tell the domains apart); the scores from the discriminator outputs before their step (Alg. 1).

Model selection reads the source's validation split (held out of its train split): no target
label is ever read before the final evaluation on the target's test split.

Variants (`configs/asnet_<setting>.py:<variant>`, comma-separated):
  fine (default)  FineAdapt: both discriminators and all four scores (the full ASNet)
  coarse          CoarseAdapt: both discriminators, no scores
  noadapt         NoAdapt: source only
  tiny            the tiny test run
Any subset of scores and discriminators from the command line (Tables 4, 5, 7), e.g.
  --config.asnet.scores="('w1','w3')"     --config.asnet.local_discriminator=False
  --config.asnet.residual=False           (Table 7)
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("fine", "coarse", "noadapt")


def asnet_config(
    source: str, target: str, *, crop: int = 512, epochs: int = 200, batch: int = 4
) -> ml_collections.ConfigDict:
    """ASNet from `source` to `target` (data sets of `configs/datasets.py`, e.g. "sha", "shb")."""
    config = common.base_config()
    config.method = "asnet"
    facts = common.use_dataset(config, source)
    target_facts = common.datasets.get(target)
    config.data.target = target_facts.name
    config.data.crop_size = crop
    config.data.hflip = True
    config.data.max_points = 4096
    config.data.eval_bucket_multiple = 64

    config.model.pools = 4  # Table 8 (3: stride 8, CSRNet's back-end geometry).
    config.model.map_stride = 1  # Density maps (and the discriminators' input) at this stride.
    config.model.activation = "none"  # Table 8's output layer has no activation.
    config.model.leaky_slope = 0.2
    # The back-end's initialisation: "default" (PyTorch's; ImageNet-normalised backbones) or
    # "small" (N(0, 0.01), output 0; for 0-255 inputs such as HED's: `layers.head_initialisers`).
    config.model.head_init = "default"

    config.asnet = ml_collections.ConfigDict()
    config.asnet.global_discriminator = True
    config.asnet.local_discriminator = True
    config.asnet.scores = ("w1", "w2", "w3", "w4")
    config.asnet.residual = True
    config.asnet.patches = 4
    config.asnet.scores_from = "before_update"

    config.loss = ml_collections.ConfigDict()
    config.loss.adv_global_weight = 1e-3  # lambda_1
    config.loss.adv_local_weight = 1e-4  # lambda_2
    config.loss.local_discriminator_weight = 1e-1  # lambda_3
    config.loss.density_scale = 1.0  # Ground truth x this in training; predictions / it.

    config.optimizers.generator = common.default_optimizer_config(
        name="sgd", learning_rate=1e-6, momentum=0.9
    )
    config.optimizers.d1 = common.default_optimizer_config(name="adam", learning_rate=1e-4)
    config.optimizers.d2 = common.default_optimizer_config(name="adam", learning_rate=1e-4)

    train_images = facts.training_images(config.data.holdout_fraction)
    config.train.global_batch_size = batch
    config.train.num_steps = common.steps_for_epochs(epochs, train_images, batch)
    config.train.log_every = 100
    config.train.eval_every = max(1, 5 * train_images // batch)
    config.train.checkpoint_every = max(1, train_images // batch)

    # Selection on the source's held-out images; the target's test split at the end.
    del config.evals.test
    config.evals.target_test = common.eval_entry(target_facts.name, "test")
    return config


def apply_variant(config, variant: str) -> ml_collections.ConfigDict:
    """FineAdapt, CoarseAdapt or NoAdapt (Table 4) on an ASNet config."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ASNet variant {variant!r}; choose from {VARIANTS}")
    adapt = variant != "noadapt"
    config.asnet.global_discriminator = adapt
    config.asnet.local_discriminator = adapt
    config.asnet.scores = ("w1", "w2", "w3", "w4") if variant == "fine" else ()
    return config


def make_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The common tiny run, with the tiny data as the target too (64 crops, maps at the input
    resolution: D2's patches are 16 px, the least Table 9 takes)."""
    config = common.make_tiny(config)
    config.model.map_stride = 1
    config.data.target = common.TINY_DATA
    config.evals.target_test.dataset = common.TINY_DATA
    return config


def make_cpu(config: ml_collections.ConfigDict, *, num_steps: int) -> ml_collections.ConfigDict:
    """The `:cpu` recipe of part A -> part B (see `configs/asnet_sha_to_shb.py`): HED's VGG16,
    both parts with long sides at most 512 px, 256 crops at batch 2, G trained with Adam 1e-5,
    2 validations."""
    source, target = common.datasets.get("sha_512"), common.datasets.get("shb_512")
    config.data.name = source.name
    config.data.target = target.name
    config.evals.target_test.dataset = target.name
    config.data.crop_size = 256
    config.data.eval_buckets = common.CPU_BUCKETS
    config.model.pretrained = common.CPU_BACKBONE
    # HED's 0-255 features start PyTorch's back-end at -150x the count; "small" starts at 0.
    config.model.head_init = "small"
    config.optimizers.generator = common.default_optimizer_config(name="adam", learning_rate=1e-5)
    config.train.global_batch_size = 2
    common.cpu_schedule(config, num_steps=num_steps, evaluations=2)
    return config


def get_variant(make, variant: str, *, cpu=None) -> ml_collections.ConfigDict:
    """`make()` with the comma-separated options of `variant` applied (see the module doc);
    "cpu" (only where `cpu` is given) applies `cpu(config)`."""
    options = common.variant_options(variant, (*VARIANTS, *(("cpu",) if cpu else ()), "tiny"))
    modes = [v for v in options if v in VARIANTS]
    if len(modes) > 1:
        raise ValueError(f"choose one of {VARIANTS}, got {modes}")
    config = apply_variant(make(), modes[0] if modes else "fine")
    if "cpu" in options:
        config = cpu(config)
    return make_tiny(config) if "tiny" in options else config
