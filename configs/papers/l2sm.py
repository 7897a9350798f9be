"""L2SM: Xu et al., "Learn to scale: generating multipolar normalized density maps for crowd
counting", ICCV 2019.

SPN + L2SM (`configs/l2sm_*.py`), SPN alone (`model.use_l2sm = False`), VGG16 from ImageNet.

Protocol (Sec 4.1-4.2): the official splits; ground truth as CSRNet (geometry-adaptive kernels
for SHA, a fixed 15 px kernel for SHB); UCF-QNRF images above 1080p resized to fit
1920 x 1080 and split 2 x 2 (builder config `ucf_qnrf/l2sm`). The paper does not say how the
checkpoint is selected: crowdjax selects on images held out of the training split and reads the
test splits once at the end. Table 2's and 3's ablations are read as ShanghaiTech Part A (their
SPN row is Table 1's Part A SPN).
"""

from crowdjax.paper_tables import LeftOut, Paper, Row, Table, mae_rmse

UCF_CC_50 = LeftOut(
    "UCF_CC_50 (5-fold cross-validation)",
    "the mean over five folds is `python -m crowdjax.cross_validation "
    "--config=configs/l2sm_ucf_cc_50.py`, not one train.py run",
)
VGG16 = LeftOut("VGG16 (ours)", "a plain VGG16 regressor is not an L2SM config option")


def _row(dataset: str, reported, *, spn: bool = False, name: str = "", overrides=()) -> Row:
    overrides = ((("model.use_l2sm", False),) if spn else ()) + tuple(overrides)
    return Row(
        name=name or f"l2sm_{dataset}" + ("_spn" if spn else ""),
        label="SPN" if spn else "SPN+L2SM",
        config=f"configs/l2sm_{dataset}.py",
        overrides=overrides,
        reported=tuple(reported),
        weights="vgg16",
    )


def _ablation(label: str, reported, **fields) -> Row:
    """An SHA run with `fields` (l2sm.<field>) set."""
    parts = [f"{k}{v}" for k, v in fields.items()]
    return Row(
        name="l2sm_sha_" + "_".join(parts),
        label=label,
        config="configs/l2sm_sha.py",
        overrides=tuple((f"l2sm.{k}", v) for k, v in fields.items()),
        reported=tuple(reported),
        weights="vgg16",
    )


TABLE_1 = Table(
    number="1",
    title="MAE / MSE on ShanghaiTech A, B and UCF-QNRF",
    rows=(
        _row("sha", mae_rmse("test", 70.0, 106.3, "PartA"), spn=True),
        _row("sha", mae_rmse("test", 64.2, 98.4, "PartA")),
        _row("shb", mae_rmse("test", 9.1, 14.6, "Part B"), spn=True),
        _row("shb", mae_rmse("test", 7.2, 11.1, "Part B")),
        _row("qnrf", mae_rmse("test", 110.3, 184.6, "UCF-QNRF"), spn=True),
        _row("qnrf", mae_rmse("test", 104.7, 173.6, "UCF-QNRF")),
    ),
    left_out=(UCF_CC_50, VGG16),
    protocol="test splits",
)

_G5 = (
    (1, 67.2, 102.3, 68.9, 110.3),
    (2, 65.4, 100.7, 68.1, 107.3),
    (4, 67.1, 101.6, 69.2, 108.7),
    (5, 69.8, 104.5, 73.6, 113.5),
)

TABLE_2 = Table(
    number="2",
    title="Dense region groups G, centers C, and L2SM against S2AD (ShanghaiTech Part A)",
    rows=(
        _row("sha", mae_rmse("test", 70.0, 106.3, "SPN"), spn=True),
        _ablation(
            "L2SM (G=3, C=2)", mae_rmse("test", 65.1, 100.4, "L2SM (G=3) C=2"), groups=3, centers=2
        ),
        _ablation(
            "L2SM (G=4, C=2)", mae_rmse("test", 66.1, 103.5, "L2SM (G=4) C=2"), groups=4, centers=2
        ),
        *(
            _ablation(
                f"L2SM (G=5, C={c})", mae_rmse("test", mae, rmse, f"L2SM (G=5) C={c}"), centers=c
            )
            for c, mae, rmse, _, _ in _G5
        ),
        _row("sha", mae_rmse("test", 64.2, 98.4, "L2SM (G=5) C=3")),
        *(
            _ablation(
                f"S2AD (G=5, C={c})",
                mae_rmse("test", mae, rmse, f"S2AD (G=5) C={c}"),
                centers=c,
                scaling="average",
            )
            for c, _, _, mae, rmse in (*_G5, (3, 0, 0, 67.0, 105.4))
        ),
    ),
    protocol="SHA test split (the table names no data set; its SPN row is Table 1's Part A)",
)

TABLE_3 = Table(
    number="3",
    title="K x K image division with one center (ShanghaiTech Part A)",
    rows=tuple(
        _ablation(
            f"K={k}",
            mae_rmse("test", mae, rmse, f"{k}x{k}"),
            **({"regions": k} if k != 4 else {}),
            centers=1,
        )
        for k, mae, rmse in ((2, 68.0, 107.1), (4, 67.2, 106.3), (6, 67.9, 106.9), (8, 68.5, 109.1))
    ),
    protocol='SHA test split; C = 1 ("one center setting"), G = 5',
)

TABLE_4 = Table(
    number="4",
    title="Cross-data-set transfer (train on one, test on another)",
    rows=(
        _row(
            "sha",
            (
                *mae_rmse("shb_test", 23.8, 44.2, "PartA->PartB"),
                *mae_rmse("ucf_cc_50", 368.3, 588.4, "PartA->UCF CC 50"),
                *mae_rmse("qnrf_test", 236.3, 428.4, "PartA->UCF-QNRF"),
            ),
            spn=True,
        ),
        _row(
            "sha",
            (
                *mae_rmse("shb_test", 21.2, 38.7, "PartA->PartB"),
                *mae_rmse("ucf_cc_50", 332.4, 425.0, "PartA->UCF CC 50"),
                *mae_rmse("qnrf_test", 227.2, 405.2, "PartA->UCF-QNRF"),
            ),
        ),
        _row("shb", mae_rmse("sha_test", 131.2, 219.3, "PartB->PartA"), spn=True),
        _row("shb", mae_rmse("sha_test", 126.8, 203.9, "PartB->PartA")),
        _row("qnrf", mae_rmse("sha_test", 87.9, 126.3, "UCF-QNRF->PartA"), spn=True),
        _row("qnrf", mae_rmse("sha_test", 73.4, 119.4, "UCF-QNRF->PartA")),
    ),
    protocol="the whole target data set's test split (UCF_CC_50: all 50 images)",
)

PAPER = Paper(
    key="l2sm",
    title="Learn to scale: generating multipolar normalized density maps for crowd counting "
    "(Xu et al., ICCV 2019)",
    tables=(TABLE_1, TABLE_2, TABLE_3, TABLE_4),
)
