"""AutoScale regression on JHU-Crowd++ (sizes: configs/datasets.py, "jhu";
sigma and crop: configs/autoscale_common.py).

  python train.py --config=configs/autoscale_reg_jhu.py --workdir=workdirs/autoscale_reg_jhu
  python eval.py --workdir=workdirs/autoscale_reg_jhu

Build the data first (see README):
  python -m crowdjax.data.build jhu_crowd --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper results: Table 3 of the paper, by split and density level (docs/methods/autoscale.md).
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common, common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config("regression", "jhu")
    return autoscale_common.make_tiny(config) if common.is_tiny(variant) else config
