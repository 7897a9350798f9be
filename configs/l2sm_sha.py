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
"""

from configs import common, l2sm_common

ALL_UCF_CC_50 = "+".join(f"fold{k}" for k in range(1, 6))


def get_config(variant: str = ""):
    config = l2sm_common.l2sm_config("sha")
    config.evals.shb_test = common.eval_entry("shanghaitech/part_b", "test")
    config.evals.ucf_cc_50 = common.eval_entry("ucf_cc_50/clip", ALL_UCF_CC_50)
    config.evals.qnrf_test = common.eval_entry("ucf_qnrf/l2sm", "test")
    if common.is_tiny(variant):
        config = l2sm_common.make_tiny(config)
        config.evals.ucf_cc_50.split = "test"  # the tiny data has no folds
    return config
