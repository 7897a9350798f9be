"""ASNet, ShanghaiTech part A -> part B (Table 1: MAE 13.59, MSE 23.15).

  python train.py --config=configs/asnet_sha_to_shb.py --workdir=workdirs/asnet_sha_to_shb
  python train.py --config=configs/asnet_sha_to_shb.py:coarse ...   # CoarseAdapt (Table 4)
  python train.py --config=configs/asnet_sha_to_shb.py:noadapt ...  # NoAdapt (source only)
  python eval.py --workdir=workdirs/asnet_sha_to_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
Part A's labelled crops (geometry-adaptive kernels) are the source; part B's training images,
without their labels, the target. The checkpoint is selected on 10% of part A's train split held
out; part B's test split is evaluated at the end. Settings: configs/asnet_common.py.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
"""

from configs import asnet_common


def get_config(variant: str = ""):
    return asnet_common.get_variant(lambda: asnet_common.asnet_config("sha", "shb"), variant)
