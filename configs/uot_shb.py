"""UOT on ShanghaiTech part B (sizes and resize rule: configs/datasets.py, "shb";
crop: configs/uot_common.py).

  python train.py --config=configs/uot_shb.py --workdir=workdirs/uot_shb
  python eval.py --workdir=workdirs/uot_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): 6.5/10.2 (docs/methods/uot.md).
ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config("shb")
    return common.make_tiny(config) if common.is_tiny(variant) else config
