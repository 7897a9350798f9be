"""Tests of the AutoScale VGG16-FPN: shapes of both heads, layout vs the reference, jit, dtype.

Parameters come from ``jax.eval_shape`` + numpy draws (tests.models.reference.random_variables):
``model.init`` compiles one random initialiser per parameter shape, which is slow on CPU; the real
initialisation is exercised by the slow test at the end.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.methods.autoscale.fpn import AutoScaleFPN
from tests.models import reference

W8 = 1 / 8
KEY = {"regression": "density", "localization": "logits"}


@pytest.fixture(scope="module")
def tiny():
    """Random variables of the width-1/8 model of each head (shape-independent parameters)."""
    x = jnp.zeros((1, 32, 32, 3))
    return {h: reference.random_variables(AutoScaleFPN(head=h, width=W8), x) for h in KEY}


def _images(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("shape", [(2, 64, 48, 3), (1, 61, 45, 3)])
def test_density_head_shapes(tiny, shape):
    model = AutoScaleFPN(head="regression", width=W8)
    fn = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
    out = fn(tiny["regression"], _images(shape))
    b, h, w = shape[:3]
    assert out["density"].shape == (b, h, w) and out["density"].dtype == jnp.float32
    assert len(out["side_outputs"]) == 4
    assert all(s.shape == (b, h, w) for s in out["side_outputs"])
    # 3 levels of lateral 4 + top-down 1 channels and level 5 with 4 (152 at width 1).
    assert out["features"].shape == (b, h, w, 19)
    assert np.all(np.isfinite(out["density"]))


def test_distance_head_shapes_and_feature_stride(tiny):
    model = AutoScaleFPN(head="localization", width=W8, feature_stride=4)
    out = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
        tiny["localization"], _images((2, 64, 48, 3))
    )
    assert out["logits"].shape == (2, 64, 48, 11)
    assert len(out["side_outputs"]) == 5
    assert all(s.shape == (2, 64, 48, 11) for s in out["side_outputs"])
    assert out["features"].shape == (2, 16, 12, 19)  # 4 x (3 + 1) + 3
    assert tiny["localization"]["params"]["fuse"]["kernel"].shape == (1, 1, 55, 11)  # 5 x 11 -> 11


def test_head_layout_matches_reference_parameter_counts():
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = {
        head: jax.eval_shape(AutoScaleFPN(head=head).init, jax.random.PRNGKey(0), x)["params"]
        for head in KEY
    }
    vgg16 = 14_714_688  # the 13 convs of torchvision vgg16.features
    for p in shapes.values():
        assert _count(p["backbone"]) == vgg16
    # Reference regression head (fpn.py), by hand: laterals cd2..cd5 (3x3 -> 32), reductions
    # rd5 (32 -> 8), rd4, rd3 (40 -> 8), transposed convs up4, up3 (8 -> 8, 4x4), side outputs
    # dsn2..dsn4 (40 -> 1), dsn5 (32 -> 1), fuse dsn6 (4 -> 1).
    density = (
        (128 + 256 + 512 + 512) * 32 * 9
        + 4 * 32
        + (32 * 8 + 8)
        + 2 * (40 * 8 + 8)
        + 2 * (8 * 8 * 16 + 8)
        + 3 * 41
        + 33
        + 5
    )
    assert _count(shapes["regression"]) - vgg16 == density
    # Reference localization head without its BatchNorms: cd1..cd5 (3x3 -> 24), rd5 (24 -> 8),
    # rd4..rd2 (32 -> 8), up4..up2, dsn1..dsn4 (32 -> 11), dsn5 (24 -> 11), dsn6 (55 -> 11).
    distance = (
        (64 + 128 + 256 + 512 + 512) * 24 * 9
        + 5 * 24
        + (24 * 8 + 8)
        + 3 * (32 * 8 + 8)
        + 3 * (8 * 8 * 16 + 8)
        + 4 * (32 * 11 + 11)
        + (24 * 11 + 11)
        + (55 * 11 + 11)
    )
    assert _count(shapes["localization"]) - vgg16 == distance


@pytest.mark.parametrize(
    "head", ["localization", pytest.param("regression", marks=pytest.mark.slow)]
)
def test_jit_matches_eager(tiny, head):
    model = AutoScaleFPN(head=head, width=W8)
    x = _images((1, 16, 24, 3))
    eager = model.apply(tiny[head], x)
    jitted = jax.jit(model.apply)(tiny[head], x)
    for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(j, e, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_bf16_compute(tiny):
    x = _images((1, 32, 40, 3))
    ref = jax.jit(AutoScaleFPN(head="localization", width=W8).apply)(tiny["localization"], x)[
        "logits"
    ]
    low = AutoScaleFPN(head="localization", width=W8, dtype=jnp.bfloat16)
    out = jax.jit(low.apply)(tiny["localization"], x)["logits"]
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    scale = float(jnp.abs(ref).max()) + 1e-6
    assert float(jnp.abs(out - ref).max()) < 0.05 * scale


@pytest.mark.slow
def test_gradients_finite_and_reach_the_backbone(tiny):
    model = AutoScaleFPN(head="regression", width=W8)
    x = _images((1, 32, 32, 3))
    loss = lambda v: jnp.sum(model.apply(v, x)["density"] ** 2)
    grads = jax.jit(jax.grad(loss))(tiny["regression"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
    # (A 1-channel top-down ReLU of the tiny model may be dead; the main paths must not be.)
    p = grads["params"]
    for name in ("lateral2", "lateral5", "side2", "side5", "fuse"):
        assert float(jnp.abs(p[name]["kernel"]).sum()) > 0, name
    assert float(jnp.abs(p["backbone"]["conv1_1"]["kernel"]).sum()) > 0


def test_errors():
    def trace(model, shape):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))

    with pytest.raises(ValueError, match="head"):
        trace(AutoScaleFPN(head="points"), (1, 32, 32, 3))
    with pytest.raises(ValueError, match="B, H, W, 3"):
        trace(AutoScaleFPN(width=W8), (32, 32, 3))
    with pytest.raises(ValueError, match="feature_stride"):
        trace(AutoScaleFPN(width=W8, feature_stride=3), (1, 32, 32, 3))
    with pytest.raises(ValueError, match="input_pad"):
        trace(AutoScaleFPN(width=W8, input_pad=0), (1, 30, 30, 3))


@pytest.mark.slow
def test_real_init():
    model = AutoScaleFPN(head="localization", width=W8)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    p = variables["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    np.testing.assert_array_equal(p["side1"]["bias"], 0.0)
    assert 0.005 < float(jnp.std(p["lateral3"]["kernel"])) < 0.015  # reference N(0, 0.01)


def _torch_reference(params, images, head):
    """The reference FPN forward written with torch.nn.functional (weights from ``params``)."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))

    def conv(x, p, dilation=1):
        k = t(p["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
        pad = dilation * (k.shape[-1] // 2)
        return f.conv2d(x, k, t(p["bias"]), padding=pad, dilation=dilation)

    def upconv(x, p):  # flax (unflipped, HWIO) -> torch ConvTranspose2d (flipped, IOHW)
        k = torch.flip(t(p["kernel"]), (0, 1)).permute(2, 3, 0, 1)
        return f.conv_transpose2d(x, k, t(p["bias"]), stride=2)

    def crop(x, hw):
        top, left = (x.shape[2] - hw[0]) // 2, (x.shape[3] - hw[1]) // 2
        return x[:, :, top : top + hw[0], left : left + hw[1]]

    h, w = images.shape[1:3]
    x = f.pad(t(images).permute(0, 3, 1, 2), (8, 8, 8, 8))
    stages, bb = [], params["backbone"]
    for s, n in enumerate((2, 2, 3, 3, 3)):
        if s in (1, 2, 3):
            x = f.max_pool2d(x, 2)
        for i in range(n):
            x = f.relu(conv(x, bb[f"conv{s + 1}_{i + 1}"], dilation=2 if s == 4 else 1))
        stages.append(x)
    levels = (2, 3, 4, 5) if head == "regression" else (1, 2, 3, 4, 5)
    pyr = {}
    for lv in reversed(levels):
        lat = f.relu(conv(stages[lv - 1], params[f"lateral{lv}"]))
        if lv < 5:
            red = f.relu(conv(pyr[lv + 1], params[f"reduce{lv + 1}"]))
            if lv < 4:
                red = upconv(red, params[f"up{lv + 1}"])
            lat = f.relu(torch.cat([lat, crop(red, lat.shape[2:])], 1))
        pyr[lv] = lat
    sides = []
    for lv in levels:
        side = conv(pyr[lv], params[f"side{lv}"])
        factor = {1: 1, 2: 2, 3: 4, 4: 8, 5: 8}[lv]
        if factor > 1:
            side = f.interpolate(side, scale_factor=factor, mode="bilinear", align_corners=True)
        sides.append(crop(side, (h, w)))
    return conv(torch.cat(sides, 1), params["fuse"]).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("head", list(KEY))
def test_matches_torch_reference_forward(tiny, head):
    x = _images((1, 37, 50, 3), seed=2)  # not a multiple of 8: floor pools, crops
    out = jax.jit(AutoScaleFPN(head=head, width=W8).apply)(tiny[head], x)[KEY[head]]
    ref = _torch_reference(tiny[head]["params"], np.asarray(x), head)
    ref = ref[..., 0] if head == "regression" else ref
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
