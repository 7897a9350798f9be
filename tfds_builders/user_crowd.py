"""`user_crowd`: your own annotated images, built from a folder, under a name you choose.

  python -m crowdjax.data.build user_crowd/<name> --manual_dir=<folder>
  python train.py --config=configs/uot_shb.py --config.data.name=user_crowd/<name>

`<name>` (letters, digits, `_`, `-`, `.`) names the prepared data set
(`$CROWDJAX_DATA_DIR/user_crowd/<name>/`); several folders are several names. Once built, every
config reads it by that name; the options it was built with are stored with it (metadata
"recipe", "source"), and building the same name again from a changed folder is an error (delete
the prepared directory, or choose a new name), so a run never reads stale data by mistake.

Folder layout (`<folder>`):

  images/                  the images (.jpg .jpeg .png .bmp .tif .tiff .webp); or the images
                           directly in <folder>. Subfolders are not read (images in one are an
                           error). The image's file name is its id (e.g. "IMG_1.jpg").
  point annotations, in ONE of these forms (accepted shapes: `user_crowd_annotations`):
    annotations.json       {"IMG_1.jpg": [[x, y], ...], "IMG_2.jpg": [], ...}
    annotations.csv        header image,x,y; one row per head; "IMG_2.jpg,," = no people
    annotations/<stem>.json | <stem>.csv | GT_<stem>.mat     one file per image (a folder
                           `ground-truth/` like ShanghaiTech's, or next to the images, also works;
                           annotation files in two of these places are an error)
  train.txt, test.txt      optional split lists, one image file name per line (# comments);
  val.txt                  optional validation list (or validation.txt)
  crowd.json               optional options (below)

Points are (x, y) pixels of the image, 0-based: pixel (row r, column c) covers [c, c+1) x [r, r+1)
(as every builder here), of the picture as viewers show it: an image with an EXIF orientation
(phone photos) is turned upright as predict.py reads it (`CrowdBuilder.APPLY_EXIF`), annotated and
stored upright. An image with no people has an empty annotation; every image needs one, and every
annotation needs its image.

Splits: with list files, train.txt and test.txt are required and every image must be listed in
exactly one list. Without them, `crowd.json`'s "split" draws them: {"test": 0.2, "validation":
0.0, "seed": 0} (the defaults): round(fraction * N) images each (at least one test image), from a
permutation of the naturally sorted file names seeded by `seed`, so the split depends only on the
file names and the seed (adding images re-draws it; list files freeze it). Without a validation
split, the engine holds `data.holdout_fraction` of train out for model selection, as for
ShanghaiTech.

`crowd.json` options (all optional; an unknown key is an error):
  sigma (4.0), adaptive (false), beta (0.3), k (3), distance_edges: the ground-truth recipe of
    `CrowdConfig` (fixed Gaussian of `sigma` px, or geometry-adaptive kernels);
  max_long_side, min_short_side, max_box: the resize rule (points scaled with the image);
  out_of_image ("clip"): points outside the image are "clip"ped, "drop"ped (both logged, the
    build's closing line names the images, counted in the metadata per split and per image) or an
    "error";
  split: the split fractions above (refused together with list files);
  description: free text, stored in the metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from crowdjax.data import io
from tfds_builders import _files
from tfds_builders import user_crowd_annotations as ann
from tfds_builders.base import CrowdBuilder, CrowdConfig, require_nonempty

BUILDER = "user_crowd"
MANIFEST = "crowd.json"
ALL_JSON = "annotations.json"
ALL_CSV = "annotations.csv"
IMAGE_DIR = "images"
ANNOTATION_DIRS = ("annotations", "ground-truth")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_LISTS = {
    "train": ("train.txt",),
    "validation": ("val.txt", "validation.txt"),
    "test": ("test.txt",),
}
RECIPE_KEYS = (
    "sigma",
    "adaptive",
    "beta",
    "k",
    "distance_edges",
    "max_long_side",
    "min_short_side",
    "max_box",
    "out_of_image",
)
SPLIT_DEFAULTS = {"test": 0.2, "validation": 0.0, "seed": 0}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One image's points: float64 [N, 2] (x, y), the file (and key) they came from, and the
    count the file declares (None when it declares none)."""

    points: np.ndarray
    source: str
    declared: int | None = None


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a folder holds, checked: images, their annotations and the splits.

    Attributes:
      root: the folder.
      manifest: the options of `crowd.json` ({} without one).
      image_dir: the folder of the images.
      annotations: image file name -> its `Annotation`.
      annotation_format: how the annotations were read (for the metadata).
      splits: split -> image file names (natural order).
      split_rule: how the splits were made (for the metadata).
      inputs: every file read besides the images (fingerprint).
    """

    root: str
    manifest: dict
    image_dir: str
    annotations: dict[str, Annotation]
    annotation_format: str
    splits: dict[str, tuple[str, ...]]
    split_rule: str
    inputs: tuple[str, ...]


def check_name(name: str) -> str:
    """The data set's name (the builder config's), or a ValueError saying what a name may be."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"user_crowd needs a data set name: user_crowd/<name>, with <name> of letters, digits, "
            f"'_', '-' and '.' (e.g. user_crowd/my_street), got {name!r}"
        )
    return name


# ------------------------------------------------------------------------------------ options


def read_manifest(root: str) -> dict:
    """`crowd.json`'s options ({} when there is none), checked for unknown keys."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return {}
    payload = io.load_json(path)
    if not isinstance(payload, dict):
        raise io.DataError(f"{path}: expected a JSON object of options")
    allowed = (*RECIPE_KEYS, "split", "description")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise io.DataError(f"{path}: unknown option(s) {unknown}; options: {list(allowed)}")
    split = payload.get("split", {})
    if not isinstance(split, dict) or set(split) - set(SPLIT_DEFAULTS):
        raise io.DataError(f"{path}: 'split' must be an object with keys {list(SPLIT_DEFAULTS)}")
    return payload


def _valid(value: Any, kind: str) -> bool:
    if kind.endswith("?") and value is None:
        return True
    kind = kind.rstrip("?")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "positive":
        return (is_int or isinstance(value, float)) and value > 0
    if kind == "count":
        return is_int and value >= 1
    if kind == "counts":
        return isinstance(value, tuple) and all(_valid(v, "count") for v in value)
    if kind == "edges":  # integers increasing from 0
        ints = isinstance(value, tuple) and len(value) > 0 and all(_valid(v, "int") for v in value)
        return (
            ints and value[0] == 0 and all(value[i] < value[i + 1] for i in range(len(value) - 1))
        )
    if kind == "int":
        return is_int
    return isinstance(value, {"bool": bool, "str": str}[kind])


# The type of each recipe option ("?": may be null); CrowdConfig checks the values further.
_RECIPE_TYPES = {
    "sigma": "positive",
    "adaptive": "bool",
    "beta": "positive",
    "k": "count",
    "distance_edges": "edges",
    "max_long_side": "count?",
    "min_short_side": "count?",
    "max_box": "counts?",
    "out_of_image": "str",
}


def recipe(base: CrowdConfig, manifest: dict, *, where: str) -> CrowdConfig:
    """`base` with the ground-truth and resize options of a manifest (or of stored metadata)."""
    options = {k: manifest[k] for k in RECIPE_KEYS if k in manifest}
    for key in ("distance_edges", "max_box"):  # JSON lists -> the config's tuples
        if isinstance(options.get(key), list):
            options[key] = tuple(options[key])
    for key, value in options.items():
        if not _valid(value, _RECIPE_TYPES[key]):
            raise io.DataError(
                f"{where}: option {key!r} = {value!r} is not a {_RECIPE_TYPES[key]} value"
            )
    try:
        return dataclasses.replace(base, **options)
    except (TypeError, ValueError) as e:
        raise io.DataError(f"{where}: {e}") from e


def recipe_dict(config: CrowdConfig) -> dict[str, Any]:
    """The recipe fields of a config as JSON values (stored in the metadata)."""
    out = {k: getattr(config, k) for k in RECIPE_KEYS}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# ------------------------------------------------------------------------------- the folder


def list_images(directory: str) -> list[str]:
    """Image file names of `directory` (not recursive), natural order; hidden files ignored."""
    return sorted(
        (
            n
            for n in os.listdir(directory)
            if not n.startswith(".")
            and n.lower().endswith(IMAGE_SUFFIXES)
            and os.path.isfile(os.path.join(directory, n))
        ),
        key=io.natural_key,
    )


def find_images(root: str) -> tuple[str, list[str]]:
    """(image folder, image file names): `images/`, else the folder itself.

    Raises:
      DataError: no images, images both in the folder and in `images/`, or images in a subfolder
        (which would not be read).
    """
    root = _files.require_dir(root, what="user_crowd")
    sub = os.path.join(root, IMAGE_DIR)
    image_dir = sub if os.path.isdir(sub) else root
    if image_dir == sub and list_images(root):
        raise io.DataError(
            f"{root}: images both in the folder ({list_images(root)[0]}, ...) and in {sub}; "
            "keep them in one place"
        )
    for entry in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, entry)
        if os.path.isdir(path) and not entry.startswith(".") and list_images(path):
            raise io.DataError(
                f"{path}: a subfolder with images, which are not read; move them into "
                f"{image_dir} (file names must stay unique)"
            )
    images = list_images(image_dir)
    known = (*IMAGE_SUFFIXES, *ann.PER_IMAGE_SUFFIXES, ".txt")
    other = [
        n
        for n in sorted(os.listdir(image_dir))
        if not n.startswith(".")
        and os.path.isfile(os.path.join(image_dir, n))
        and not n.lower().endswith(known)
    ]
    if other:  # e.g. .gif or .heic images: not read, said so
        logging.warning(
            "%s: %d file(s) that are neither images (%s) nor annotations are not read: %s",
            image_dir,
            len(other),
            ", ".join(IMAGE_SUFFIXES),
            ", ".join(other[:5]),
        )
    if not images:
        raise io.DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return image_dir, images


def read_annotations(root: str, image_dir: str, images: list[str]):
    """Every image's annotation: returns ({name: Annotation}, format description, files read).

    Raises:
      DataError: both annotation files, or one of them and per-image files; an image without
        its annotation, an annotation without its image, two annotation files of one image,
        two images sharing a stem (per-image files), or a malformed file.
    """
    single = [os.path.join(root, n) for n in (ALL_JSON, ALL_CSV)]
    single = [p for p in single if os.path.isfile(p)]
    # Per-image files may be in annotations/, ground-truth/, next to the images or in the folder;
    # in two of these places some would go unread, so that is an error.
    places = [
        os.path.join(root, d) for d in ANNOTATION_DIRS if os.path.isdir(os.path.join(root, d))
    ]
    places = list(dict.fromkeys([*places, image_dir, root]))
    found = {place: _annotation_files(place, root) for place in places}
    used = [place for place in places if found[place]]
    if len(used) > 1:
        raise io.DataError(
            f"{used[0]} and {used[1]}: annotation files in both ({found[used[0]][0]}, "
            f"{found[used[1]][0]}); keep them in one folder"
        )
    ann_dir = used[0] if used else places[0]
    per_image = found[ann_dir]
    if len(single) > 1:
        raise io.DataError(f"{root}: both {ALL_JSON} and {ALL_CSV}; keep one")
    if single and per_image:
        raise io.DataError(
            f"{single[0]}: and per-image annotation files in {ann_dir} (e.g. {per_image[0]}); "
            "keep one form"
        )
    if single:
        return _match_single(single[0], image_dir, images)
    return _match_per_image(ann_dir, image_dir, images, per_image)


def _annotation_files(place: str, root: str) -> list[str]:
    """Per-image annotation files (.json/.csv/.mat) of a folder; the folder's own files
    (crowd.json, annotations.json/.csv) are not."""
    reserved = {MANIFEST, ALL_JSON, ALL_CSV} if place == root else set()
    names = [
        n
        for n in os.listdir(place)
        if n.lower().endswith(ann.PER_IMAGE_SUFFIXES)
        and n not in reserved
        and not n.startswith(".")
        and os.path.isfile(os.path.join(place, n))
    ]
    return sorted(names, key=io.natural_key)


def _match_single(path: str, image_dir: str, images: list[str]):
    table = ann.read_json_all(path) if path.endswith(".json") else ann.read_csv_all(path)
    known = set(images)
    for key in table:
        if key not in known:
            raise io.DataError(f"{path}: annotation of {key!r}, but {image_dir} has no such image")
    missing = [n for n in images if n not in table]
    if missing:
        empty = "[]" if path.endswith(".json") else "a row with x and y empty"
        raise io.DataError(
            f"{path}: no annotation of image {os.path.join(image_dir, missing[0])} "
            f"({len(missing)} image(s) missing; an image without people needs {empty})"
        )
    out = {n: Annotation(table[n][0], f"{path} [{n!r}]", table[n][1]) for n in images}
    kind = "one JSON file" if path.endswith(".json") else "one CSV file"
    return out, f"{kind}: {os.path.basename(path)}", (path,)


def _match_per_image(ann_dir: str, image_dir: str, images: list[str], files: list[str]):
    by_stem: dict[str, str] = {}
    out, used, kinds = {}, set(), set()
    for name in images:
        stem = ann.stem(name)
        if stem in by_stem:
            raise io.DataError(
                f"{os.path.join(image_dir, name)}: shares the annotation stem {stem!r} with "
                f"{by_stem[stem]}; rename one"
            )
        by_stem[stem] = name
        found = [
            (kind, os.path.join(ann_dir, file_name(stem)))
            for kind, (file_name, _) in ann.PER_IMAGE.items()
            if os.path.isfile(os.path.join(ann_dir, file_name(stem)))
        ]
        if not found:
            expected = ", ".join(f(stem) for f, _ in ann.PER_IMAGE.values())
            raise io.DataError(
                f"{os.path.join(image_dir, name)}: no annotation file ({expected}) in {ann_dir}"
            )
        if len(found) > 1:
            raise io.DataError(
                f"{os.path.join(image_dir, name)}: several annotation files "
                f"({', '.join(p for _, p in found)}); keep one"
            )
        kind, path = found[0]
        points, declared = ann.PER_IMAGE[kind][1](path)
        out[name] = Annotation(points, path, declared)
        used.add(os.path.basename(path))
        kinds.add(kind)
    for file in files:
        if file not in used:
            raise io.DataError(
                f"{os.path.join(ann_dir, file)}: annotation file without its image in {image_dir}"
            )
    paths = tuple(a.source for a in out.values())
    return out, f"per-image files ({'/'.join(sorted(kinds))}) in {ann_dir}", paths


def assign_splits(root: str, image_dir: str, images: list[str], manifest: dict):
    """The splits: from list files, else drawn by the manifest's fractions (module doc).

    Returns ({split: names in natural order}, rule description, list files read).
    """
    lists = {}
    for split, names in SPLIT_LISTS.items():
        found = [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
        if len(found) > 1:
            raise io.DataError(f"{root}: both {' and '.join(found)}; keep one")
        if found:
            lists[split] = found[0]
    if not lists:
        return _draw_splits(root, images, manifest)
    if "split" in manifest:
        raise io.DataError(
            f"{os.path.join(root, MANIFEST)}: 'split' fractions and split lists "
            f"({', '.join(os.path.basename(p) for p in lists.values())}); keep one"
        )
    for split in ("train", "test"):
        if split not in lists:
            raise io.DataError(
                f"{root}: split lists {sorted(os.path.basename(p) for p in lists.values())} but no "
                f"{SPLIT_LISTS[split][0]} (train and test lists are required; val.txt is optional)"
            )
    known, seen, splits = set(images), {}, {}
    for split, path in lists.items():
        names = []
        for lineno, entry in _list_entries(path):
            name = _resolve_entry(entry, root, image_dir, known)
            where = f"{path}:{lineno}"
            if name is None:
                raise io.DataError(f"{where}: {entry!r} is not an image of {image_dir}")
            if name in seen:
                raise io.DataError(f"{where}: {name} is listed twice (also at {seen[name]})")
            seen[name] = where
            names.append(name)
        require_nonempty(names, what="images listed", where=path)
        splits[split] = tuple(sorted(names, key=io.natural_key))
    unlisted = [n for n in images if n not in seen]
    if unlisted:
        raise io.DataError(
            f"{os.path.join(image_dir, unlisted[0])}: in no split list "
            f"({', '.join(os.path.basename(p) for p in lists.values())}); {len(unlisted)} "
            "unlisted image(s). List every image, or delete the lists and draw the splits"
        )
    return (
        splits,
        "list files: " + ", ".join(os.path.basename(p) for p in lists.values()),
        tuple(lists.values()),
    )


def _list_entries(path: str) -> list[tuple[int, str]]:
    with open(io.require_file(path), encoding="utf-8-sig") as f:
        lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(f, 1)]
    return [(n, entry) for n, entry in lines if entry]


def _resolve_entry(entry: str, root: str, image_dir: str, known: set[str]) -> str | None:
    """A list entry as an image file name: the name itself, or a path (relative to the folder
    or absolute) of a file in the image folder."""
    if entry in known:
        return entry
    path = os.path.normpath(os.path.join(root, entry))
    if os.path.dirname(path) == os.path.normpath(image_dir) and os.path.basename(path) in known:
        return os.path.basename(path)
    return None


def split_sizes(n: int, test: float, validation: float) -> tuple[int, int]:
    """(test, validation) sizes of n images: round(fraction * n), at least 1 test image (and 1
    validation image when its fraction is > 0), at least 1 image left for training."""
    n_test = max(1, round(test * n))
    n_val = max(1, round(validation * n)) if validation > 0 else 0
    return n_test, n_val


def _draw_splits(root: str, images: list[str], manifest: dict):
    where = os.path.join(root, MANIFEST)
    options = {**SPLIT_DEFAULTS, **manifest.get("split", {})}
    test, validation, seed = options["test"], options["validation"], options["seed"]
    for key in ("test", "validation"):
        if isinstance(options[key], bool) or not isinstance(options[key], int | float):
            raise io.DataError(f"{where}: split.{key} must be a number, got {options[key]!r}")
    if not 0 < test < 1 or not 0 <= validation < 1 or test + validation >= 1:
        raise io.DataError(
            f"{where}: split fractions need 0 < test < 1, 0 <= validation < 1 and test + "
            f"validation < 1, got test {test}, validation {validation}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise io.DataError(f"{where}: split.seed must be a non-negative integer, got {seed!r}")
    n = len(images)
    n_test, n_val = split_sizes(n, test, validation)
    if n - n_test - n_val < 1:
        raise io.DataError(
            f"{root}: {n} image(s), too few for a test split of {test:g}"
            + (f" and a validation split of {validation:g}" if n_val else "")
            + " with images left for training"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "validation": order[n_test : n_test + n_val]}
    parts["train"] = order[n_test + n_val :]
    splits = {s: tuple(images[i] for i in sorted(idx)) for s, idx in parts.items() if len(idx)}
    rule = f"drawn: test {test:g}, validation {validation:g}, seed {seed} ({n} images)"
    return splits, rule, ()


def scan(root: str) -> Layout:
    """Reads and checks a folder (module doc); every problem is a DataError naming the file."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    manifest = read_manifest(root)
    image_dir, images = find_images(root)
    annotations, fmt, ann_files = read_annotations(root, image_dir, images)
    splits, rule, list_files = assign_splits(root, image_dir, images, manifest)
    manifest_file = (os.path.join(root, MANIFEST),) if manifest else ()
    inputs = tuple(ann_files) + list_files + manifest_file
    return Layout(root, manifest, image_dir, annotations, fmt, splits, rule, inputs)


def fingerprint(layout: Layout) -> str:
    """Hash of what a build reads: image names and sizes, the other input files' contents."""
    digest = hashlib.sha256()
    for split, names in sorted(layout.splits.items()):
        for name in names:
            size = os.path.getsize(os.path.join(layout.image_dir, name))
            digest.update(f"{split}/{name}:{size}\n".encode())
    for path in layout.inputs:
        digest.update(os.path.relpath(path, layout.root).encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ builder


class UserCrowd(CrowdBuilder):
    """A user's folder of annotated images (module doc); configs are data set names."""

    name = BUILDER
    OPEN_CONFIGS = True  # every name is a config (crowdjax.data.datasets.get_builder)
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Images turned upright by their EXIF orientation, as predict.py reads them.",
    }
    APPLY_EXIF = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Pass your folder as manual_dir and name the data set:
  python -m crowdjax.data.build user_crowd/<name> --manual_dir=<folder>
The folder holds images/ (or the images), annotations (annotations.json, annotations.csv, or
annotations/<stem>.json|.csv|GT_<stem>.mat), optional train.txt/val.txt/test.txt and crowd.json.
See tfds_builders/user_crowd.py and README "Your own data".
"""

    def __init__(self, **kwargs):
        self._recipe: CrowdConfig | None = None
        super().__init__(**kwargs)
        if self.is_prepared():  # Read back the recipe it was built with (pipeline kernels).
            stored = (self.info.metadata or {}).get("recipe")
            if stored:
                where = os.path.join(self.data_dir, "metadata.json")
                self._recipe = recipe(super().builder_config, stored, where=where)

    def _create_builder_config(self, builder_config, version):
        # Any name is a config: the data set's options come from its folder, not from code.
        if isinstance(builder_config, CrowdConfig):
            check_name(builder_config.name)
            return builder_config
        if isinstance(builder_config, str) or builder_config is None:
            return CrowdConfig(name=check_name(builder_config))
        raise TypeError(f"user_crowd config must be a name or a CrowdConfig, got {builder_config}")

    @property
    def builder_config(self) -> CrowdConfig:
        """The recipe the data set is (or is being) built with: the config given, updated by the
        folder's `crowd.json` (when building) or by the stored metadata (when prepared)."""
        recipe_ = getattr(self, "_recipe", None)
        return recipe_ if recipe_ is not None else super().builder_config

    def download_and_prepare(self, *, download_config=None, **kwargs):
        manual = getattr(download_config, "manual_dir", None)
        if manual and self.is_prepared():
            self._check_unchanged(os.fspath(manual))
        return super().download_and_prepare(download_config=download_config, **kwargs)

    def _check_unchanged(self, folder: str) -> None:
        """A prepared name built again: the folder must be the one it was built from, unchanged."""
        source = (self.info.metadata or {}).get("source", {})
        layout = scan(folder)
        now = fingerprint(layout)
        if source.get("fingerprint") != now or source.get("folder") != layout.root:
            raise io.DataError(
                f"{self.data_dir}: {self.name}/{self.builder_config.name} is already prepared from "
                f"{source.get('folder')!r}, and {layout.root} (its files or options) differs. "
                "Delete that directory to rebuild, or build under a new name"
            )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        layout = scan(os.fspath(dl_manager.manual_dir))
        where = os.path.join(layout.root, MANIFEST)
        self._recipe = recipe(super().builder_config, layout.manifest, where=where)
        metadata = self.info.metadata
        metadata["recipe"] = recipe_dict(self._recipe)
        metadata["source"] = {
            "folder": layout.root,
            "image_dir": layout.image_dir,
            "annotations": layout.annotation_format,
            "splits": layout.split_rule,
            "fingerprint": fingerprint(layout),
            "description": str(layout.manifest.get("description", "")),
        }
        return {split: self._generate_examples(layout, split) for split in layout.splits}

    def _generate_examples(self, layout: Layout, split: str):
        names = require_nonempty(list(layout.splits[split]), what="images", where=layout.root)
        yield from _files.ordered_map(lambda name: self._example(layout, split, name), names)

    def _example(self, layout: Layout, split: str, name: str):
        annotation = layout.annotations[name]
        points = annotation.points
        declared = len(points) if annotation.declared is None else annotation.declared
        _files.record_count_mismatch(self, split, annotation.source, declared, len(points))
        path = os.path.join(layout.image_dir, name)
        return self.make_example(
            split=split,
            image_id=name,
            image=_files.read_bytes(path),
            points=points,
            name=f"{path} (points: {annotation.source})",
        )
