"""AutoScale localization on ShanghaiTech part B: 400 train / 316 test.

Gaussian sigma 8 px, crop 512.

  python train.py --config=configs/autoscale_loc_shb.py --workdir=workdirs/autoscale_loc_shb
  python eval.py --config=configs/autoscale_loc_shb.py --workdir=workdirs/autoscale_loc_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 4, MAE/RMSE): 8.6/13.9.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config(
        "loc",
        dataset="shanghaitech/part_b",
        sigma=8.0,
        crop_size=512,
        train_images=400,
        max_points=1024,
    )
    return autoscale_common.make_tiny(config) if variant == "tiny" else config
