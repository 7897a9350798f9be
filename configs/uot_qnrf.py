"""UOT on UCF-QNRF (sizes and resize rule: configs/datasets.py, "qnrf";
crop: configs/uot_common.py).

  python train.py --config=configs/uot_qnrf.py --workdir=workdirs/uot_qnrf
  python eval.py --workdir=workdirs/uot_qnrf

Build the data first (see README):
  python -m crowdjax.data.build ucf_qnrf --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (MAE/RMSE): 83.3/142.3 (docs/methods/uot.md).
ImageNet VGG19 weights: --config.model.pretrained=<vgg19.pth>.
"""

from configs import common
from configs.uot_common import uot_config


def get_config(variant: str = ""):
    config = uot_config("qnrf")
    return common.make_tiny(config) if common.is_tiny(variant) else config
