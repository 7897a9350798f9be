"""Tests of the truncated HRNet (crowdjax.models.hrnet) and its importer (hrnet_import) against an
independent PyTorch re-implementation of the published architecture (official parameter names)."""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from crowdjax.models.hrnet import (
    HRNetStage3,
    hrnet_out_channels,
    resize_bilinear,
    resize_nearest,
)
from crowdjax.models.hrnet_import import (
    detect_layout,
    fill_hrnet_variables,
    hrnet_backbone_loader,
    hrnet_torch_key,
    load_hrnet_weights,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional
tnn = torch.nn

# The convolution-BN, bottleneck and basic blocks, shared with the benchmark's PyTorch twin.
from benchmarks.torch_twins import BasicBlock, Bottleneck, conv_bn  # noqa: E402  (needs torch)

TINY = dict(branch_channels=(8, 16, 32), stem_channels=16, layer1_planes=8, blocks=2)
TINY_MODULES = 2


# ---------------------------------------------------------------------------------------------
# PyTorch reference (NCHW), written from the HRNet paper / cls_hrnet layout: module attribute
# names and Sequential indices give the official state-dict keys.


class _HRModule(tnn.Module):
    def __init__(self, channels, blocks):
        super().__init__()
        self.branches = tnn.ModuleList(
            tnn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels
        )
        rows = []
        for i, ci in enumerate(channels):
            row = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(
                        tnn.Sequential(
                            tnn.Conv2d(cj, ci, 1, 1, 0, bias=False),
                            tnn.BatchNorm2d(ci),
                            tnn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(None)
                else:
                    n = i - j
                    steps = [
                        conv_bn(cj, ci if k == n - 1 else cj, 3, 2, relu=k < n - 1)
                        for k in range(n)
                    ]
                    row.append(tnn.Sequential(*steps))
            rows.append(tnn.ModuleList(row))
        self.fuse_layers = tnn.ModuleList(rows)
        self.any_size = False  # upsample to the target size instead of by the scale factor

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        outs = []
        for i, row in enumerate(self.fuse_layers):
            total = 0
            for j, f in enumerate(row):
                if f is None:
                    z = xs[j]
                elif j > i and self.any_size:
                    z = F.interpolate(f[1](f[0](xs[j])), size=xs[i].shape[2:], mode="nearest")
                else:
                    z = f(xs[j])
                total = total + z
            outs.append(F.relu(total))
        return outs


class TorchHRNetStage3(tnn.Module):
    def __init__(self, branch_channels, stem_channels, layer1_planes, blocks, stage3_modules):
        super().__init__()
        c0, c1, c2 = branch_channels
        s, p = stem_channels, layer1_planes
        self.conv1, self.bn1 = tnn.Conv2d(3, s, 3, 2, 1, bias=False), tnn.BatchNorm2d(s)
        self.conv2, self.bn2 = tnn.Conv2d(s, s, 3, 2, 1, bias=False), tnn.BatchNorm2d(s)
        self.layer1 = tnn.Sequential(
            *[Bottleneck(s if b == 0 else 4 * p, p) for b in range(blocks)]
        )
        first = None if 4 * p == c0 else conv_bn(4 * p, c0, 3, 1, relu=True)
        self.transition1 = tnn.ModuleList(
            [first, tnn.Sequential(conv_bn(4 * p, c1, 3, 2, relu=True))]
        )
        self.stage2 = tnn.Sequential(_HRModule((c0, c1), blocks))
        self.transition2 = tnn.ModuleList(
            [None, None, tnn.Sequential(conv_bn(c1, c2, 3, 2, relu=True))]
        )
        self.stage3 = tnn.Sequential(
            *[_HRModule((c0, c1, c2), blocks) for _ in range(stage3_modules)]
        )

    def forward(self, x, any_size=False):
        for m in self.modules():
            if isinstance(m, _HRModule):
                m.any_size = any_size
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        layer1 = x
        xs = [x if t is None else t(x) for t in self.transition1]
        ys = self.stage2(xs)
        ys = self.stage3([ys[0], ys[1], self.transition2[2](ys[-1])])
        size = ys[0].shape[2:]
        up = [F.interpolate(y, size=size, mode="bilinear", align_corners=False) for y in ys[1:]]
        return torch.cat([ys[0], *up, layer1], dim=1)


# ---------------------------------------------------------------------------------------------
# Shared objects (built once: compiles dominate on a 2-core CPU).

_CACHE: dict = {}


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _torch_tiny():
    def make():
        torch.manual_seed(0)
        model = TorchHRNetStage3(**TINY, stage3_modules=TINY_MODULES)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, tnn.BatchNorm2d):
                    c = m.num_features
                    m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                    m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
                    m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        return model.eval()

    return _cached("torch_tiny", make)


def _flax_tiny():
    return HRNetStage3(**TINY, stage3_modules=TINY_MODULES)


def _abstract(model: HRNetStage3):
    def make():
        x = jnp.zeros((1, 32, 32, 3))
        return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    return _cached(("abstract", model), make)


def _eval_fn(model):
    return _cached(("eval", model), lambda: jax.jit(functools.partial(model.apply, train=False)))


def _train_fn(model):
    def make():
        return jax.jit(
            lambda v, x, m: model.apply(v, x, train=True, mask=m, mutable=["batch_stats"])
        )

    return _cached(("train", model), make)


def _official_state_dict(model) -> dict:
    """The reference's state dict plus keys of the parts not built (they must be ignored)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["transition3.3.0.0.weight"] = torch.zeros(64, 32, 3, 3)
    sd["stage4.0.branches.0.0.conv1.weight"] = torch.zeros(8, 8, 3, 3)
    sd["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 8, 1, 1)
    sd["downsamp_modules.0.0.weight"] = torch.zeros(256, 128, 3, 3)
    sd["final_layer.0.weight"] = torch.zeros(2048, 1024, 1, 1)
    sd["classifier.weight"] = torch.zeros(1000, 2048)
    sd["classifier.bias"] = torch.zeros(1000)
    return sd


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """official .pth; timm-style (features_only: no head, no num_batches_tracked) .pth and
    .safetensors."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("hrnet")
    sd = _official_state_dict(_torch_tiny())
    files = {"official": str(d / "hrnetv2_tiny_imagenet_pretrained.pth")}
    torch.save(sd, files["official"])
    head = ("downsamp_modules", "final_layer", "classifier")
    timm_sd = {
        k: v.contiguous()
        for k, v in sd.items()
        if not k.startswith(head) and not k.endswith("num_batches_tracked")
    }
    files["timm_pth"] = str(d / "hrnet_tiny_timm.pth")
    torch.save(timm_sd, files["timm_pth"])
    files["timm_safetensors"] = str(d / "model.safetensors")
    save_file(timm_sd, files["timm_safetensors"])
    return files


def _variables(path, model=None):
    model = model or _flax_tiny()
    sd = load_hrnet_weights(path)
    abstract = _abstract(model)
    params, stats = fill_hrnet_variables(
        abstract["params"], abstract["batch_stats"], sd, source=detect_layout(sd, path), path=path
    )
    return {"params": params, "batch_stats": stats}


def _images(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32)


def _to_torch(x_nhwc):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2))))


def _to_nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _assert_close(got, want, tol=1e-4):
    scale = float(np.abs(want).max())
    assert scale > 1e-2  # a non-degenerate output
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


# ---------------------------------------------------------------------------------------------
# Resizing.


@pytest.mark.parametrize(
    "size_in,size_out",
    [((5, 6), (18, 23)), ((9, 12), (18, 23)), ((3, 4), (12, 16)), ((18, 23), (5, 7))],
)
def test_resizes_match_torch_interpolate(size_in, size_out):
    x = _images((2, *size_in, 3), 0)
    t = _to_torch(x)
    near = F.interpolate(t, size=size_out, mode="nearest")
    np.testing.assert_array_equal(
        np.asarray(resize_nearest(jnp.asarray(x), size_out)), _to_nhwc(near)
    )
    bil = F.interpolate(t, size=size_out, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(
        np.asarray(resize_bilinear(jnp.asarray(x), size_out)), _to_nhwc(bil), rtol=1e-5, atol=1e-5
    )


def test_nearest_resize_is_the_scale_factor_upsample_when_sizes_divide():
    x = _images((1, 3, 5, 2), 1)
    up = tnn.Upsample(scale_factor=4, mode="nearest")(_to_torch(x))
    np.testing.assert_array_equal(
        np.asarray(resize_nearest(jnp.asarray(x), (12, 20))), _to_nhwc(up)
    )


# ---------------------------------------------------------------------------------------------
# Forward passes against the reference.


def test_eval_output_matches_torch_official_file(weight_files):
    path = weight_files["official"]
    assert detect_layout(load_hrnet_weights(path), path) == "official"
    x = _images((2, 48, 80, 3), 2)  # not multiples of 32; every branch size divides
    got = np.asarray(_eval_fn(_flax_tiny())(_variables(path), jnp.asarray(x)))
    with torch.no_grad():
        want = _to_nhwc(_torch_tiny()(_to_torch(x)))
    assert got.shape == (2, 12, 20, hrnet_out_channels(TINY["branch_channels"], 8)) == want.shape
    _assert_close(got, want)


def test_eval_output_on_odd_sizes_matches_torch_with_size_upsampling(weight_files):
    x = _images((1, 70, 90, 3), 3)  # stride 4: 18 x 23; branches 9 x 12 and 5 x 6
    model = _torch_tiny()
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(_to_torch(x))  # the scale-factor upsampling overshoots (20 != 18): the official
        # model cannot run this size
    with torch.no_grad():
        want = _to_nhwc(model(_to_torch(x), any_size=True))
    got = np.asarray(_eval_fn(_flax_tiny())(_variables(weight_files["official"]), jnp.asarray(x)))
    assert got.shape == (1, 18, 23, hrnet_out_channels(TINY["branch_channels"], 8))
    _assert_close(got, want)


def test_timm_layout_files_fill_the_same_variables(weight_files):
    official = _variables(weight_files["official"])
    for name in ("timm_pth", "timm_safetensors"):
        path = weight_files[name]
        assert detect_layout(load_hrnet_weights(path), path) == "timm"
        got = _variables(path)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(official), strict=True):
            np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(official) == jax.tree.structure(_abstract(_flax_tiny()))


def test_train_mode_output_and_running_means_match_torch(weight_files):
    x = _images((2, 48, 80, 3), 4)
    variables = _variables(weight_files["official"])
    mask = jnp.ones((2, 48, 80), bool)
    got, updates = _train_fn(_flax_tiny())(variables, jnp.asarray(x), mask)
    model = copy.deepcopy(_torch_tiny()).train()
    with torch.no_grad():
        want = _to_nhwc(model(_to_torch(x)))
    _assert_close(np.asarray(got), want, tol=2e-4)
    torch_sd = model.state_dict()
    flat = traverse_util.flatten_dict(updates["batch_stats"])
    n_bn = sum(k.endswith("running_mean") for k in torch_sd)
    assert sum(p[-1] == "mean" for p in flat) == n_bn == 60
    for leaf_path, value in flat.items():
        if leaf_path[-1] == "mean":
            key = hrnet_torch_key(leaf_path, "batch_stats")
            np.testing.assert_allclose(
                value, torch_sd[key].numpy(), rtol=1e-4, atol=1e-4, err_msg=key
            )
    # Variance of the first BN: torch keeps the unbiased batch variance, flax the biased one.
    n = 2 * 24 * 40
    old = variables["batch_stats"]["stem_bn1"]["var"]
    unbiased = (torch_sd["bn1.running_var"].numpy() - 0.9 * old) / 0.1
    np.testing.assert_allclose(
        updates["batch_stats"]["stem_bn1"]["var"],
        0.9 * old + 0.1 * unbiased * (n - 1) / n,
        rtol=1e-4,
    )


def test_mask_keeps_padding_out_of_the_first_bn_statistics(weight_files):
    variables = _variables(weight_files["official"])
    real = _images((2, 32, 48, 3), 5)
    padded = 10.0 + 5.0 * _images((2, 48, 80, 3), 6)  # garbage padding
    padded[:, :32, :48] = real
    mask = np.zeros((2, 48, 80), bool)
    mask[:, :32, :48] = True
    train = _train_fn(_flax_tiny())
    _, updates = train(variables, jnp.asarray(padded), jnp.asarray(mask))
    # Statistics of the unpadded image alone, from the reference's first conv.
    with torch.no_grad():
        feats = _torch_tiny().conv1(_to_torch(real)).numpy()
    old = variables["batch_stats"]["stem_bn1"]
    got = updates["batch_stats"]["stem_bn1"]
    np.testing.assert_allclose(
        got["mean"], 0.9 * old["mean"] + 0.1 * feats.mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        got["var"], 0.9 * old["var"] + 0.1 * feats.var((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    _, unmasked = train(variables, jnp.asarray(padded), jnp.ones((2, 48, 80), bool))
    assert not np.allclose(unmasked["batch_stats"]["stem_bn1"]["mean"], got["mean"], atol=1e-2)


# ---------------------------------------------------------------------------------------------
# The full W40 parameter tree.


def test_w40_tree_has_the_official_shapes():
    with torch.device("meta"):
        ref = TorchHRNetStage3((40, 80, 160), 64, 64, 4, 4)
    official = {
        k: tuple(v.shape)
        for k, v in ref.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    # Spot checks from timm's hrnet_w40 (timm 1.0.31), independent of the reference above.
    assert len(official) == 800
    assert official["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert official["transition1.0.0.weight"] == (40, 256, 3, 3)
    assert official["transition1.1.0.0.weight"] == (80, 256, 3, 3)
    assert official["transition2.2.0.1.running_var"] == (160,)
    assert official["stage3.3.fuse_layers.2.0.0.0.weight"] == (40, 40, 3, 3)
    assert official["stage3.3.fuse_layers.2.0.1.0.weight"] == (160, 40, 3, 3)
    assert official["stage3.3.fuse_layers.0.2.0.weight"] == (40, 160, 1, 1)

    model = HRNetStage3()
    abstract = _abstract(model)
    mapped = {}
    for collection in ("params", "batch_stats"):
        for leaf_path, leaf in traverse_util.flatten_dict(abstract[collection]).items():
            shape = tuple(leaf.shape)
            if leaf_path[-1] == "kernel":
                shape = (shape[3], shape[2], shape[0], shape[1])
            mapped[hrnet_torch_key(leaf_path, collection)] = shape
    assert mapped == official

    fake = {k: np.zeros(s, np.float32) for k, s in official.items()}
    fake["classifier.weight"] = np.zeros((1000, 2048), np.float32)
    fake["stage4.2.fuse_layers.0.3.0.weight"] = np.zeros((40, 320, 1, 1), np.float32)
    assert detect_layout(fake, "hrnetv2_w40_imagenet_pretrained.pth") == "official"
    params, stats = fill_hrnet_variables(
        abstract["params"], abstract["batch_stats"], fake, source="official", path="fake.pth"
    )
    assert jax.tree.structure((params, stats)) == jax.tree.structure(
        (abstract["params"], abstract["batch_stats"])
    )
    assert model.out_channels == hrnet_out_channels() == 536
    out = jax.eval_shape(
        functools.partial(model.apply, train=False), abstract, jnp.zeros((1, 70, 90, 3))
    )
    assert out.shape == (1, 18, 23, 536)


# ---------------------------------------------------------------------------------------------
# Errors and file handling.


def _tiny_sd():
    return {k: v.numpy() for k, v in _official_state_dict(_torch_tiny()).items()}


def _fill(sd, path="weights.pth"):
    abstract = _abstract(_flax_tiny())
    return fill_hrnet_variables(
        abstract["params"], abstract["batch_stats"], sd, source="official", path=path
    )


def test_missing_key_names_file_and_key():
    sd = _tiny_sd()
    del sd["stage3.1.fuse_layers.2.0.1.1.running_var"]
    with pytest.raises(
        ValueError, match=r"w\.pth.*stage3\.1\.fuse_layers\.2\.0\.1\.1\.running_var"
    ):
        _fill(sd, "w.pth")


def test_shape_mismatch_names_key_and_both_shapes():
    sd = _tiny_sd()
    sd["transition2.2.0.0.weight"] = np.zeros((32, 16, 1, 1), np.float32)
    with pytest.raises(
        ValueError,
        match=r"w\.pth: transition2\.2\.0\.0\.weight .*\(32, 16, 1, 1\).*\(32, 16, 3, 3\)",
    ):
        _fill(sd, "w.pth")


def test_extra_backbone_keys_mean_another_architecture():
    sd = _tiny_sd()
    sd["stage3.2.branches.0.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"stage3\.2\.branches"):
        _fill(sd)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_hrnet_weights(str(tmp_path / "missing.pth"))
    txt = tmp_path / "weights.txt"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="unknown weight format '.txt'"):
        load_hrnet_weights(str(txt))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(ValueError, match="no HRNet state dict"):
        load_hrnet_weights(str(listed))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot be read"):
        load_hrnet_weights(str(garbage))
    other = tmp_path / "vgg.npz"
    np.savez(other, **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match="not an HRNet state dict"):
        load_hrnet_weights(str(other))
    with pytest.raises(ValueError, match="not an HRNet state dict"):
        detect_layout({"conv1.weight": np.zeros(1)}, "x.npz")


def test_nested_checkpoint_with_module_prefix(tmp_path):
    sd = _official_state_dict(_torch_tiny())
    path = str(tmp_path / "ckpt.pth")
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    loaded = load_hrnet_weights(path)
    assert set(loaded) == set(sd)
    np.testing.assert_array_equal(loaded["bn1.running_mean"], sd["bn1.running_mean"].numpy())


def test_backbone_loader_fills_only_the_backbone(weight_files):
    class Model:
        input_convention = "imagenet"

    abstract = _abstract(_flax_tiny())
    head = {"kernel": np.ones((3, 3, 64, 1), np.float32)}
    variables = {
        "params": {"backbone": abstract["params"], "head": head},
        "batch_stats": {"backbone": abstract["batch_stats"]},
    }
    load = hrnet_backbone_loader(lambda config: Model())
    new = load(variables, weight_files["timm_safetensors"], None)
    assert new["params"]["head"]["kernel"] is head["kernel"]
    want = _variables(weight_files["official"])
    for a, b in zip(
        jax.tree.leaves((new["params"]["backbone"], new["batch_stats"]["backbone"])),
        jax.tree.leaves((want["params"], want["batch_stats"])),
        strict=True,
    ):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert variables["params"]["backbone"] is abstract["params"]  # the input is not modified

    Model.input_convention = "caffe"
    with pytest.raises(ValueError, match="input convention"):
        load(variables, weight_files["official"], None)
