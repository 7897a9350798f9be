"""DKPNet jointly on ShanghaiTech part A + part B (2-joint, one model, tested on each).

Stage I (VA) and the baselines JT, SE: variants :va (default), :jt, :se; :tiny.

  python train.py --config=configs/dkpnet_va_shanghaitech.py --config.model.pretrained=<hrnet.pth>

Settings: configs/dkpnet_common.py (the paper's 3-joint and 4-joint settings; C = 2 domains here,
InVA's clusters are not run on this pair).

Variant "cpu" (with :va or :jt, the claim: VA against joint training at the same steps): the
recipe of a 2-core CPU, about 45 minutes (build `shanghaitech/part_a_512` and `part_b_512`):
  python train.py --config=configs/dkpnet_va_shanghaitech.py:va,cpu --workdir=workdirs/dkp_va_cpu
Differences from the paper's recipe:
  - backbone: no HRNet-W40 weights are available here: trained from scratch (model.pretrained
    ""), and so at half width (model.width 0.5: W20's channels, a quarter of the computation);
  - data: part A and part B with long sides at most 512 px (part B halved) for training and
    evaluation (shanghaitech/part_{a,b}_512); no up-scaling to a 416 short side; the 15 x 15
    kernel of sigma 4 halved to sigma 2 (11 x 11); 256 x 256 crops (400 in the paper) at batch 4
    (32);
  - optimizer: Adam 1e-4 constant (the paper: 5e-5 / 2.5 every 250 epochs; from scratch and a
    few hundred steps want a larger rate);
  - schedule: CPU_STEPS steps instead of 450 epochs, 2 validations on the held-out images of
    each part (30 + 40), selection on the mean of their MAEs;
  - the density head initialised "small" (model.head_init: N(0, 0.01), the output conv at zero)
    instead of flax's default, which from scratch starts every 256 x 256 crop at thousands of
    people: the first real run (default head) spent its first 200 steps undoing that and ended
    over-counting 2.3x (A) and 3.2x (B); on one fixed batch (benchmarks/fit_one_batch.py, 60
    steps) the default head's count error went 2764 -> 739, the small head's 103 -> 20;
  - evaluation with BatchNorm statistics re-estimated on 40 training batches (160 crops) before
    each evaluation (eval.recompute_batch_stats, crowdjax.precise_bn) instead of the running
    averages, which 600 steps at 1e-4 leave stale: on the VA run's step-300 checkpoint
    (weights unchanged) validation MAE went 228.8 -> 78.3 on part B, 616.8 -> 319.9 on part A;
  - everything else (VA, the regulariser, colour jitter, flips) as configs/dkpnet_common.py.
"""

from configs import dkpnet_common

# Measured on the 2-core machine (other work running): at full width 9.8 CPU seconds a step
# (4 x 256^2 crops; load average 17) and 15 minutes of wall time to start and compile; at the
# recipe's half width 3.2 CPU seconds a step (2.8 s of wall time at load average 4) and 1.5
# minutes to start. Evaluation about 0.8 CPU seconds an image (not measured). Two runs at a
# time take about their CPU seconds in wall time: 3 minutes to start, 600 steps 32 minutes,
# 2 x 70 validation and 182 + 316 test images 9 minutes: about 44 minutes.
CPU_STEPS = 600


def _config(variant: str):
    return dkpnet_common.dkpnet_config(
        ("sha", "shb"),
        variant=variant,
        clusters=2,
        sub_centers=2,
        stage1="workdirs/dkpnet_va_shanghaitech",
    )


def get_config(variant: str = ""):
    return dkpnet_common.get_variant(
        _config,
        variant,
        allowed=dkpnet_common.STAGE_ONE,
        cpu=lambda config: dkpnet_common.make_cpu(config, num_steps=CPU_STEPS),
    )
