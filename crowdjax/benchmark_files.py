"""NWPU-Crowd's test-server files from a trained checkpoint (formats: `crowdjax.submissions`).

The test annotations of NWPU-Crowd are not public, so its test split cannot be evaluated here;
the benchmark's server scores a counting file and a localization file instead:

  python -m crowdjax.benchmark_files --config=configs/uot_nwpu.py --workdir=workdirs/uot_nwpu

writes `<workdir>/nwpu_<split>_counting.txt` and, where there are heads (a localization method,
or `config.eval.localization` for a density method), `<workdir>/nwpu_<split>_localization.txt`
with the points at the release images' resolution. `--checkpoint` as eval.py ("best", "latest"
or a path), `--split` (default "test"), `--dataset` (default the first training data set).
"""

from __future__ import annotations

import os

import jax
from absl import flags

from crowdjax import checkpointing, cli, evaluation, sharding, submissions
from crowdjax.data import settings
from crowdjax.metric_writers import log
from crowdjax.run import Setup


def write_nwpu(
    config, workdir: str, *, checkpoint: str = "best", dataset: str = "", split: str = "test"
) -> dict[str, str]:
    """Predicts every image of the split and writes the NWPU test-server files.

    Returns:
      {"counting": path, "localization": path (where there are heads)}.

    Raises:
      ValueError: the data set stores no original image sizes (not NWPU-Crowd 1.2.0 or later)
        while heads are to be written, or an image name is not an NWPU id.
    """
    sharding.maybe_initialize_distributed(config)
    dataset = dataset or settings.dataset_names(config.data)[0]
    setup = Setup(config)
    named = checkpoint in ("best", "latest")
    variables, info = checkpointing.restore_variables(
        workdir if named else checkpoint,
        setup.abstract_variables(),
        prefer=checkpoint if named else "best",
        config=config,
    )
    log(f"predicting {dataset} {split} with the {info['kind']} checkpoint, step {info['step']}")
    predictions = evaluation.predict_split(setup, variables, dataset, split)
    paths = {"counting": os.path.join(workdir, f"nwpu_{split}_counting.txt")}
    lines = {"counting": submissions.nwpu_counting_lines(predictions)}
    if all(p["points"] is not None for p in predictions):
        missing = [p["image_id"] for p in predictions if p["original_size"] is None]
        if missing:
            raise ValueError(
                f"{dataset}: no original image sizes stored (e.g. {missing[0]}); rebuild "
                "nwpu_crowd (1.2.0 stores them) to write the localization file"
            )
        paths["localization"] = os.path.join(workdir, f"nwpu_{split}_localization.txt")
        lines["localization"] = submissions.nwpu_localization_lines(predictions)
    else:
        log("no heads (a density method without config.eval.localization): counting file only")
    if jax.process_index() == 0:
        for kind, path in paths.items():
            submissions.write_lines(path, lines[kind])
            log(f"wrote {path} ({len(lines[kind])} images)")
    return paths


def main(argv) -> None:
    del argv
    config, workdir = cli.config_and_workdir()
    write_nwpu(
        config,
        workdir,
        checkpoint=flags.FLAGS.checkpoint,
        dataset=flags.FLAGS.dataset or "",
        split=flags.FLAGS.split,
    )


if __name__ == "__main__":
    cli.define_config_and_workdir()
    flags.DEFINE_string("checkpoint", "best", '"best", "latest", or a checkpoint path.')
    flags.DEFINE_string("dataset", None, "Data set (default: the first training data set).")
    flags.DEFINE_string("split", "test", "Split to predict.")
    cli.run(main)
