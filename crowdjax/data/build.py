"""Command line: prepare a data set, e.g.

  python -m crowdjax.data.build shanghaitech/part_b --manual_dir=~/downloads/ShanghaiTech
  python -m crowdjax.data.build synthetic_crowd/street
  python -m crowdjax.data.build user_crowd/my_crowd --manual_dir=~/my_crowd   # your own images

Flags follow the convention of every crowdjax command (absl flags, `--flag=value`, run by
`absl.app`, as `crowdjax.cli` defines it for the engine's commands, which the data package does
not import); the data set is the one positional argument.
"""

from __future__ import annotations

import os

from absl import app, flags

from crowdjax.data import datasets


def define_flags() -> None:
    """--manual_dir and --data_dir (defined when run as a command, so importing defines none)."""
    flags.DEFINE_string("manual_dir", None, "Directory with the original release.")
    flags.DEFINE_string("data_dir", None, "Output root (default: $CROWDJAX_DATA_DIR).")


def build_and_report(name: str, *, manual_dir: str | None = None, data_dir: str | None = None):
    """Builds data set `name` and prints its splits, points outside images and where it went."""
    manual = os.path.expanduser(manual_dir) if manual_dir else None
    builder = datasets.build(name, data_dir=data_dir, manual_dir=manual)
    for split, info in builder.info.splits.items():
        print(f"{name} {split}: {info.num_examples} examples")
    outside = builder.info.metadata.get("points_outside_image") if builder.info.metadata else None
    if outside:
        print(f"points outside the image ({builder.builder_config.out_of_image}): {outside}")
    print(f"prepared in {builder.data_dir}")
    return builder


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError(
            f"give one data set (builder[/config]), got {argv[1:]}; one of: "
            + ", ".join(datasets.BUILDER_MODULES)
        )
    build_and_report(
        argv[1], manual_dir=flags.FLAGS["manual_dir"].value, data_dir=flags.FLAGS["data_dir"].value
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
