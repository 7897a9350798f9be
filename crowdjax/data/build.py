"""Command line: prepare a data set, e.g.

python -m crowdjax.data.build shanghaitech/part_b --manual_dir=~/downloads/ShanghaiTech
python -m crowdjax.data.build synthetic_crowd/street
python -m crowdjax.data.build user_crowd/my_crowd --manual_dir=~/my_crowd   # your own images
"""

from __future__ import annotations

import argparse
import os

from crowdjax.data import datasets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "name", help="builder[/config], one of: " + ", ".join(datasets.BUILDER_MODULES)
    )
    parser.add_argument("--manual_dir", default=None, help="directory with the original release")
    parser.add_argument(
        "--data_dir", default=None, help="output root (default: $CROWDJAX_DATA_DIR)"
    )
    args = parser.parse_args(argv)
    manual = os.path.expanduser(args.manual_dir) if args.manual_dir else None
    builder = datasets.build(args.name, data_dir=args.data_dir, manual_dir=manual)
    for split, info in builder.info.splits.items():
        print(f"{args.name} {split}: {info.num_examples} examples")
    outside = builder.info.metadata.get("points_outside_image") if builder.info.metadata else None
    if outside:
        print(f"points outside the image ({builder.builder_config.out_of_image}): {outside}")
    print(f"prepared in {builder.data_dir}")


if __name__ == "__main__":
    main()
