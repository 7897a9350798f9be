"""Import ImageNet-pretrained HRNet weights (official or timm) into :class:`HRNetStage3`.

Files: ``.pth``/``.pt``/``.bin``/``.ckpt`` (read with torch, ``weights_only=True``; a nested
``{"state_dict": ...}`` / ``{"model_state_dict": ...}`` / ``{"model": ...}`` / ``{"net": ...}``
checkpoint and a key prefix such as ``module.`` are unwrapped), ``.safetensors`` and ``.npz``
(read with :func:`crowdjax.models.importers.read_state_dict`), all with PyTorch state-dict keys.

Layouts. The two sources name every parameter of the built parts (stem, layer1, transition1/2,
stage2/3) identically:

* "official": HRNet-Image-Classification ``cls_hrnet.HighResolutionNet`` (e.g.
  ``hrnetv2_w40_imagenet_pretrained.pth``): ``conv1``, ``bn1``, ``conv2``, ``bn2``,
  ``layer1.{b}.{conv1..3,bn1..3,downsample.{0,1}}``, ``transition1.0.{0,1}``,
  ``transition1.1.0.{0,1}``, ``transition2.2.0.{0,1}``,
  ``stage{s}.{m}.branches.{i}.{k}.{conv1,bn1,conv2,bn2}``,
  ``stage{s}.{m}.fuse_layers.{i}.{j}.{0,1}`` (j > i) / ``.{k}.{0,1}`` (j < i); then the parts
  not built here: ``transition3``, ``stage4``, ``incre_modules``, ``downsamp_modules``,
  ``final_layer``, ``classifier``.
* "timm": ``timm.models.hrnet.HighResolutionNet`` (``hrnet_w40``; the hub's
  ``model.safetensors``). It re-uses the official module attribute names (its
  ``nn.Identity`` in place of the official ``None`` entries of ``transition2`` and the fuse
  layers holds no parameters, so the indices agree) and timm's ResNet blocks have the same
  ``conv{n}``/``bn{n}``/``downsample`` names. Checked against ``timm.create_model("hrnet_w40")``
  (timm 1.0.31): same keys and shapes. Differences are confined to parts not built here: timm's
  ``features_only`` models have no ``downsamp_modules``/``final_layer``/``classifier`` (and none
  of ``incre_modules`` with ``feature_location=""``), and ``head_conv_bias=False`` configs drop
  the head conv biases.

:func:`detect_layout` therefore records provenance ("timm" for ``.safetensors`` files and head-less
``features_only`` dicts, else "official"); :func:`hrnet_torch_key` takes the layout so a future
difference has one place to go. Keys ignored: ``num_batches_tracked`` and everything outside the
built parts (the parts above, and any head of a downstream model such as DKPNet's
``redc_layer``/``aspp``/``last_layer``). Every parameter and running statistic of the model must
come from the file: a missing key, an extra key inside the built parts (another architecture) or
a shape mismatch raises a ValueError naming the file.

Conversions: conv ``weight`` OIHW -> ``kernel`` HWIO; BN ``weight``/``bias`` -> ``scale``/``bias``;
``running_mean``/``running_var`` -> batch_stats ``mean``/``var``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
from flax import traverse_util

from crowdjax.models import importers

LAYOUTS = ("official", "timm")
TORCH_EXTS = importers.TORCH_EXTS
FILE_EXTS = TORCH_EXTS + (".npz", ".safetensors")

# Top-level state-dict modules of the built parts; other top-level names are ignored.
BUILT_PARTS = (
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "layer1",
    "transition1",
    "transition2",
    "stage2",
    "stage3",
)
# Keys that must exist in any HRNet state dict (checked before mapping).
_MARKERS = ("conv1.weight", "layer1.0.conv1.weight", "stage2.0.branches.0.0.conv1.weight")
_ANCHOR = "layer1.0.conv1.weight"

_LEAVES = {
    "params": {"kernel": "weight", "scale": "weight", "bias": "bias"},
    "batch_stats": {"mean": "running_mean", "var": "running_var"},
}


def _ext(path) -> str:
    return os.path.splitext(str(path))[1].lower()


# ---------------------------------------------------------------------------------------------
# Reading.


def _find_state_dict(obj, path: str, depth: int = 0) -> Mapping:
    """The mapping holding HRNet keys in a torch checkpoint (possibly nested)."""
    if isinstance(obj, Mapping):
        if any(str(k).endswith(_ANCHOR) for k in obj):
            return obj
        if depth < 3:
            preferred = ("state_dict", "model_state_dict", "model", "net")
            others = [k for k in obj if k not in preferred]
            for key in (*preferred, *others):
                if isinstance(obj.get(key), Mapping):
                    try:
                        return _find_state_dict(obj[key], path, depth + 1)
                    except ValueError:
                        continue
    raise ValueError(f"{path}: no HRNet state dict found (no key ending in {_ANCHOR!r})")


def _strip_prefix(sd: Mapping, path: str) -> dict:
    """Removes a common prefix ("module.", "backbone.", ...) found before the HRNet keys."""
    anchors = [k for k in sd if k.endswith(_ANCHOR)]
    if not anchors:
        raise ValueError(f"{path}: not an HRNet state dict (no key ending in {_ANCHOR!r})")
    if len(anchors) > 1:
        raise ValueError(f"{path}: several HRNet backbones in one file: {anchors}")
    prefix = anchors[0][: -len(_ANCHOR)]
    if not prefix:
        return dict(sd)
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def load_hrnet_weights(path: str) -> dict[str, np.ndarray]:
    """Reads an HRNet state dict (see the module doc for the formats) as numpy arrays.

    Floating tensors become float32 arrays; a key prefix (``module.``) is removed.

    Raises:
      FileNotFoundError: no such file.
      ValueError: unknown extension, unreadable torch file, or no HRNet state dict in it.
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"HRNet weight file not found: {path}")
    ext = _ext(path)
    if ext in TORCH_EXTS:
        import torch

        obj = _find_state_dict(importers.load_torch(path), path)
        sd = {}
        for k, v in obj.items():
            if torch.is_tensor(v):
                v = v.detach().cpu()
                sd[str(k)] = (v.float() if v.is_floating_point() else v).numpy()
    elif ext in (".npz", ".safetensors"):
        sd = importers.read_state_dict(path)
    else:
        raise ValueError(
            f"{path}: unknown weight format {ext!r}; use one of {', '.join(FILE_EXTS)}"
        )
    return _strip_prefix(sd, path)


def detect_layout(state_dict: Mapping, path: str = "state dict") -> str:
    """ "official" or "timm" (see the module doc: the names of the built parts agree).

    Raises:
      ValueError: the dict is not an HRNet state dict (names the file and a missing key).
    """
    for key in _MARKERS:
        if key not in state_dict:
            raise ValueError(f"{path}: not an HRNet state dict (no {key!r})")
    if _ext(path) == ".safetensors":
        return "timm"
    if "classifier.weight" not in state_dict and "final_layer.0.weight" not in state_dict:
        return "timm"  # timm features_only (HighResolutionNetFeatures) state dicts
    return "official"


# ---------------------------------------------------------------------------------------------
# Names.


def _module_part(name: str) -> str:
    """One flax module name -> its dotted state-dict module path."""
    if m := re.fullmatch(r"stem_(conv|bn)([12])", name):
        return f"{m[1]}{m[2]}"
    if m := re.fullmatch(r"layer1_(\d+)", name):
        return f"layer1.{m[1]}"
    if m := re.fullmatch(r"transition(\d)_(\d+)", name):
        t, i = int(m[1]), int(m[2])
        # transition{t} follows a stage with t branches: existing branches are conv-bn-relu
        # Sequentials, a new branch is a Sequential of such Sequentials (one here).
        return f"transition{t}.{i}" + (".0" if i >= t else "")
    if m := re.fullmatch(r"stage(\d)_(\d+)", name):
        return f"stage{m[1]}.{m[2]}"
    if m := re.fullmatch(r"branch(\d+)_block(\d+)", name):
        return f"branches.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"fuse_(\d+)_(\d+)", name):
        return f"fuse_layers.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"down(\d+)", name):
        return m[1]
    if name in ("downsample_conv", "downsample_bn"):
        return "downsample." + ("0" if name.endswith("conv") else "1")
    if name in ("conv", "bn"):
        return "0" if name == "conv" else "1"
    if re.fullmatch(r"(conv|bn)\d", name):
        return name
    raise KeyError(f"no state-dict name for HRNet module {name!r}")


def hrnet_torch_key(path: Sequence[str], collection: str, source: str = "official") -> str:
    """State-dict key of one :class:`HRNetStage3` leaf.

    Args:
      path: the leaf's keys inside the HRNetStage3 subtree, e.g.
        ("stage3_1", "fuse_2_0", "down1", "bn", "scale").
      collection: "params" or "batch_stats".
      source: "official" or "timm" (identical names, see the module doc).

    Returns:
      e.g. "stage3.1.fuse_layers.2.0.1.1.weight".
    """
    if source not in LAYOUTS:
        raise ValueError(f"unknown HRNet layout {source!r}; valid: {LAYOUTS}")
    if collection not in _LEAVES:
        raise ValueError(f"unknown collection {collection!r}; valid: {tuple(_LEAVES)}")
    *modules, leaf = path
    if leaf not in _LEAVES[collection]:
        raise KeyError(f"no state-dict name for {collection} leaf {'/'.join(path)}")
    return ".".join([*(_module_part(m) for m in modules), _LEAVES[collection][leaf]])


# ---------------------------------------------------------------------------------------------
# Filling.


def _to_dict(tree):
    return {k: _to_dict(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _file_shape(leaf_name: str, model_shape: tuple) -> tuple:
    """The state-dict shape a model leaf needs (HWIO kernels are OIHW in the file)."""
    if leaf_name == "kernel":
        h, w, i, o = model_shape
        return (o, i, h, w)
    return tuple(model_shape)


def _convert(value: np.ndarray, leaf_name: str, leaf) -> np.ndarray:
    if leaf_name == "kernel":
        value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    return np.ascontiguousarray(np.asarray(value).astype(np.dtype(leaf.dtype)))


def fill_hrnet_variables(
    params, batch_stats, state_dict: Mapping, *, source: str, path: str = "state dict"
) -> tuple[dict, dict]:
    """Fills an :class:`HRNetStage3`'s params and batch_stats from a state dict.

    Args:
      params: the HRNetStage3 ``params`` subtree (leaves need ``.shape`` and ``.dtype``, e.g.
        from ``jax.eval_shape`` of ``init``).
      batch_stats: its ``batch_stats`` subtree.
      state_dict: key -> array, e.g. from :func:`load_hrnet_weights`.
      source: "official" or "timm" (:func:`detect_layout`).
      path: the file, for error messages.

    Returns:
      (params, batch_stats): new nested dicts of numpy arrays, each cast to its leaf's dtype.

    Raises:
      ValueError: keys of the model missing from the file (the first few are named), keys of the
        built parts in the file that the model lacks, or a shape mismatch (key, file shape, needed
        shape).
    """
    if source not in LAYOUTS:
        raise ValueError(f"unknown HRNet layout {source!r}; valid: {LAYOUTS}")
    trees = {"params": _to_dict(params), "batch_stats": _to_dict(batch_stats)}
    flat = {c: traverse_util.flatten_dict(t) for c, t in trees.items()}
    targets: dict[str, tuple[str, tuple]] = {}  # torch key -> (collection, flax path)
    for collection, leaves in flat.items():
        for leaf_path in leaves:
            key = hrnet_torch_key(leaf_path, collection, source)
            if key in targets:  # the name map must be one-to-one
                raise RuntimeError(f"{key} would fill both {targets[key]} and {leaf_path}")
            targets[key] = (collection, leaf_path)

    missing = [k for k in targets if k not in state_dict]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{path}: {len(missing)} HRNet keys of the model missing from the file "
            f"({source} layout): {shown}"
        )
    extra = [
        k
        for k in state_dict
        if k.split(".", 1)[0] in BUILT_PARTS
        and not k.endswith("num_batches_tracked")
        and k not in targets
    ]
    if extra:
        shown = ", ".join(sorted(extra)[:5]) + (", ..." if len(extra) > 5 else "")
        raise ValueError(
            f"{path}: {len(extra)} keys of the built HRNet parts that the model lacks (another "
            f"architecture: branch_channels/blocks/stage3_modules differ?): {shown}"
        )

    out = {c: {} for c in flat}
    for key, (collection, leaf_path) in targets.items():
        leaf = flat[collection][leaf_path]
        value = np.asarray(state_dict[key])
        want = _file_shape(leaf_path[-1], tuple(leaf.shape))
        if tuple(value.shape) != want:
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)} in the file but the model needs "
                f"{want} (its {collection} {'/'.join(leaf_path)} is {tuple(leaf.shape)})"
            )
        out[collection][leaf_path] = _convert(value, leaf_path[-1], leaf)
    for collection, leaves in flat.items():  # every leaf filled exactly once
        if set(out[collection]) != set(leaves):
            raise RuntimeError(f"{collection}: filled leaves differ from the model's")
    return (
        traverse_util.unflatten_dict(out["params"]),
        traverse_util.unflatten_dict(out["batch_stats"]),
    )


def _subtree(tree: Mapping, keys: tuple[str, ...], what: str):
    for k in keys:
        if not isinstance(tree, Mapping) or k not in tree:
            raise ValueError(f"no {what}/{'/'.join(keys)} in the variables (HRNet backbone)")
        tree = tree[k]
    return tree


def _replace(tree: dict, keys: tuple[str, ...], value) -> None:
    for k in keys[:-1]:
        tree = tree[k]
    tree[keys[-1]] = value


def hrnet_backbone_loader(make_model, *, prefix: str | Sequence[str] = "backbone"):
    """A `Method.load_pretrained` that fills the model's HRNetStage3 from an ImageNet file.

    Args:
      make_model: ``make_model(config)`` -> the model; a model with an ``input_convention``
        attribute other than "imagenet" is refused (HRNet weights expect ImageNet-normalised RGB).
      prefix: key (or keys) of the HRNetStage3 subtree in ``variables["params"]`` and
        ``variables["batch_stats"]``.

    Returns:
      ``load(variables, path, config) -> variables``: a new dict (plain nested dicts, host numpy
      leaves of the model's dtypes) with the backbone's params and batch_stats replaced; every
      other entry is kept as is.
    """
    keys = (prefix,) if isinstance(prefix, str) else tuple(prefix)

    def load(variables, path, config):
        convention = getattr(make_model(config), "input_convention", "imagenet")
        if convention != "imagenet":
            raise ValueError(
                f"{path}: HRNet ImageNet weights expect input convention 'imagenet' but the model "
                f"uses {convention!r}"
            )
        state_dict = load_hrnet_weights(path)
        source = detect_layout(state_dict, path)
        new = _to_dict(variables)
        params = _subtree(new.get("params"), keys, "params")
        stats = _subtree(new.get("batch_stats"), keys, "batch_stats")
        params, stats = fill_hrnet_variables(params, stats, state_dict, source=source, path=path)
        _replace(new["params"], keys, params)
        _replace(new["batch_stats"], keys, stats)
        return new

    return load
