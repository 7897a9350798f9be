"""AutoScale: Xu et al., "AutoScale: learning to scale for crowd counting", IJCV 2022.

Regression-based AutoScale (density maps, `configs/autoscale_reg_*.py`) and localization-based
AutoScale* (distance-label maps with the DCE loss, `configs/autoscale_loc_*.py`), both with L2S;
FPN / FPN* are the same networks without L2S (`model.use_l2s = False`). VGG16 from ImageNet.

Protocol (Sec 4, Table 1): the official splits; images with a long side above 2048 resized (QNRF,
JHU, NWPU); fixed Gaussian kernels per data set (SHA 4, SHB 8, QNRF 8, NWPU 6, JHU 8). The paper
does not say how the checkpoint is selected: crowdjax selects on the validation split (official,
else held out of train) and reads the test split once at the end. Localization counts are the
regional minima of the distance-label map (`eval.minima_max_class`, a choice:
docs/methods/autoscale.md).
"""

import dataclasses

from crowdjax.paper_tables import LeftOut, Paper, Reported, Row, Table, mae_rmse


def _row(head: str, dataset: str, reported, *, l2s: bool = True, loss: str = "dce") -> Row:
    """AutoScale (head "reg") or AutoScale* ("loc"); without L2S: FPN / FPN*."""
    overrides = () if l2s else (("model.use_l2s", False),)
    if loss != "dce":
        overrides += (("loss.classification", loss),)
    name = (
        f"autoscale_{head}_{dataset}"
        + ("" if l2s else "_fpn")
        + ("" if loss == "dce" else f"_{loss}")
    )
    star = "*" if head == "loc" else ""
    label = ("AutoScale" if l2s else "FPN") + star + ("" if loss == "dce" else f" {loss} loss")
    return Row(
        name=name,
        label=label,
        config=f"configs/autoscale_{head}_{dataset}.py",
        overrides=overrides,
        reported=tuple(reported),
        weights="vgg16",
    )


TABLE_4 = Table(
    number="4",
    title="MAE / MSE of regression-based and localization-based AutoScale on SHA, SHB, QNRF",
    rows=(
        _row("reg", "sha", mae_rmse("test", 60.5, 100.4, "ShanghaiTech Part A")),
        _row("reg", "shb", mae_rmse("test", 6.8, 11.3, "ShanghaiTech Part B")),
        _row("reg", "qnrf", mae_rmse("test", 87.5, 147.8, "UCF-QNRF")),
        _row("loc", "sha", mae_rmse("test", 65.8, 112.1, "ShanghaiTech Part A")),
        _row("loc", "shb", mae_rmse("test", 8.6, 13.9, "ShanghaiTech Part B")),
        _row("loc", "qnrf", mae_rmse("test", 104.4, 174.2, "UCF-QNRF")),
    ),
    left_out=(
        LeftOut(
            "FPN / FPN* (ours, without L2S)",
            "their cells are not legible in the text of the table; the runs are Table 12's "
            "FPN* rows (SHA) and `--config.model.use_l2s=False` of any row",
        ),
    ),
    protocol="test splits; selection not stated by the paper",
)

TABLE_5 = Table(
    number="5",
    title="Localization on ShanghaiTech Part A: P / R / F with sigma = KNN distance",
    rows=(
        _row(
            "loc",
            "sha",
            (
                Reported("test", "precision@knn", 0.835, "AutoScale* P (83.5%)"),
                Reported("test", "recall@knn", 0.805, "AutoScale* R (80.5%)"),
                Reported("test", "f@knn", 0.820, "AutoScale* F (82.0%)"),
            ),
        ),
        _row(
            "loc",
            "sha",
            (
                Reported("test", "precision@knn", 0.839, "FPN* P (83.9%)"),
                Reported("test", "recall@knn", 0.784, "FPN* R (78.4%)"),
                Reported("test", "f@knn", 0.811, "FPN* F (81.1%)"),
            ),
            l2s=False,
        ),
    ),
    protocol="a prediction matches a head within that head's KNN distance (k not given: crowdjax "
    "takes k = 3, `crowdjax.localization.knn_sigma`)",
)

TABLE_12 = Table(
    number="12",
    title="Counting by localization on ShanghaiTech Part A: losses of the distance-label map",
    rows=(
        _row("loc", "sha", mae_rmse("test", 82.3, 159.8, "FPN* CE loss"), l2s=False, loss="ce"),
        _row(
            "loc", "sha", mae_rmse("test", 79.3, 160.2, "FPN* Focal loss"), l2s=False, loss="focal"
        ),
        _row("loc", "sha", mae_rmse("test", 75.7, 150.4, "FPN* DCE loss"), l2s=False),
        _row("loc", "sha", mae_rmse("test", 71.5, 127.6, "AutoScale* CE loss"), loss="ce"),
        _row("loc", "sha", mae_rmse("test", 70.1, 122.9, "AutoScale* Focal loss"), loss="focal"),
        _row("loc", "sha", mae_rmse("test", 65.8, 112.1, "AutoScale* DCE loss")),
    ),
    left_out=(
        LeftOut(
            "FPN* on density maps, kernel 8 / 4 / 2 / 1",
            "counting by the peaks of a density map of the localization network: no such head",
        ),
        LeftOut("FPN* ordinal regression loss", "no ordinal loss in crowdjax"),
    ),
    protocol="SHA test split",
)

TABLE_14 = Table(
    number="14",
    title="Vehicle counting on TRANCOS: GAME(0-3) of FPN* with CE and DCE losses",
    rows=tuple(
        Row(
            name=f"autoscale_loc_trancos_fpn{'_ce' if loss == 'ce' else ''}",
            label=f"FPN* + {loss.upper()} Loss",
            config="configs/autoscale_loc_trancos.py",
            overrides=(("model.use_l2s", False),)
            + ((("loss.classification", "ce"),) if loss == "ce" else ()),
            reported=tuple(
                Reported("test", f"game{level}", value, f"GAME{level}")
                for level, value in enumerate(games)
            ),
            weights="vgg16",
            notes="TRANCOS with the heads' distance classes and sigma 10 (the paper gives "
            "none for vehicles): docs/methods/autoscale.md",
        )
        for loss, games in (("ce", (3.22, 5.66, 7.42, 10.55)), ("dce", (2.88, 4.97, 6.64, 9.73)))
    ),
    protocol="TRANCOS test split, GAME inside the region of interest",
)

# NWPU-Crowd's test labels are the official server's: `python -m crowdjax.benchmark_files`
# writes the files it scores; crowdjax cannot compute these numbers itself.
NWPU_SERVER = "nwpu_test_server"


def _nwpu_test(mae, rmse, scene, luminance) -> tuple[Reported, ...]:
    """Table 2's test columns: overall, scene level (average, S0..S4), luminance (avg, L0..L2)."""
    scene_avg, scenes = scene
    luminance_avg, luminances = luminance
    return (
        *(
            Reported("test", r.metric, r.value, f"Test {r.column}", NWPU_SERVER)
            for r in mae_rmse("test", mae, rmse, "Overall")
        ),
        Reported("test", "scene_level_avg_mae", scene_avg, "Test Scene Level Avg.", NWPU_SERVER),
        *(
            Reported("test", f"per_category.scene_level.S{i}.mae", v, f"Test S{i}", NWPU_SERVER)
            for i, v in enumerate(scenes)
        ),
        Reported("test", "luminance_avg_mae", luminance_avg, "Test Luminance Avg.", NWPU_SERVER),
        *(
            Reported("test", f"per_category.luminance.L{i}.mae", v, f"Test L{i}", NWPU_SERVER)
            for i, v in enumerate(luminances)
        ),
    )


TABLE_2 = Table(
    number="2",
    title="NWPU-Crowd: val MAE / MSE; test overall, per scene level and per luminance (MAE)",
    rows=(
        _row(
            "reg",
            "nwpu",
            (
                *mae_rmse("val", 70.3, 364.5, "Val"),
                *_nwpu_test(
                    108.3,
                    469.1,
                    (691.9, (163.2, 13.8, 39.8, 247.7, 2995.0)),
                    (111.5, (261.2, 105.3, 80.4)),
                ),
            ),
            l2s=False,
        ),
        _row(
            "reg",
            "nwpu",
            (
                *mae_rmse("val", 68.8, 356.9, "Val"),
                *_nwpu_test(
                    94.1,
                    388.2,
                    (608.2, (81.4, 11.3, 38.1, 226.0, 2683.7)),
                    (94.3, (220.9, 93.4, 65.5)),
                ),
            ),
        ),
        _row(
            "loc",
            "nwpu",
            (
                *mae_rmse("val", 111.6, 605.3, "Val"),
                *_nwpu_test(
                    143.2,
                    603.2,
                    (1074.0, (43.8, 13.4, 47.0, 360.2, 4905.5)),
                    (147.3, (345.4, 139.7, 105.0)),
                ),
            ),
            l2s=False,
        ),
        _row(
            "loc",
            "nwpu",
            (
                *mae_rmse("val", 97.3, 571.2, "Val"),
                *_nwpu_test(
                    123.9,
                    515.5,
                    (871.2, (42.3, 18.8, 46.1, 301.7, 3947.0)),
                    (127.1, (301.3, 122.2, 86.0)),
                ),
            ),
        ),
    ),
    protocol="NWPU-Crowd val split (500 images; it also selects the checkpoint, as the configs "
    "say: the paper does not state its selection) and test split (1500 images, labels held by "
    "the official server). The test columns were matched to the rows by the paper's text "
    "(AutoScale improves BL's 105.4 / 454.2 by 11.3 / 66.0)",
)

# JHU-Crowd++ columns of Table 3 (`crowdjax.submissions.jhu_category_table`).
_JHU_LEVELS = ("low", "medium", "high")


def _jhu(split_eval: str, split: str, cells) -> tuple[Reported, ...]:
    """One split of Table 3: (MAE, MSE) of Low, Medium, High, then Overall."""
    *levels, (mae, rmse) = cells
    return (
        *(
            Reported(split_eval, f"jhu_category.{level}.{m}", v, f"{split} {level.title()} {c}")
            for level, (level_mae, level_rmse) in zip(_JHU_LEVELS, levels, strict=True)
            for m, v, c in (("mae", level_mae, "MAE"), ("rmse", level_rmse, "MSE"))
        ),
        *mae_rmse(split_eval, mae, rmse, f"{split} Overall"),
    )


TABLE_3 = Table(
    number="3",
    title="JHU-Crowd++: val and test MAE / MSE per density level (Low, Medium, High) and overall",
    rows=(
        _row(
            "reg",
            "jhu",
            (
                *_jhu("val", "Val", ((11.9, 22.3), (46.7, 75.8), (303.5, 629.2), (67.5, 230.5))),
                *_jhu("test", "Test", ((15.9, 54.1), (45.4, 94.1), (342.4, 762.4), (81.5, 303.9))),
            ),
            l2s=False,
        ),
        _row(
            "reg",
            "jhu",
            (
                *_jhu("val", "Val", ((15.9, 28.8), (44.0, 86.1), (272.6, 580.0), (63.4, 216.0))),
                *_jhu("test", "Test", ((22.2, 70.6), (42.5, 93.0), (307.4, 729.5), (76.4, 292.7))),
            ),
        ),
        _row(
            "loc",
            "jhu",
            (
                *_jhu("val", "Val", ((10.2, 14.8), (35.4, 55.8), (459.7, 894.5), (80.4, 320.2))),
                *_jhu(
                    "test",
                    "Test",
                    ((13.0, 28.4), (33.1, 56.3), (526.0, 1090.4), (100.9, 423.0)),
                ),
            ),
            l2s=False,
        ),
        _row(
            "loc",
            "jhu",
            (
                *_jhu("val", "Val", ((10.0, 15.3), (33.5, 54.2), (351.7, 720.3), (65.7, 258.9))),
                *_jhu("test", "Test", ((13.2, 30.2), (32.3, 52.8), (425.6, 916.5), (85.6, 356.1))),
            ),
        ),
    ),
    left_out=(
        LeftOut(
            "FPN / AutoScale with a VGG19 backbone",
            "the AutoScale configs build VGG16 only (no backbone option)",
        ),
    ),
    protocol="JHU-Crowd++ val (500) and test (1600) splits; levels 0-50, 51-500, > 500 heads. "
    "The extracted text lists the val block and the test block apart; they were told apart by "
    "the paper's text (VGG19 AutoScale's 65.9 / 264.8 improves BL's 75.0 / 299.9 by 9.1 / 35.1: "
    "the test split)",
)

TABLE_6 = Table(
    number="6",
    title="Localization on UCF-QNRF: average precision, recall and F over thresholds 1..100 px",
    rows=(
        _row(
            "loc",
            "qnrf",
            (
                Reported("test", "ap", 0.8140, "FPN* Av.Precision (81.40%)"),
                Reported("test", "ar", 0.7403, "FPN* Av.Recall (74.03%)"),
                Reported("test", "af", 0.7754, "FPN* F-measure (77.54%)"),
            ),
            l2s=False,
        ),
        _row(
            "loc",
            "qnrf",
            (
                Reported("test", "ap", 0.8131, "AutoScale* Av.Precision (81.31%)"),
                Reported("test", "ar", 0.7575, "AutoScale* Av.Recall (75.75%)"),
                Reported("test", "af", 0.7843, "AutoScale* F-measure (78.43%)"),
            ),
        ),
    ),
    protocol="UCF-QNRF test split; heads are the regional minima of the distance-label map "
    "(`eval.minima_max_class`), matched one to one within each threshold "
    "(`crowdjax.localization.DEFAULT_THRESHOLDS`); F is that of the averaged P and R",
)


def _nwpu_localization(split_eval, column, sigma_l, sigma_s, counts, needs="") -> tuple:
    """Table 7's cells of one split: F / P / R (%) at sigma_l and sigma_s, then MAE / MSE."""
    out = []
    for name, fpr in (("sigma_l", sigma_l), ("sigma_s", sigma_s)):
        for metric, value in zip(("f", "precision", "recall"), fpr, strict=True):
            label = f"{column} {name} {metric[0].upper()} ({value}%)"
            out.append(Reported(split_eval, f"{metric}@{name}", value / 100, label, needs))
    out.extend(
        Reported(r.eval, r.metric, r.value, r.column, needs)
        for r in mae_rmse(split_eval, *counts, column)
    )
    return tuple(out)


TABLE_7 = Table(
    number="7",
    title="Localization on NWPU-Crowd: F / P / R at sigma_l and sigma_s, and MAE / MSE",
    rows=(
        _row(
            "loc",
            "nwpu",
            (
                *_nwpu_localization(
                    "val", "Val", (64.4, 60.0, 69.4), (57.2, 61.7, 53.3), (111.6, 605.3)
                ),
                *_nwpu_localization(
                    "test",
                    "Test",
                    (58.9, 65.9, 53.3),
                    (51.0, 57.1, 46.1),
                    (143.2, 603.2),
                    NWPU_SERVER,
                ),
            ),
            l2s=False,
        ),
        _row(
            "loc",
            "nwpu",
            (
                *_nwpu_localization(
                    "val", "Val", (66.8, 70.1, 63.8), (60.0, 62.9, 57.3), (97.3, 571.2)
                ),
                *_nwpu_localization(
                    "test",
                    "Test",
                    (62.0, 67.3, 57.4),
                    (54.4, 59.1, 50.4),
                    (123.9, 515.5),
                    NWPU_SERVER,
                ),
            ),
        ),
    ),
    protocol="NWPU-Crowd val split (boxes of the release: sigma_s = min(w, h) / 2, sigma_l = "
    "sqrt(w^2 + h^2) / 2, `crowdjax.nwpu_localization`); test: the official server",
)

TABLE_10 = Table(
    number="10",
    title="Density measure of L2S (regression): ShanghaiTech Part A and JHU-Crowd++ test",
    rows=(
        _row("reg", "sha", mae_rmse("test", 66.1, 111.9, "FPN (baseline) Part A"), l2s=False),
        _row("reg", "jhu", mae_rmse("test", 81.5, 303.9, "FPN (baseline) JHU++(test)"), l2s=False),
        _row("reg", "sha", mae_rmse("test", 60.5, 100.4, "AutoScale (Average distance) Part A")),
        _row(
            "reg", "jhu", mae_rmse("test", 76.4, 292.7, "AutoScale (Average distance) JHU++(test)")
        ),
    ),
    left_out=(
        LeftOut(
            "AutoScale (Average people number)",
            "L2S measures density by the average distance only (the paper's choice); no config "
            "option measures it by the number of people",
        ),
    ),
    protocol="SHA and JHU-Crowd++ test splits (each data set one run)",
)

TABLE_11 = Table(
    number="11",
    title="Kernel setting during training (ShanghaiTech Part A): fixed kernels and distance "
    "ranges against the baselines",
    rows=(
        _row("reg", "sha", mae_rmse("test", 66.1, 111.9, "FPN (baseline)"), l2s=False),
        _row("reg", "sha", mae_rmse("test", 60.5, 100.4, "AutoScale Fixed / rescale")),
        _row("loc", "sha", mae_rmse("test", 75.7, 150.4, "FPN* (baseline)"), l2s=False),
        _row("loc", "sha", mae_rmse("test", 65.8, 112.1, "AutoScale* Fixed / rescale")),
    ),
    left_out=(
        LeftOut(
            "AutoScale / AutoScale* with the kernel or distance ranges multiplied (region "
            "rescaled) or divided (region kept) by the learned scale factor",
            "crowdjax keeps the kernel and the distance ranges fixed (the paper's choice); no "
            "config option scales them",
        ),
    ),
    protocol="SHA test split",
)


def _cross(head: str, source: str, cells, *, l2s: bool = True, notes: str = "") -> Row:
    """A Table 13 row: trained on `source`, tested on each target's test split."""
    reported = tuple(
        r
        for target, column, (mae, rmse) in cells
        for r in mae_rmse(f"{target}_test", mae, rmse, column)
    )
    return dataclasses.replace(_row(head, source, reported, l2s=l2s), notes=notes)


_A_TO_B_FPN = (
    "A->B of FPN read as the fifth of the column's five values (32.3 / 44.7): MCNN's, "
    "D-ConvNet's and RRSP's come first, AutoScale's 30.9 / 42.6 is fixed by the paper's text "
    "(RRSP 40.0 - 9.1), and BL's row has no A->B cell"
)

TABLE_13 = Table(
    number="13",
    title="Cross-data-set transfer: trained on one data set, tested on another's test split",
    rows=(
        _cross(
            "reg",
            "sha",
            (("shb", "A->B", (32.3, 44.7)), ("qnrf", "A->QNRF", (164.0, 285.3))),
            l2s=False,
            notes=_A_TO_B_FPN,
        ),
        _cross("reg", "sha", (("shb", "A->B", (30.9, 42.6)), ("qnrf", "A->QNRF", (138.1, 231.9)))),
        _cross("reg", "shb", (("sha", "B->A", (143.6, 229.2)),), l2s=False),
        _cross("reg", "shb", (("sha", "B->A", (130.8, 220.9)),)),
        _cross(
            "reg",
            "qnrf",
            (("sha", "QNRF->A", (73.0, 127.4)), ("shb", "QNRF->B", (13.2, 22.5))),
            l2s=False,
        ),
        _cross(
            "reg", "qnrf", (("sha", "QNRF->A", (69.6, 121.0)), ("shb", "QNRF->B", (12.0, 21.2)))
        ),
        _cross("reg", "jhu", (("sha", "JHU->A", (104.5, 182.2)),), l2s=False),
        _cross("reg", "jhu", (("sha", "JHU->A", (101.8, 186.2)),)),
        _cross("reg", "nwpu", (("sha", "NWPU->A", (81.6, 147.2)),), l2s=False),
        _cross("reg", "nwpu", (("sha", "NWPU->A", (78.2, 137.0)),)),
        _cross(
            "loc",
            "sha",
            (("shb", "A->B", (23.0, 40.9)), ("qnrf", "A->QNRF", (163.5, 301.6))),
            l2s=False,
        ),
        _cross("loc", "sha", (("shb", "A->B", (23.1, 39.0)), ("qnrf", "A->QNRF", (155.1, 284.2)))),
        _cross("loc", "shb", (("sha", "B->A", (133.6, 218.5)),), l2s=False),
        _cross("loc", "shb", (("sha", "B->A", (131.3, 210.3)),)),
        _cross(
            "loc",
            "qnrf",
            (("sha", "QNRF->A", (76.8, 155.5)), ("shb", "QNRF->B", (15.8, 29.0))),
            l2s=False,
        ),
        _cross(
            "loc", "qnrf", (("sha", "QNRF->A", (71.9, 129.9)), ("shb", "QNRF->B", (13.3, 22.2)))
        ),
        _cross("loc", "jhu", (("sha", "JHU->A", (125.0, 226.9)),), l2s=False),
        _cross("loc", "jhu", (("sha", "JHU->A", (100.1, 187.2)),)),
        _cross("loc", "nwpu", (("sha", "NWPU->A", (99.4, 183.1)),), l2s=False),
        _cross("loc", "nwpu", (("sha", "NWPU->A", (83.2, 151.4)),)),
    ),
    protocol="the target's whole test split (`config.evals.<target>_test`, "
    "configs/autoscale_common.py CROSS_DATASET), the checkpoint selected on the source's "
    "validation split. The extracted table lists the first columns apart from the rows; the "
    "cells were matched by the paper's text (AutoScale* improves LSC-CNN by 18.9 / 34.3 on "
    "B->A and 25.1 / 24.7 on QNRF->A; AutoScale improves RRSP by 9.1 / 25.9 on A->B) and, for "
    "the regression B->A cells, by their count: four MAEs and four MSEs, MCNN's, D-ConvNet's, "
    "then FPN's and AutoScale's (whose rows begin with their B->A MSE)",
)


PAPER = Paper(
    key="autoscale",
    title="AutoScale: learning to scale for crowd counting (Xu et al., IJCV 2022)",
    tables=(
        TABLE_2,
        TABLE_3,
        TABLE_4,
        TABLE_5,
        TABLE_6,
        TABLE_7,
        TABLE_10,
        TABLE_11,
        TABLE_12,
        TABLE_13,
        TABLE_14,
    ),
    left_out_tables=(
        ("1", "hyper-parameters, not results"),
        ("8", "errors on the extracted dense regions only: no such evaluation in crowdjax"),
        ("9", "L2S on other density regressors (CSRNet, BL, ...): not in crowdjax"),
        ("15", "at most one or two dense regions: L2S selects one region only"),
    ),
)
