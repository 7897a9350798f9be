"""L2SM on ShanghaiTech part B (sizes: configs/datasets.py "shb"; settings: configs/l2sm_common.py).

  python train.py --config=configs/l2sm_shb.py --workdir=workdirs/l2sm_shb
  python eval.py --workdir=workdirs/l2sm_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
Whole 768 x 1024 images at batch 1, GT with a fixed sigma of 15 px (CSRNet). The checkpoint is
selected on 10% of train held out; the test split is evaluated at the end, and part A's test split
too (Table 4, part B -> part A; needs shanghaitech/part_a built).
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 1, MAE/RMSE): 7.2/11.1 (SPN alone 9.1/14.6; Table 4 B -> A: 126.8/203.9).
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
"""

from configs import common, l2sm_common


def get_config(variant: str = ""):
    config = l2sm_common.l2sm_config("shb")
    config.data.train_buckets = ((768, 1024),)
    config.evals.sha_test = common.eval_entry("shanghaitech/part_a", "test")
    return l2sm_common.make_tiny(config) if common.is_tiny(variant) else config
