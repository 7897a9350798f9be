"""AutoScale regression on NWPU-Crowd: 3109 train / 500 validation.

Gaussian sigma 6 px, crop 512.

  python train.py --config=configs/autoscale_reg_nwpu.py --workdir=workdirs/autoscale_reg_nwpu
  python eval.py --config=configs/autoscale_reg_nwpu.py --workdir=workdirs/autoscale_reg_nwpu

Build the data first (see README):
  python -m crowdjax.data.build nwpu_crowd --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper results: see METHODS.md.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config(
        "reg", dataset="nwpu_crowd", sigma=6.0, crop_size=512, train_images=3109, max_points=4096
    )
    config.eval.split = config.eval.final_split = "validation"
    return autoscale_common.make_tiny(config) if variant == "tiny" else config
