"""Tests of the VGG feature extractors: layouts, shapes, widths, numerics, jit, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.models import vgg
from tests.models import reference

W8 = 1 / 8  # channels 8, 16, 32, 64, 64


def _params_as_convs(params):
    return {k: (np.asarray(v["kernel"]), np.asarray(v["bias"])) for k, v in params.items()}


def test_channels_and_names():
    assert vgg.vgg_channels("vgg16", W8) == ((8, 8), (16, 16), (32, 32, 32), (64,) * 3, (64,) * 3)
    assert len(vgg.vgg_conv_names("vgg16")) == 13 and len(vgg.vgg_conv_names("vgg19")) == 16
    assert vgg.vgg_stage_names("vgg16") == ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
    assert vgg.vgg_stage_names("vgg19", 4)[-1] == "conv4_4"
    with pytest.raises(ValueError, match="vgg16"):
        vgg.vgg_channels("vgg11")


@pytest.mark.parametrize(
    "preset,stride,channels",
    [
        ("vgg19_stride16", 16, 64),
        ("vgg16_stride16", 16, 64),
        ("vgg16_conv4_stride8", 8, 64),
        ("vgg16_stride8_dilated", 8, 64),
    ],
)
def test_presets_shapes_and_stride(preset, stride, channels):
    model = vgg.vgg_from_preset(preset, width=W8)
    assert model.stride == stride
    x = jnp.zeros((2, 64, 48, 3))
    variables = reference.random_variables(model, x)
    out, stages = model.apply(variables, x, return_stages=True)
    assert out.shape == (2, 64 // stride, 48 // stride, channels)
    assert tuple(stages) == model.stage_names
    # Stage s output is taken before its pool: stride 2 ** (number of pools before stage s).
    pools = vgg.VGG_PRESETS[preset]["pools"]
    for s, name in enumerate(model.stage_names):
        f = 2 ** sum(pools[:s])
        assert stages[name].shape[1:3] == (64 // f, 48 // f), (name, stages[name].shape)
    assert tuple(variables["params"]) == vgg.vgg_conv_names(model.arch, model.stages)


def test_init_float32_params_and_zero_bias():
    x = jnp.zeros((1, 8, 8, 3))
    bf16 = vgg.VGG(arch="vgg16", stages=2, width=1 / 16, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(bf16.init, jax.random.PRNGKey(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    # One real init (each new random shape costs a slow threefry compile on CPU: keep it tiny).
    model = vgg.VGG(arch="vgg16", stages=1, width=1 / 4)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    p = variables["params"]
    assert set(p) == {"conv1_1", "conv1_2"}
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    np.testing.assert_array_equal(p["conv1_2"]["bias"], 0.0)
    # torchvision init: kaiming normal, fan_out = 3 * 3 * 16 -> std = sqrt(2 / 144) = 0.118.
    std = float(jnp.std(p["conv1_2"]["kernel"]))
    assert 0.09 < std < 0.15, std


@pytest.mark.parametrize("width,c5", [(1 / 16, 32), (W8, 64), (0.25, 128)])
def test_width_variants(width, c5):
    model = vgg.VGG(arch="vgg16", width=width)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    p = variables["params"]
    assert p["conv1_1"]["kernel"].shape == (3, 3, 3, max(1, round(64 * width)))
    assert p["conv5_3"]["kernel"].shape == (3, 3, c5, c5)


def test_odd_sizes_floor_and_ceil_mode():
    x = jnp.zeros((1, 37, 45, 3))
    floor = vgg.VGG(arch="vgg16", width=1 / 16)
    ceil = vgg.VGG(arch="vgg16", width=1 / 16, ceil_mode=True)
    v = reference.random_variables(floor, x)
    # 4 pools: floor 37 -> 18 -> 9 -> 4 -> 2, 45 -> 22 -> 11 -> 5 -> 2;
    # ceil 37 -> 19 -> 10 -> 5 -> 3, 45 -> 23 -> 12 -> 6 -> 3.
    assert jax.eval_shape(floor.apply, v, x).shape[1:3] == (2, 2)
    assert jax.eval_shape(ceil.apply, v, x).shape[1:3] == (3, 3)


@pytest.mark.parametrize(
    "arch,stages,pools,dilations",
    [
        ("vgg16", 5, (True, True, True, True, False), None),
        ("vgg19", 5, (True, True, True, True, False), None),
        ("vgg16", 5, (True, True, True, False, False), (1, 1, 1, 1, 2)),
        ("vgg16", 4, (True, True, True, False), (1, 1, 2, 3)),
    ],
)
def test_matches_numpy_reference(arch, stages, pools, dilations):
    model = vgg.VGG(arch=arch, stages=stages, pools=pools, dilations=dilations, width=W8)
    x = np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)
    variables = reference.random_variables(model, jnp.asarray(x), seed=1)
    out, stages_out = model.apply(variables, jnp.asarray(x), return_stages=True)
    convs = _params_as_convs(variables["params"])
    want, want_stages = reference.vgg_forward(
        x, convs, arch=arch, stages=stages, pools=pools, dilations=dilations
    )
    scale = np.abs(want).max()
    np.testing.assert_allclose(out, want, atol=1e-4 * scale, rtol=1e-4)
    for name, v in want_stages.items():
        np.testing.assert_allclose(stages_out[name], v, atol=1e-4 * np.abs(v).max(), rtol=1e-4)


def test_dilated_matches_torch():
    torch = pytest.importorskip("torch")
    # AutoScale/L2SM layout: pools after stages 1-3 only, conv5 dilated by 2 (padding 2).
    model = vgg.vgg_from_preset("vgg16_stride8_dilated", width=W8)
    x = np.random.default_rng(2).normal(size=(1, 40, 24, 3)).astype(np.float32)
    variables = reference.random_variables(model, jnp.asarray(x), seed=3)
    mods, c_in = [], 3
    names = iter(vgg.vgg_conv_names("vgg16"))
    for s, stage in enumerate(vgg.vgg_channels("vgg16", W8)):
        d = 2 if s == 4 else 1
        for c in stage:
            p = variables["params"][next(names)]
            conv = torch.nn.Conv2d(c_in, c, 3, padding=d, dilation=d).double()
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.array(p["kernel"]).transpose(3, 2, 0, 1)))
                conv.bias.copy_(torch.from_numpy(np.array(p["bias"])))
            mods += [conv, torch.nn.ReLU()]
            c_in = c
        if s < 3:
            mods.append(torch.nn.MaxPool2d(2, 2))
    with torch.no_grad():
        want = torch.nn.Sequential(*mods)(torch.from_numpy(x).double().permute(0, 3, 1, 2))
    want = want.permute(0, 2, 3, 1).numpy()
    got = model.apply(variables, jnp.asarray(x))
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_jit_matches_eager_and_bf16_close():
    # Same shapes as test_matches_numpy_reference: the eager ops are compiled once per process.
    model = vgg.vgg_from_preset("vgg19_stride16", width=W8)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 48, 3)), jnp.float32)
    variables = reference.random_variables(model, x, seed=1)
    eager = model.apply(variables, x)
    jitted = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5 * float(jnp.abs(eager).max()))
    bf16 = vgg.vgg_from_preset("vgg19_stride16", width=W8, dtype=jnp.bfloat16)
    out16 = jax.jit(bf16.apply)(variables, x)
    assert out16.dtype == jnp.bfloat16
    rel = float(jnp.linalg.norm(out16.astype(jnp.float32) - eager) / jnp.linalg.norm(eager))
    assert rel < 0.05, rel


def test_input_convention_inside_module():
    # A Caffe-convention backbone fed ImageNet-normalised RGB = the same weights fed BGR - mean.
    raw = np.random.default_rng(4).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    model = vgg.VGG(arch="vgg16", stages=2, width=W8, input_convention="caffe")
    variables = reference.random_variables(model, jnp.zeros((1, 16, 16, 3)))
    got = model.apply(variables, jnp.asarray(reference.imagenet_input(raw)))
    caffe = reference.caffe_input(raw, [103.939, 116.779, 123.68])
    want, _ = reference.vgg_forward(
        caffe, _params_as_convs(variables["params"]), arch="vgg16", stages=2
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_bad_configs_raise():
    x = jnp.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match="one entry per stage"):
        vgg.VGG(stages=3, pools=(True, True)).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="1..5"):
        vgg.VGG(stages=6).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"\(16, 16, 3\)"):
        vgg.VGG(width=W8).init(jax.random.PRNGKey(0), x[0])
    with pytest.raises(ValueError, match="valid"):
        vgg.vgg_from_preset("vgg16_bn")
