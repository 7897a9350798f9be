"""Published PyTorch checkpoints of the reference codebases, imported into crowdjax variables.

A file is read once (torch files through :func:`crowdjax.models.importers.load_torch`, i.e.
``torch.load(weights_only=True)``; ``.npz`` / ``.safetensors`` hold the same flat state dict), a
``module.`` prefix (``nn.DataParallel``) is removed, and the layout is told from its keys. Every
key must be mapped or known to be unused by the official forward pass: a missing, unexpected or
wrongly shaped key raises a ValueError naming the file and the key. Torch convs (OIHW) become
HWIO kernels; transposed convs ([in, out, kh, kw]) become flipped HWIO kernels.

Layouts (all take RGB / 255 normalised with the ImageNet mean / std, crowdjax's "imagenet" input,
and predict people per output pixel, count = sum, so no density factor is needed):

* ``"bayesian_vgg19"`` -> method ``uot``. Bayesian loss (github ZhihengCV/Bayesian-Crowd-Counting,
  ``models/vgg.py``; ``best_model.pth`` = ``model.state_dict()``, ``{epoch}_ckpt.tar`` =
  ``{"model_state_dict", ...}``) and the unofficial UOT code
  (github Nightmare4214/GeneralizedLoss-Counting-Pytorch-semi, same keys). Keys
  ``features.{0,2,5,7,10,12,14,16,19,21,23,25,28,30,32,34}.{weight,bias}`` (the 16 VGG19 convs)
  and ``reg_layer.{0,2,4}.{weight,bias}`` (3x3 512->256, 3x3 256->128, 1x1 128->1), output
  ``abs``. The BL code upsamples x2 bilinearly (``align_corners=True``, crowdjax's default); the
  unofficial UOT code uses nearest neighbour: set ``model.upsample="nearest"`` (and
  ``model.activation`` to its ``final``) for its files, which the keys cannot tell apart.
* ``"dmcount_vgg19"`` -> method ``uot`` with ``model.activation="relu"``. DM-Count
  (github cvlab-stonybrook/DM-Count, ``models.py``; ``pretrained_models/model_*.pth`` and
  ``best_model_*.pth`` = ``model.state_dict()``). Keys ``features.*`` as above,
  ``reg_layer.{0,2}`` (the two 3x3 convs) and ``density_layer.0`` (1x1 128->1, then ReLU). The
  same network as crowdjax's ``UOTRegressor`` with the ReLU output; DM-Count's second output
  ``mu / (sum(mu) + 1e-6)`` has no parameters and serves its OT loss only: crowdjax predicts ``mu``.
* ``"autoscale_regression"`` -> method ``autoscale_reg`` with ``model.use_l2s=False``. Official
  AutoScale regression (github dk-liang/AutoScale_regression, ``fpn.py``; ``model_best.pth`` =
  ``{"state_dict": <DataParallel state dict>, "rate_state_dict": ..., ...}``). Keys
  ``frontend.{0,2,5,7,10,12,14,17,19,21}`` (conv1_1..conv4_3), ``backend.{0,2,4}`` (conv5),
  ``cd{2..5}.0`` (laterals), ``rd{5,4,3}.0`` (top-down 1x1), ``up{4,3}`` (transposed convs),
  ``dsn{2..5}`` (side outputs), ``dsn6`` (fusion). Unused by its forward pass, hence not imported:
  ``densend.*``, ``cd1.*``, ``fuse.*``, ``rd2.*``, ``up5.*``, ``up2.*``, ``dsn1.*``.
* ``"autoscale_localization"`` -> method ``autoscale_loc`` with ``model.fpn_layout="official"``
  and ``model.use_l2s=False``. Official AutoScale localization (github dk-liang/AutoScale, the
  ``AutoScale_localization`` code, ``fpn.py``; same wrapping). Keys ``conv1.{0,2}``,
  ``conv2.{1,3}``, ``conv3.{1,3,5}``, ``conv4.{1,3,5}``, ``conv5.{1,3,5}`` (VGG16),
  ``cd{1..5}.{0,1}`` (lateral conv + BatchNorm), ``rd{5..2}.{0,1}`` (1x1 conv + BatchNorm),
  ``up{4,3,2}``, ``dsn{1..6}``. The BatchNorms are folded into their convs with the running
  statistics (eps 1e-5), exact at inference; fine-tuning then trains the folded convs (crowdjax's
  network has no BatchNorm there). Unused: ``up5.*``.

Not imported: the AutoScale ``rate_state_dict`` (the L2S "RATEnet"). Its weights have the shapes
of crowdjax's L2S, but the official network max-pools where crowdjax's average-pools, and
predicts ``sqrt(clamp(y, 0.5, 9))`` (regression; localization: 5) where crowdjax clamps or squashes
``y`` into [0.5, 3]: importing it would not reproduce the official scales, so a config with
``model.use_l2s=True`` is refused and the imported model counts with the official network's
initial prediction (the FPN baseline).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

from crowdjax.models import importers
from crowdjax.models.vgg import vgg_conv_names

FILE_EXTS = importers.TORCH_EXTS + (".npz", ".safetensors")
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, as the official code.

# method -> layouts it imports.
METHOD_LAYOUTS = {
    "uot": ("bayesian_vgg19", "dmcount_vgg19"),
    "autoscale_reg": ("autoscale_regression",),
    "autoscale_loc": ("autoscale_localization",),
}
LAYOUT_REPOS = {
    "bayesian_vgg19": "ZhihengCV/Bayesian-Crowd-Counting (also the unofficial UOT code)",
    "dmcount_vgg19": "cvlab-stonybrook/DM-Count",
    "autoscale_regression": "dk-liang/AutoScale_regression",
    "autoscale_localization": "dk-liang/AutoScale (AutoScale_localization)",
}

# Indices of the convs in torchvision-style `make_layers` Sequentials.
_VGG19_FEATURES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
_VGG16_FRONTEND = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)


def is_published_file(path: str) -> bool:
    """Whether ``path`` is a file with a torch / npz / safetensors extension."""
    return os.path.isfile(path) and os.path.splitext(str(path))[1].lower() in FILE_EXTS


# ---------------------------------------------------------------------------------------------
# Reading.


def _to_numpy(sd: Mapping, path: str, where: str) -> dict[str, np.ndarray]:
    import torch

    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise ValueError(f"{path}: {where}{k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v.detach().float().numpy()
    return out


def _is_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The model state dict of a published file (numpy, ``module.`` removed) and the other
    top-level entries of its wrapping (e.g. ["epoch", "rate_state_dict"]), reported, not read.

    Accepts a bare state dict, ``{"state_dict": ...}`` (AutoScale) or ``{"model_state_dict":
    ...}`` (BL / DM-Count ``*_ckpt.tar``) in torch files; ``.npz`` / ``.safetensors`` hold the
    flat state dict.
    """
    ext = os.path.splitext(str(path))[1].lower()
    others: list[str] = []
    if ext in importers.TORCH_EXTS:
        obj = importers.load_torch(path)
        if _is_state_dict(obj):
            sd = _to_numpy(obj, path, "")
        elif isinstance(obj, Mapping) and any(k in obj for k in ("state_dict", "model_state_dict")):
            key = "state_dict" if "state_dict" in obj else "model_state_dict"
            if not isinstance(obj[key], Mapping):
                raise ValueError(f"{path}: {key!r} is not a state dict")
            sd = _to_numpy(obj[key], path, f"{key}.")
            others = sorted(str(k) for k in obj if k != key)
        else:
            keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                f"{path}: no state dict found (expected a state dict, or one under 'state_dict' "
                f"or 'model_state_dict'; the file holds {keys})"
            )
    elif ext in (".npz", ".safetensors"):
        sd = importers.read_state_dict(path)
    else:
        raise ValueError(f"{path}: not a checkpoint file ({ext!r}); use one of {FILE_EXTS}")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd, others


def detect_layout(keys, path: str = "<state dict>") -> str:
    """The layout name of a state dict's keys (see the module doc)."""
    keys = set(keys)
    if "features.0.weight" in keys and "reg_layer.4.weight" in keys:
        return "bayesian_vgg19"
    if "features.0.weight" in keys and "density_layer.0.weight" in keys:
        return "dmcount_vgg19"
    if {"frontend.0.weight", "backend.0.weight", "dsn6.weight"} <= keys:
        return "autoscale_regression"
    if {"conv1.0.weight", "cd1.1.running_mean", "dsn6.weight"} <= keys:
        return "autoscale_localization"
    raise ValueError(
        f"{path}: unknown checkpoint layout (first keys {sorted(keys)[:6]}); known layouts: "
        + "; ".join(f"{name} ({repo})" for name, repo in LAYOUT_REPOS.items())
    )


# ---------------------------------------------------------------------------------------------
# Layout tables: (torch module prefix, crowdjax param path, kind). Kinds: "conv", "conv_bn"
# (prefix of the conv and of its BatchNorm), "convT".


def _uot_table(layout: str) -> list:
    table = [
        (f"features.{i}", ("backbone", name), "conv")
        for i, name in zip(_VGG19_FEATURES, vgg_conv_names("vgg19"), strict=True)
    ]
    table += [("reg_layer.0", ("reg_conv1",), "conv"), ("reg_layer.2", ("reg_conv2",), "conv")]
    out = "reg_layer.4" if layout == "bayesian_vgg19" else "density_layer.0"
    return table + [(out, ("reg_out",), "conv")]


def _autoscale_reg_table() -> list:
    names = vgg_conv_names("vgg16")
    fpn = lambda *k: ("fpn", *k)
    table = [
        (f"frontend.{i}", fpn("backbone", n), "conv")
        for i, n in zip(_VGG16_FRONTEND, names[:10], strict=True)
    ]
    backend = zip((0, 2, 4), names[10:], strict=True)
    table += [(f"backend.{i}", fpn("backbone", n), "conv") for i, n in backend]
    table += [(f"cd{k}.0", fpn(f"lateral{k}"), "conv") for k in (2, 3, 4, 5)]
    table += [(f"rd{k}.0", fpn(f"reduce{k}"), "conv") for k in (5, 4, 3)]
    table += [(f"up{k}", fpn(f"up{k}"), "convT") for k in (4, 3)]
    table += [(f"dsn{k}", fpn(f"side{k}"), "conv") for k in (2, 3, 4, 5)]
    return table + [("dsn6", fpn("fuse"), "conv")]


def _autoscale_loc_table() -> list:
    fpn = lambda *k: ("fpn", *k)
    table = []
    for stage, count in enumerate((2, 2, 3, 3, 3), start=1):
        first = 0 if stage == 1 else 1  # conv2..conv5 start with their max-pool.
        for i in range(count):
            table.append((f"conv{stage}.{first + 2 * i}", fpn("backbone", f"conv{stage}_{i + 1}")))
    table = [(t, p, "conv") for t, p in table]
    table += [(f"cd{k}", fpn(f"lateral{k}"), "conv_bn") for k in (1, 2, 3, 4, 5)]
    table += [(f"rd{k}", fpn(f"reduce{k}"), "conv_bn") for k in (5, 4, 3, 2)]
    table += [(f"up{k}", fpn(f"up{k}"), "convT") for k in (4, 3, 2)]
    table += [(f"dsn{k}", fpn(f"side{k}"), "conv") for k in (1, 2, 3, 4, 5)]
    return table + [("dsn6", fpn("fuse"), "conv")]


# Module prefixes of each layout that the official forward pass never uses.
UNUSED = {
    "bayesian_vgg19": (),
    "dmcount_vgg19": (),
    "autoscale_regression": ("densend.", "cd1.", "fuse.", "rd2.", "up5.", "up2.", "dsn1."),
    "autoscale_localization": ("up5.",),
}


def layout_table(layout: str) -> list:
    """[(torch module prefix, crowdjax param path (under "params"), kind)] of a layout."""
    if layout in ("bayesian_vgg19", "dmcount_vgg19"):
        return _uot_table(layout)
    if layout == "autoscale_regression":
        return _autoscale_reg_table()
    if layout == "autoscale_localization":
        return _autoscale_loc_table()
    raise ValueError(f"unknown layout {layout!r}; valid: {sorted(LAYOUT_REPOS)}")


# ---------------------------------------------------------------------------------------------
# Conversion.


def _take(sd: dict, key: str, used: set, path: str) -> np.ndarray:
    if key not in sd:
        raise ValueError(f"{path}: missing key {key!r}")
    used.add(key)
    return sd[key]


def _converted(sd: dict, prefix: str, kind: str, used: set, path: str):
    """(kernel HWIO, bias) of one torch module (BatchNorm folded for "conv_bn")."""
    conv = f"{prefix}.0" if kind == "conv_bn" else prefix
    w = _take(sd, f"{conv}.weight", used, path)
    b = _take(sd, f"{conv}.bias", used, path)
    if kind == "convT":
        if w.ndim != 4:
            raise ValueError(f"{path}: {conv}.weight has shape {w.shape}, expected [in, out, k, k]")
        # torch's transposed conv flips the kernel; flax's ConvTranspose does not.
        return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1))[::-1, ::-1]), b
    if w.ndim != 4:
        raise ValueError(f"{path}: {conv}.weight has shape {w.shape}, expected OIHW")
    if kind == "conv_bn":
        bn = f"{prefix}.1"
        gamma, beta, mean, var = (
            _take(sd, f"{bn}.{name}", used, path)
            for name in ("weight", "bias", "running_mean", "running_var")
        )
        if f"{bn}.num_batches_tracked" in sd:
            used.add(f"{bn}.num_batches_tracked")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        w = w * scale[:, None, None, None]
        b = (b - mean) * scale + beta
    return np.transpose(w, (2, 3, 1, 0)), b


def check_config(layout: str, config, path: str) -> None:
    """Raises a ValueError saying which setting to change when ``config`` cannot hold ``layout``."""
    method = config.method
    if method not in METHOD_LAYOUTS:
        raise ValueError(
            f"{path}: method {method!r} cannot import published PyTorch checkpoints; importable: "
            + "; ".join(f"{m} <- {', '.join(ls)}" for m, ls in METHOD_LAYOUTS.items())
        )
    if layout not in METHOD_LAYOUTS[method]:
        raise ValueError(
            f"{path}: holds a {layout} checkpoint ({LAYOUT_REPOS[layout]}), which method "
            f"{method!r} cannot hold (it imports {', '.join(METHOD_LAYOUTS[method])}); use a "
            f"config of method {[m for m, ls in METHOD_LAYOUTS.items() if layout in ls][0]!r}"
        )
    if config.model.pretrained and importers.model_input_convention(config.model.pretrained) != (
        "imagenet"
    ):
        raise ValueError(
            f"{path}: published weights take the 'imagenet' input but model.pretrained="
            f"{config.model.pretrained!r} sets another input convention; set model.pretrained=''"
        )
    need = []
    if layout == "dmcount_vgg19" and config.model.activation != "relu":
        need.append("model.activation=relu (DM-Count's density_layer ends in a ReLU)")
    if method.startswith("autoscale") and config.model.use_l2s:
        need.append(
            "model.use_l2s=False (the official L2S rate model differs from crowdjax's: max- vs "
            "average-pooling, r = sqrt(clamp(y)) vs clamp/sigmoid; see crowdjax.models.published)"
        )
    if layout == "autoscale_localization" and config.model.fpn_layout != "official":
        need.append("model.fpn_layout=official (the official localization backbone and top-down)")
    if need:
        needs = ", --config.".join(need)
        raise ValueError(f"{path}: a {layout} checkpoint needs --config.{needs}")


def import_published(path: str, config, variables) -> tuple[dict, str]:
    """Imports a published PyTorch checkpoint into a method's variables.

    Args:
      path: .pth / .pt / .bin / .ckpt / .tar-like torch file, .npz or .safetensors (see the
        module doc for the layouts).
      config: the run config; ``config.method`` is uot, autoscale_reg or autoscale_loc.
      variables: the model's variables ({"params", ...}); leaves only need ``.shape`` and
        ``.dtype`` (e.g. ``jax.ShapeDtypeStruct``).

    Returns:
      (new variables with the tree structure of ``variables``, numpy leaves cast to their dtypes;
      the layout name).

    Raises:
      ValueError: naming the file and key of a missing, unexpected or wrongly shaped weight, an
        unknown layout, or the config setting a layout needs.
    """
    sd, _ = read_checkpoint(path)
    layout = detect_layout(sd, path)
    check_config(layout, config, path)
    used: set[str] = set()
    values: dict[tuple[str, ...], np.ndarray] = {}
    for prefix, where, kind in layout_table(layout):
        kernel, bias = _converted(sd, prefix, kind, used, path)
        values[("params", *where, "kernel")] = kernel
        values[("params", *where, "bias")] = bias
    unused = UNUSED[layout]
    unexpected = sorted(k for k in sd if k not in used and not k.startswith(unused))
    if unexpected:
        raise ValueError(f"{path}: unexpected keys for a {layout} checkpoint: {unexpected[:10]}")

    filled = set()

    def fill(key_path, leaf):
        key = tuple(str(getattr(k, "key", k)) for k in key_path)
        name = "/".join(key)
        if key not in values:
            raise ValueError(f"{path}: the model's {name} has no counterpart in the {layout} file")
        value = values[key]
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(
                f"{path}: {name} has shape {tuple(value.shape)} in the file but "
                f"{tuple(leaf.shape)} in the model (published weights need model.width=1)"
            )
        filled.add(key)
        return np.asarray(value, dtype=leaf.dtype)

    new = jax.tree_util.tree_map_with_path(fill, variables)
    missing = sorted("/".join(k) for k in set(values) - filled)
    if missing:  # The model lacks a module the file has (e.g. another head).
        raise ValueError(f"{path}: the model has no {missing[:5]} for the {layout} weights")
    return new, layout
