"""Tests of the PyTorch-matching layers and of the input conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.models import layers
from tests.models import reference

RESIZE_CASES = [
    ((4, 5), (8, 10)),  # x2 upsampling, as in the UOT regressor
    ((7, 3), (13, 11)),  # non-integer factors
    ((9, 8), (4, 3)),  # downsampling: no antialiasing
    ((1, 6), (5, 1)),  # size-1 input / output: src index 0
    ((5, 5), (5, 5)),  # identity
]


@pytest.mark.parametrize("in_hw,out_hw", RESIZE_CASES)
def test_resize_matches_hand_formula(in_hw, out_hw):
    x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
    got = layers.resize_bilinear_align_corners(jnp.asarray(x), out_hw)
    np.testing.assert_allclose(got, reference.resize_align_corners(x, *out_hw), atol=1e-5)


@pytest.mark.parametrize("in_hw,out_hw", RESIZE_CASES)
def test_resize_matches_torch_interpolate(in_hw, out_hw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, *in_hw, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=out_hw, mode="bilinear", align_corners=True
    )
    got = layers.resize_bilinear_align_corners(jnp.asarray(x), out_hw)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_resize_x2_scale_factor_matches_torch():
    # The reference regressor calls interpolate(scale_factor=2) (F.upsample_bilinear).
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).normal(size=(1, 6, 9, 4)).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=2, mode="bilinear", align_corners=True
    )
    got = layers.resize_bilinear_align_corners(jnp.asarray(x), (12, 18))
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_resize_keeps_corners_dtype_and_jits():
    x = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 2)
    got = jax.jit(layers.resize_bilinear_align_corners, static_argnums=1)(x, (7, 9))
    # align_corners: the four corner pixels are copied exactly.
    np.testing.assert_array_equal(got[:, ::6, ::8], x[:, ::2, ::3])
    eager = layers.resize_bilinear_align_corners(x, (7, 9))
    np.testing.assert_allclose(got, eager, atol=1e-6)
    assert (
        layers.resize_bilinear_align_corners(x.astype(jnp.bfloat16), (7, 9)).dtype == jnp.bfloat16
    )


def test_resize_rejects_bad_rank_and_shape():
    with pytest.raises(ValueError, match=r"\(3, 4, 2\)"):
        layers.resize_bilinear_align_corners(jnp.zeros((3, 4, 2)), (6, 8))
    with pytest.raises(ValueError, match="positive"):
        layers.resize_bilinear_align_corners(jnp.zeros((1, 3, 4, 2)), (0, 8))


POOL_CASES = [
    dict(window=2, stride=2, padding=0, ceil_mode=False),
    dict(window=2, stride=2, padding=0, ceil_mode=True),
    dict(window=3, stride=2, padding=1, ceil_mode=True),
    dict(window=3, stride=2, padding=0, ceil_mode=True),
    dict(window=3, stride=3, padding=1, ceil_mode=False),
]


@pytest.mark.parametrize("kw", POOL_CASES)
@pytest.mark.parametrize("hw", [(7, 8), (5, 5), (2, 3), (4, 4)])
def test_max_pool_matches_bruteforce(kw, hw):
    x = np.random.default_rng(3).normal(size=(2, *hw, 3)).astype(np.float32)
    if kw["window"] > min(hw) + 2 * kw["padding"]:  # PyTorch refuses this too
        with pytest.raises(ValueError, match="larger than padded input"):
            layers.max_pool2d(jnp.asarray(x), **kw)
        return
    got = layers.max_pool2d(jnp.asarray(x), **kw)
    np.testing.assert_array_equal(got, reference.max_pool(x, **kw))


@pytest.mark.parametrize("kw", POOL_CASES)
def test_max_pool_matches_torch(kw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).normal(size=(2, 9, 7, 3)).astype(np.float32)
    pool = torch.nn.MaxPool2d(kw["window"], kw["stride"], kw["padding"], ceil_mode=kw["ceil_mode"])
    want = pool(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(layers.max_pool2d(jnp.asarray(x), **kw), want)


def test_pooled_size_by_hand():
    # floor: (7 - 2) // 2 + 1 = 3; ceil: ceil(5 / 2) + 1 = 4.
    assert layers.pooled_size(7, window=2, stride=2) == 3
    assert layers.pooled_size(7, window=2, stride=2, ceil_mode=True) == 4
    # ceil((6 + 2 - 3) / 2) + 1 = 4 windows starting at -1, 1, 3, 5: the last starts inside the
    # input ((4 - 1) * 2 = 6 < 6 + 1), so it is kept.
    assert layers.pooled_size(6, window=3, stride=2, padding=1, ceil_mode=True) == 4
    # n = 5, w = 2, s = 2, p = 1: ceil(5 / 2) + 1 = 4, but the 4th window would start at 5, in the
    # right padding ((4 - 1) * 2 = 6 >= 5 + 1): dropped -> 3.
    assert layers.pooled_size(5, window=2, stride=2, padding=1, ceil_mode=True) == 3


@pytest.mark.parametrize("name", sorted(layers.INPUT_CONVENTIONS))
def test_from_imagenet_equals_normalize(name):
    conv = layers.get_input_convention(name)
    raw = np.random.default_rng(5).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    got = conv.from_imagenet(jnp.asarray(reference.imagenet_input(raw)))
    np.testing.assert_allclose(got, conv.normalize(raw), rtol=1e-5, atol=1e-4)


def test_normalize_matches_independent_preprocessing():
    raw = np.random.default_rng(6).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    caffe = layers.get_input_convention("caffe").normalize(raw)
    np.testing.assert_allclose(
        caffe, reference.caffe_input(raw, [103.939, 116.779, 123.68]), atol=1e-4
    )
    hed = layers.get_input_convention("caffe_hed").normalize(jnp.asarray(raw))
    want = reference.caffe_input(raw, [104.00699, 116.66877, 122.67892])
    np.testing.assert_allclose(hed, want, atol=1e-4)
    imnet = layers.get_input_convention("imagenet").normalize(raw)
    np.testing.assert_allclose(imnet, reference.imagenet_input(raw), atol=1e-6)
    # A black pixel in Caffe convention is minus the BGR mean.
    black = layers.get_input_convention("caffe").normalize(np.zeros((1, 3), np.uint8))
    np.testing.assert_allclose(black, [[-103.939, -116.779, -123.68]], rtol=1e-6)


def test_unknown_convention_lists_valid():
    with pytest.raises(ValueError, match="caffe_hed"):
        layers.get_input_convention("bgr")


def test_torch_default_inits_bounds():
    # One jit for both draws: every new random shape costs a threefry compile on CPU.
    k, b = jax.jit(
        lambda key: (
            layers.torch_conv_kernel_init()(key, (3, 3, 16, 8)),
            layers.torch_conv_bias_init(144)(jax.random.fold_in(key, 1), (8,)),
        )
    )(jax.random.PRNGKey(0))
    bound = 1.0 / 12.0  # 1 / sqrt(fan_in = 3 * 3 * 16)
    assert float(jnp.abs(k).max()) <= bound and float(jnp.abs(k).max()) > 0.8 * bound
    assert float(jnp.abs(b).max()) <= bound


@pytest.mark.parametrize("kw", POOL_CASES[:3])
def test_max_pool_gradient_matches_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, 7, 9, 2)).astype(np.float32)
    out_shape = layers.max_pool2d(jnp.asarray(x), **kw).shape
    w = rng.normal(size=out_shape).astype(np.float32)
    got = jax.grad(lambda v: jnp.sum(layers.max_pool2d(v, **kw) * w))(jnp.asarray(x))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    pool = torch.nn.MaxPool2d(kw["window"], kw["stride"], kw["padding"], ceil_mode=kw["ceil_mode"])
    (pool(xt) * torch.from_numpy(w).permute(0, 3, 1, 2)).sum().backward()
    np.testing.assert_allclose(got, xt.grad.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_resize_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    w = rng.normal(size=(1, 8, 10, 2)).astype(np.float32)
    got = jax.grad(lambda v: jnp.sum(layers.resize_bilinear_align_corners(v, (8, 10)) * w))(
        jnp.asarray(x)
    )
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    y = torch.nn.functional.interpolate(xt, size=(8, 10), mode="bilinear", align_corners=True)
    (y * torch.from_numpy(w).permute(0, 3, 1, 2)).sum().backward()
    np.testing.assert_allclose(got, xt.grad.permute(0, 2, 3, 1).numpy(), atol=1e-5)
