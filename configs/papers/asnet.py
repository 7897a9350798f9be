"""ASNet: Zou et al., "Coarse to fine: domain adaptive crowd counting via adversarial scoring
network", ACM MM 2021.

Source -> target adaptation (`configs/asnet_<source>_to_<target>.py`), VGG16 generator from
ImageNet; variants :noadapt, :coarse, :fine (the full ASNet). Score levels: w1 image and w3
pixel (global discriminator D1), w2 patch and w4 patch-pixel (local discriminator D2).

Protocol (Sec 4): errors on the target's test split; no target label is read before it
(selection on the source's held-out images, a choice: the paper does not say how it selects).
"""

from crowdjax.paper_tables import Paper, Reported, Row, Table, mae_rmse


def _row(setting: str, variant: str, label: str, reported, *, name: str = "", overrides=()):
    return Row(
        name=name or f"asnet_{setting}_{variant}",
        label=label,
        config=f"configs/asnet_{setting}.py",
        variant=variant,
        overrides=tuple(overrides),
        reported=tuple(reported),
        weights="vgg16",
    )


def _game(values) -> tuple[Reported, ...]:
    return tuple(Reported("target_test", f"game{i}", v, f"GAME{i}") for i, v in enumerate(values))


def _adaptations(setting: str, numbers) -> tuple[Row, ...]:
    labels = {"noadapt": "NoAdapt", "coarse": "CoarseAdapt", "fine": "FineAdapt"}
    return tuple(_row(setting, v, labels[v], numbers[v]) for v in labels)


TABLE_1 = Table(
    number="1",
    title="ShanghaiTech Part A -> Part B",
    rows=_adaptations(
        "sha_to_shb",
        {
            "noadapt": mae_rmse("target_test", 27.28, 35.14, ""),
            "coarse": mae_rmse("target_test", 15.77, 24.92, ""),
            "fine": mae_rmse("target_test", 13.59, 23.15, ""),
        },
    ),
    protocol="SHB test split",
)
TABLE_2 = Table(
    number="2",
    title="UCSD -> Mall",
    rows=_adaptations(
        "ucsd_to_mall",
        {
            "noadapt": mae_rmse("target_test", 4.19, 5.03, ""),
            "coarse": mae_rmse("target_test", 3.47, 4.12, ""),
            "fine": mae_rmse("target_test", 2.76, 3.55, ""),
        },
    ),
    protocol="Mall test frames, inside the region of interest",
)
TABLE_3 = Table(
    number="3",
    title="ShanghaiTech Part A -> TRANCOS (GAME 0-3)",
    rows=_adaptations(
        "sha_to_trancos",
        {
            "noadapt": _game((13.78, 13.83, 15.32, 15.88)),
            "coarse": _game((7.21, 11.32, 14.42, 17.27)),
            "fine": _game((4.77, 8.39, 13.37, 15.12)),
        },
    ),
    protocol="TRANCOS test split, GAME inside each image's region of interest",
)

_SCORES = (("w1",), ("w1", "w2"), ("w1", "w2", "w3"))
_SCORE_NAMES = {"w1": "I", "w2": "P", "w3": "PI", "w4": "P-PI"}
TABLE_4 = Table(
    number="4",
    title="Components on ShanghaiTech Part A -> Part B (G-D, L-D; scores I, P, PI, P-PI)",
    rows=(
        _row("sha_to_shb", "noadapt", "NoAdapt", mae_rmse("target_test", 27.28, 35.14, "")),
        _row(
            "sha_to_shb",
            "coarse",
            "G-D",
            mae_rmse("target_test", 16.84, 27.37, ""),
            name="asnet_sha_to_shb_global_d",
            overrides=(("asnet.local_discriminator", False),),
        ),
        _row(
            "sha_to_shb",
            "coarse",
            "L-D",
            mae_rmse("target_test", 19.12, 30.02, ""),
            name="asnet_sha_to_shb_local_d",
            overrides=(("asnet.global_discriminator", False),),
        ),
        _row("sha_to_shb", "coarse", "G-D + L-D", mae_rmse("target_test", 15.77, 24.92, "")),
        *(
            _row(
                "sha_to_shb",
                "fine",
                "G-D + L-D + " + ", ".join(_SCORE_NAMES[s] for s in scores),
                mae_rmse("target_test", mae, rmse, ""),
                name="asnet_sha_to_shb_" + "".join(scores),
                overrides=(("asnet.scores", scores),),
            )
            for scores, mae, rmse in zip(
                _SCORES, (14.76, 14.58, 14.01), (24.18, 24.15, 24.02), strict=True
            )
        ),
        _row("sha_to_shb", "fine", "all (FineAdapt)", mae_rmse("target_test", 13.59, 23.15, "")),
    ),
)
TABLE_5 = Table(
    number="5",
    title="Global-related against local-related modules (Part A -> Part B)",
    rows=(
        _row("sha_to_shb", "noadapt", "NoAdapt", mae_rmse("target_test", 27.28, 35.14, "")),
        _row(
            "sha_to_shb",
            "fine",
            "Global-related modules",
            mae_rmse("target_test", 14.89, 24.36, ""),
            name="asnet_sha_to_shb_global",
            overrides=(("asnet.local_discriminator", False), ("asnet.scores", ("w1", "w3"))),
        ),
        _row(
            "sha_to_shb",
            "fine",
            "Local-related modules",
            mae_rmse("target_test", 15.13, 24.48, ""),
            name="asnet_sha_to_shb_local",
            overrides=(("asnet.global_discriminator", False), ("asnet.scores", ("w2", "w4"))),
        ),
        _row(
            "sha_to_shb",
            "fine",
            "FineAdapt (full model)",
            mae_rmse("target_test", 13.59, 23.15, ""),
        ),
    ),
)
TABLE_6 = Table(
    number="6",
    title="GCC -> ShanghaiTech Part B (supplementary)",
    rows=(_row("gcc_to_shb", "fine", "ASNet", mae_rmse("target_test", 14.6, 22.6, "")),),
    protocol="SHB test split; GCC's random split",
)
TABLE_7 = Table(
    number="7",
    title="The residual mechanism (1 + W) of Eq. 8 (Part A -> Part B, supplementary)",
    rows=(
        _row(
            "sha_to_shb",
            "fine",
            "ASNet w/o residual mechanism",
            mae_rmse("target_test", 14.67, 24.22, ""),
            name="asnet_sha_to_shb_noresidual",
            overrides=(("asnet.residual", False),),
        ),
        _row(
            "sha_to_shb",
            "fine",
            "ASNet w/ residual mechanism",
            mae_rmse("target_test", 13.59, 23.15, ""),
        ),
    ),
)

PAPER = Paper(
    key="asnet",
    title="Coarse to fine: domain adaptive crowd counting via adversarial scoring network "
    "(Zou et al., ACM MM 2021)",
    tables=(TABLE_1, TABLE_2, TABLE_3, TABLE_4, TABLE_5, TABLE_6, TABLE_7),
    left_out_tables=(
        ("8", "the generator's architecture, not results"),
        ("9", "the discriminators' architecture, not results"),
    ),
)
