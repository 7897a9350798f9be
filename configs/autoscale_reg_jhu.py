"""AutoScale regression on JHU-Crowd++: 2272 train / 1600 test.

Gaussian sigma 8 px, crop 512.

  python train.py --config=configs/autoscale_reg_jhu.py --workdir=workdirs/autoscale_reg_jhu
  python eval.py --config=configs/autoscale_reg_jhu.py --workdir=workdirs/autoscale_reg_jhu

Build the data first (see README):
  python -m crowdjax.data.build jhu_crowd --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper results: see METHODS.md.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config(
        "reg", dataset="jhu_crowd", sigma=8.0, crop_size=512, train_images=2272, max_points=4096
    )
    return autoscale_common.make_tiny(config) if variant == "tiny" else config
