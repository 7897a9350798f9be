"""AutoScale localization on NWPU-Crowd (sizes: configs/datasets.py, "nwpu";
sigma and crop: configs/autoscale_common.py).

  python train.py --config=configs/autoscale_loc_nwpu.py --workdir=workdirs/autoscale_loc_nwpu
  python eval.py --workdir=workdirs/autoscale_loc_nwpu

Build the data first (see README):
  python -m crowdjax.data.build nwpu_crowd --manual_dir=<download>
NWPU-Crowd's test labels are not public (its server scores them), so the official validation
split both selects the checkpoint and is reported, as the papers' NWPU numbers.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper results: Table 2 of the paper, by split and scene level (docs/methods/autoscale.md).
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False.
"""

from configs import autoscale_common, common


def get_config(variant: str = ""):
    config = autoscale_common.autoscale_config("localization", "nwpu")
    del config.evals["test"]  # Unlabelled: scored by the NWPU server only.
    return autoscale_common.make_tiny(config) if common.is_tiny(variant) else config
