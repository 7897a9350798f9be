"""UOT on ShanghaiTech part A (sizes and resize rule: configs/datasets.py, "sha";
crop: configs/uot_common.py).

  python train.py --config=configs/uot_sha.py --workdir=workdirs/uot_sha
  python eval.py --workdir=workdirs/uot_sha

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_a --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): 58.1/95.9 (docs/methods/uot.md).
ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config("sha")
    return common.make_tiny(config) if common.is_tiny(variant) else config
