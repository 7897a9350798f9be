"""Tests of the L2S rescaling (sampler vs OpenCV, gradients, point maps) and the L2S module."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdjax.methods.autoscale import l2s
from crowdjax.models import rescale


def _image(seed, h=17, w=23, c=3):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


def _sample(img, box, r, out_shape):
    canvas, mask = rescale.affine_sample(
        jnp.asarray(img)[None], jnp.asarray([box]), jnp.asarray([r], jnp.float32), out_shape
    )
    return np.asarray(canvas[0]), np.asarray(mask[0])


@pytest.mark.parametrize(
    "box,r",
    [((3, 2, 10, 8), 1.5), ((0, 0, 23, 17), 2.0), ((13, 9, 10, 8), 0.5), ((5, 4, 6, 6), 3.0)],
)
def test_sampler_equals_cv2_resize_of_the_crop(box, r):
    # w r and h r are integers here, so cv2.resize to (w r, h r) uses exactly the scale 1 / r.
    img = _image(0)
    x0, y0, w, h = box
    crop = img[y0 : y0 + h, x0 : x0 + w]
    ref = cv2.resize(crop, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR)
    canvas, mask = _sample(img, box, r, (60, 70))
    hv, wv = ref.shape[:2]
    np.testing.assert_allclose(canvas[:hv, :wv], ref, atol=1e-5)
    assert mask[:hv, :wv].all() and mask.sum() == hv * wv
    np.testing.assert_array_equal(canvas[hv:], 0.0)
    np.testing.assert_array_equal(canvas[:, wv:], 0.0)


@pytest.mark.parametrize("r", [0.63, 1.37, 2.71])
def test_sampler_matches_cv2_warp_affine(r):
    # Half-pixel map x' = r (x - x0) + (r - 1) / 2 in pixel indices; replicate border = clamp
    # to the crop. warpAffine quantises positions to 1/32 px: error <= 2 / 32 per value in [0, 1].
    img = _image(1, 31, 29, 2)
    box = (4, 6, 19, 21)
    x0, y0, w, h = box
    crop = img[y0 : y0 + h, x0 : x0 + w]
    m = np.array([[r, 0, (r - 1) / 2], [0, r, (r - 1) / 2]], np.float64)
    out_hw = (50, 55)
    ref = cv2.warpAffine(
        crop, m, out_hw[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    canvas, mask = _sample(img, box, r, out_hw)
    valid = mask > 0
    nv = [int(np.sum((np.arange(n) + 0.5) / r < s)) for n, s in zip(out_hw, (h, w), strict=True)]
    assert valid.sum() == nv[0] * nv[1] and valid[: nv[0], : nv[1]].all()
    err = np.abs(canvas[valid] - ref[valid])
    assert err.max() < 2 / 32 and err.mean() < 0.01


def _canvas_to_image(points, box, scale):
    """The pre-image of canvas points [B, P, 2]: (x0 + x' / r, y0 + y' / r) (module doc)."""
    box, scale = np.asarray(box, np.float64), np.asarray(scale, np.float64)
    return box[:, None, :2] + np.asarray(points, np.float64) / scale[:, None, None]


def test_sampler_reproduces_linear_ramps_and_point_maps():
    # Bilinear sampling is exact on linear functions, so the value at canvas pixel (i, j) of the
    # ramp f(x, y) = a x + b y (pixel centres) is f at the pre-image of (j + .5, i + .5).
    h, w, a, b = 30, 40, 0.7, -1.3
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = (a * xx + b * yy)[..., None].astype(np.float32)
    box = np.array([[7, 5, 25, 20]])
    for r in (0.55, 1.0, 1.8, 2.9):
        canvas, mask = rescale.affine_sample(jnp.asarray(img)[None], box, jnp.array([r]), (70, 80))
        ii, jj = np.mgrid[0:70, 0:80] + 0.5
        pts = np.stack([jj.ravel(), ii.ravel()], -1)[None]
        pre = _canvas_to_image(pts, box, np.array([r]))[0]
        # Away from the clamped border of the crop (pre-image within half a pixel inside).
        interior = (
            (pre[:, 0] >= 7.5)
            & (pre[:, 0] <= 7 + 25 - 0.5)
            & (pre[:, 1] >= 5.5)
            & (pre[:, 1] <= 5 + 20 - 0.5)
        )
        got = np.asarray(canvas[0, ..., 0]).ravel()[interior]
        np.testing.assert_allclose(got, a * pre[interior, 0] + b * pre[interior, 1], atol=2e-4)
        assert np.asarray(mask[0]).ravel()[interior].all()


def test_sampler_gradient_wrt_scale_matches_finite_differences():
    img = _image(2, 20, 24, 2)
    box = jnp.array([[2, 3, 15, 12], [0, 0, 24, 20]])
    weights = np.random.default_rng(3).normal(size=(2, 40, 45, 2))
    x = jnp.stack([jnp.asarray(img)] * 2)

    with jax.enable_x64(True):
        x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(weights)

        @jax.jit
        def f(r):
            canvas, _ = rescale.affine_sample(x64, box, r, (40, 45))
            return jnp.sum(canvas * w64)

        r0 = jnp.array([1.234, 0.777], jnp.float64)
        g = jax.jit(jax.grad(f))(r0)
        eps = 1e-6
        fd = [(f(r0 + eps * e) - f(r0 - eps * e)) / (2 * eps) for e in np.eye(2)]
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)
    # float32 gradient (what training uses) is finite and close.
    g32 = jax.jit(
        jax.grad(lambda r: jnp.sum(rescale.affine_sample(x, box, r, (40, 45))[0] * weights))
    )(jnp.array([1.234, 0.777]))
    np.testing.assert_allclose(g32, g, rtol=1e-3)


def test_rescale_points_round_trip_and_masks():
    rng = np.random.default_rng(4)
    pts = rng.uniform(0, 50, (2, 30, 2)).astype(np.float32)
    pmask = rng.random((2, 30)) > 0.2
    box = jnp.array([[10, 5, 20, 30], [0, 0, 50, 50]])
    r = jnp.array([1.7, 0.6])
    cpts, cmask = rescale.rescale_points(jnp.asarray(pts), jnp.asarray(pmask), box, r)
    back = _canvas_to_image(cpts, box, r)
    np.testing.assert_allclose(back, pts, atol=1e-5)
    b = np.asarray(box)[:, None]
    inside = np.all((pts >= b[..., :2]) & (pts < b[..., :2] + b[..., 2:]), -1)
    np.testing.assert_array_equal(cmask, pmask & inside)
    np.testing.assert_allclose(cpts[0], (pts[0] - [10, 5]) * 1.7, rtol=1e-6)
    # Points of the box land in [0, r w) x [0, r h); a canvas limit drops the rest.
    assert np.all(np.asarray(cpts[0])[np.asarray(cmask[0])] < [34, 51])
    _, small = rescale.rescale_points(
        jnp.asarray(pts), jnp.asarray(pmask), box, r, canvas_shape=(20, 20)
    )
    keep = np.asarray(cmask) & np.all(np.asarray(cpts) < 20, -1)
    np.testing.assert_array_equal(small, keep)
    with pytest.raises(ValueError, match="point_mask"):
        rescale.rescale_points(jnp.asarray(pts), jnp.asarray(pmask[:, :-1]), box, r)


def _np_adaptive_avg_pool(x, n):
    """torch.nn.functional.adaptive_avg_pool2d semantics, loops (x: [H, W, C])."""
    h, w = x.shape[:2]
    out = np.zeros((n, n, x.shape[2]))
    for i in range(n):
        for j in range(n):
            r0, r1 = (i * h) // n, -(-((i + 1) * h) // n)
            c0, c1 = (j * w) // n, -(-((j + 1) * w) // n)
            out[i, j] = x[r0:r1, c0:c1].mean((0, 1))
    return out


def test_roi_adaptive_avg_pool_matches_reference():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(3, 40, 33, 4)).astype(np.float32)
    boxes = np.array([[0, 0, 33, 40], [5, 7, 9, 20], [30, 35, 3, 5]])  # incl. smaller than 14
    got = jax.jit(rescale.roi_adaptive_avg_pool)(feats, boxes)
    assert got.shape == (3, 14, 14, 4)
    for f, (x0, y0, w, h), g in zip(feats, boxes, np.asarray(got), strict=True):
        want = _np_adaptive_avg_pool(f[y0 : y0 + h, x0 : x0 + w].astype(np.float64), 14)
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    f, (x0, y0, w, h) = feats[1], boxes[1]
    crop = torch.from_numpy(f[y0 : y0 + h, x0 : x0 + w]).permute(2, 0, 1)[None]
    ref = torch.nn.functional.adaptive_avg_pool2d(crop, 14)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got[1], ref, rtol=1e-5, atol=1e-6)


def test_box_at_stride():
    box = jnp.array([[3, 9, 10, 7], [0, 0, 16, 16]])
    # [3, 13) x [9, 16) at stride 4 -> columns [0, 4), rows [2, 4).
    np.testing.assert_array_equal(l2s.box_at_stride(box, 4), [[0, 2, 4, 2], [0, 0, 4, 4]])


def test_l2s_module():
    rng = np.random.default_rng(6)
    feats = jnp.asarray(rng.normal(size=(2, 32, 40, 6)), jnp.float32)
    box = jnp.array([[4, 2, 20, 16], [0, 0, 40, 32]])
    model = l2s.L2S()
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), feats, box)
    apply = jax.jit(model.apply)
    r = apply(variables, feats, box)
    assert r.shape == (2,) and r.dtype == jnp.float32
    np.testing.assert_allclose(r, 1.0, atol=0.05)  # starts near the identity scale
    # Gradient reaches the parameters (the clamp is not saturated at init).
    g = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, feats, box))))(variables)
    assert float(jnp.abs(g["params"]["fc1"]["bias"]).sum()) > 0
    assert float(jnp.abs(g["params"]["conv0"]["kernel"]).sum()) > 0
    # Saturated outputs stay inside [0.5, 3].
    big = jax.tree.map(lambda p: p * 50.0, variables)
    r_big = np.asarray(apply(big, feats * 10, box))
    assert np.all((r_big >= 0.5) & (r_big <= 3.0))


def test_l2s_sigmoid_output_and_feature_stride():
    """The default output (configs): r = 0.5 + 2.5 sigmoid(y - 1 + log 1/4) of the last layer's
    y, which the clamp output shows where it does not clip."""
    rng = np.random.default_rng(7)
    feats = jnp.asarray(rng.normal(size=(3, 16, 20, 2)), jnp.float32)
    box = jnp.array([[4, 2, 10, 8], [0, 0, 20, 16], [3, 3, 5, 5]])
    variables = jax.jit(l2s.L2S().init)(jax.random.PRNGKey(0), feats, box)
    clamp = jax.jit(l2s.L2S(output="clamp").apply)
    sig = jax.jit(l2s.L2S(output="sigmoid").apply)
    # Spread y over (0.5, 3) by scaling the last layer: the clamp is then y itself.
    spread = jax.tree.map(lambda p: p, variables)
    spread["params"]["fc1"]["kernel"] = variables["params"]["fc1"]["kernel"] * 16000.0
    y = np.asarray(clamp(spread, feats, box), np.float64)
    assert np.all((y > 0.5) & (y < 3.0)) and np.ptp(y) > 0.05, y
    want = 0.5 + 2.5 / (1.0 + np.exp(-(y - 1.0 + np.log(0.25))))
    np.testing.assert_allclose(sig(spread, feats, box), want, rtol=1e-5)
    np.testing.assert_allclose(sig(variables, feats, box), 1.0, atol=0.05)  # starts near 1
    big = jax.tree.map(lambda p: p * 50.0, variables)
    r_big = np.asarray(sig(big, feats * 10, box))
    assert np.all((r_big >= 0.5) & (r_big <= 3.0))
    # The same parameters on features at stride 4 (box in image pixels).
    r4 = jax.jit(l2s.L2S(feature_stride=4).apply)(variables, feats[:, :4, :5], box)
    assert r4.shape == (3,)


def test_errors():
    img = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="box"):
        rescale.affine_sample(img, jnp.zeros((2, 3)), jnp.ones(2), (4, 4))
    with pytest.raises(ValueError, match="scale"):
        rescale.affine_sample(img, jnp.zeros((2, 4)), jnp.ones(3), (4, 4))
    with pytest.raises(ValueError, match="B, H, W, C"):
        rescale.affine_sample(img[0], jnp.zeros((2, 4)), jnp.ones(2), (4, 4))
    with pytest.raises(ValueError, match="output"):
        jax.eval_shape(
            l2s.L2S(output="relu").init, jax.random.PRNGKey(0), img, jnp.zeros((2, 4), jnp.int32)
        )
