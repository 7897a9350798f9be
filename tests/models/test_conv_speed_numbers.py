"""The matmul kernel gradient of `crowdjax.models.conv` computes the numbers XLA's does.

Kernel gradients are checked against a float64 numpy sum over taps written from the definition,
and a whole train step (loss, gradients, Adam-updated parameters of a small VGG regressor) with
every convolution's kernel gradient as matmuls against the same step with XLA's convolution
("xla", the code before `crowdjax.models.conv`), within float32 rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from crowdjax.models import conv
from crowdjax.models.vgg import VGG

# (kernel, stride, dilation, padding): the variants the models use.
CASES = [
    (3, 1, 1, ((1, 1), (1, 1))),  # VGG 3x3
    (3, 1, 2, ((2, 2), (2, 2))),  # dilated VGG conv5 / CSRNet-style heads
    (3, 2, 1, ((1, 1), (1, 1))),  # HRNet strided 3x3 (odd input: the last row is unused)
    (1, 1, 1, ((0, 0), (0, 0))),  # 1x1 heads
    (7, 2, 1, ((3, 3), (3, 3))),  # 7x7 stem
    (3, 1, 1, "SAME"),
    (3, 2, 1, ((0, 1), (1, 0))),  # asymmetric padding
]


def _numpy_kernel_grad(x, g, k, stride, dilation, padding):
    """d sum(conv(x, w) * g) / d w: sum over output pixels of input patch x cotangent."""
    x = np.pad(x.astype(np.float64), ((0, 0), *padding, (0, 0)))
    _, ho, wo, _ = g.shape
    out = np.zeros((k, k, x.shape[-1], g.shape[-1]))
    for i in range(k):
        for j in range(k):
            y0, x0 = i * dilation, j * dilation
            tap = x[
                :,
                y0 : y0 + stride * (ho - 1) + 1 : stride,
                x0 : x0 + stride * (wo - 1) + 1 : stride,
            ]
            out[i, j] = np.einsum("bhwc,bhwo->co", tap, g.astype(np.float64))
    return out


def _conv(x, w, stride, dilation, padding):
    return conv.conv_general_dilated(
        x,
        w,
        (stride, stride),
        padding,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@pytest.mark.parametrize("k,stride,dilation,padding", CASES)
def test_kernel_and_input_grads_match_numpy_and_xla(k, stride, dilation, padding):
    rng = np.random.default_rng(k + 10 * stride + 100 * dilation)
    x = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    w = rng.normal(size=(k, k, 3, 4)).astype(np.float32)
    y = _conv(x, w, stride, dilation, padding)
    g = rng.normal(size=y.shape).astype(np.float32)

    def vjp(impl):
        with conv.conv_impl(impl):
            out, pullback = jax.vjp(
                jax.jit(lambda x, w: _conv(x, w, stride, dilation, padding)), x, w
            )
        return (out, *pullback(g))

    y_fast, dx_fast, dw_fast = vjp("matmul_grad")
    y_xla, dx_xla, dw_xla = vjp("xla")
    pads = padding
    if pads == "SAME":
        pads = ((1, 1), (1, 1))
    np.testing.assert_allclose(
        dw_fast, _numpy_kernel_grad(x, g, k, stride, dilation, pads), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(dw_fast, dw_xla, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y_fast, y_xla)
    np.testing.assert_allclose(dx_fast, dx_xla, rtol=1e-6, atol=1e-6)


def test_grad_of_per_example_losses_under_vmap():
    # Per-example kernel gradients (vmap over grad) equal one gradient per image.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 8, 8, 2)).astype(np.float32)
    w = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)

    def loss(w, x):
        return jnp.sum(_conv(x, w, 1, 1, ((1, 1), (1, 1))) ** 2)

    with conv.conv_impl("matmul_grad"):
        per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(w, x)
    for b in range(3):
        with conv.conv_impl("xla"):
            want = jax.grad(loss)(w, x[b])
        np.testing.assert_allclose(per_example[b], want, rtol=1e-5, atol=1e-5)


class _Regressor(nn.Module):
    """A small VGG regressor (VGG16's first 3 stages, the last dilated, 1/16 width) with the UOT
    regressor's head: convs with and without pools, dilations and a 1x1 output, few compiles."""

    @nn.compact
    def __call__(self, images):
        x = VGG(
            arch="vgg16", stages=3, pools=(True, True, False), dilations=(1, 1, 2), width=1 / 16
        )(images)
        x = nn.relu(conv.Conv(8, (3, 3), padding=1)(x))
        return jnp.abs(conv.Conv(1, (1, 1))(x)[..., 0])


def _train_step(impl, params, images, target):
    model = _Regressor()
    optimizer = optax.adam(1e-3)

    def loss_fn(params):
        density = model.apply({"params": params}, images)
        return jnp.mean(jnp.sum((density - target) ** 2, axis=(1, 2)))

    with conv.conv_impl(impl):

        @jax.jit
        def step(params):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, _ = optimizer.update(grads, optimizer.init(params), params)
            return loss, grads, optax.apply_updates(params, updates)

        return step(params)


def test_train_step_numbers_equal_the_xla_convolution_step():
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.normal(size=(2, 32, 48, 3)).astype(np.float32))
    target = jnp.asarray(rng.uniform(0, 0.1, size=(2, 8, 12)).astype(np.float32))
    params = _Regressor().init(jax.random.key(0), images)["params"]
    loss_fast, grads_fast, new_fast = _train_step("matmul_grad", params, images, target)
    loss_xla, grads_xla, new_xla = _train_step("xla", params, images, target)
    np.testing.assert_allclose(loss_fast, loss_xla, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads_fast), jax.tree.leaves(grads_xla), strict=True):
        # Float rounding relative to each leaf's scale (the gradients are small: 1e-7 to 1e-2).
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)
    for a, b in zip(jax.tree.leaves(new_fast), jax.tree.leaves(new_xla), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_auto_uses_the_matmul_gradient_on_vgg_middle_layers_only():
    # VGG19 at 512 x 512, batch 2: conv2_1 (64 -> 128 on 256 x 256) and conv4_2 (512 -> 512 on
    # 64 x 64) are, conv1_2 (64 -> 64), conv5_1 (512 -> 512 on 32 x 32) and the head's first
    # conv (512 -> 256 on 64 x 64) are not.
    assert conv.matmul_grad_pays((2, 256, 256, 64), (3, 3, 64, 128), (1, 1))
    assert conv.matmul_grad_pays((2, 64, 64, 512), (3, 3, 512, 512), (1, 1))
    assert not conv.matmul_grad_pays((2, 512, 512, 64), (3, 3, 64, 64), (1, 1))
    assert not conv.matmul_grad_pays((2, 32, 32, 512), (3, 3, 512, 512), (1, 1))
    assert not conv.matmul_grad_pays((2, 64, 64, 512), (3, 3, 512, 256), (1, 1))


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="matmul_grad"):
        conv.set_conv_impl("eigen")


def test_exports_with_symbolic_height_and_width():
    # jax.export with a polymorphic image size (crowdjax.export): the rule of "auto" cannot compare
    # symbolic sizes, and such convolutions are only run forward.
    kernel = jnp.zeros((3, 3, 64, 128))
    shape = jax.export.symbolic_shape("2, h, w, 64")
    exported = jax.export.export(jax.jit(lambda x: _conv(x, kernel, 1, 1, "SAME")))(
        jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    x = np.ones((2, 5, 7, 64), np.float32)
    np.testing.assert_allclose(exported.call(x), _conv(x, kernel, 1, 1, "SAME"))


def test_auto_keeps_xlas_convolution_off_the_cpu(monkeypatch):
    # Measured on a CPU only: on a GPU or TPU "auto" must trace XLA's plain convolution.
    x = jnp.zeros((2, 256, 256, 64), jnp.float32)
    k = jnp.zeros((3, 3, 64, 128), jnp.float32)

    def traced():
        def f(x, k):
            return conv.conv_general_dilated(
                x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )

        return str(jax.make_jaxpr(f)(x, k))

    assert "custom_vjp" in traced()  # The CPU takes the matmul gradient on this layer.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "custom_vjp" not in traced()
