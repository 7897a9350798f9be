"""AutoScale regression on UCF-QNRF: 1201 train / 334 test.

Gaussian sigma 8 px, crop 512.

  python train.py --config=configs/autoscale_reg_qnrf.py --workdir=workdirs/autoscale_reg_qnrf
  python eval.py --config=configs/autoscale_reg_qnrf.py --workdir=workdirs/autoscale_reg_qnrf

Build the data first (see README):
  python -m crowdjax.data.build ucf_qnrf --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 4, MAE/RMSE): 87.5/147.8.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config(
        "reg", dataset="ucf_qnrf", sigma=8.0, crop_size=512, train_images=1201, max_points=4096
    )
    return autoscale_common.make_tiny(config) if variant == "tiny" else config
