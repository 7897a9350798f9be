"""AutoScale regression on ShanghaiTech part B (sizes: configs/datasets.py, "shb";
sigma and crop: configs/autoscale_common.py).

  python train.py --config=configs/autoscale_reg_shb.py --workdir=workdirs/autoscale_reg_shb
  python eval.py --workdir=workdirs/autoscale_reg_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 4, MAE/RMSE): 6.8/11.3.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common, common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config("regression", "shb")
    return autoscale_common.make_tiny(config) if common.is_tiny(variant) else config
