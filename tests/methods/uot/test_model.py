"""Tests of the Bayesian-loss / UOT VGG19 regressor against a PyTorch reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import uot_common
from crowdjax.methods.uot import model as uot_model
from crowdjax.models import importers, published
from tests.models import reference

W8 = 1 / 8


def _reference_state_dict(seed=0):
    """Random VGG19 features + reg_layer (Bayesian-loss key names), width 1/8, numpy OIHW."""
    sd = reference.torchvision_state_dict(reference.random_vgg_convs("vgg19", W8, seed), "vgg19")
    rng = np.random.default_rng(seed + 100)
    for idx, (c_out, c_in, k) in {0: (32, 64, 3), 2: (16, 32, 3), 4: (1, 16, 1)}.items():
        std = np.sqrt(2.0 / (c_in * k * k))
        sd[f"reg_layer.{idx}.weight"] = rng.normal(0, std, (c_out, c_in, k, k)).astype(np.float32)
        sd[f"reg_layer.{idx}.bias"] = rng.normal(0, 0.1, c_out).astype(np.float32)
    return sd


def _import_regressor(params, path, activation="abs"):
    """A Bayesian-loss / UOT checkpoint into UOTRegressor params, as `init_from` imports it."""
    config = uot_common.uot_config("shb")
    config.model.activation = activation
    variables, layout = published.import_published(path, config, {"params": params})
    assert layout == "bayesian_vgg19"
    return variables["params"]


def _torch_regressor(sd, activation="abs"):
    """The reference: features[:-1], upsample_bilinear x2 (align_corners), reg_layer, abs."""
    import torch
    from torch import nn

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = reference.torch_vgg_features(sd, "vgg19")
            self.reg_layer = nn.Sequential(
                nn.Conv2d(64, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 1, 1),
            )
            with torch.no_grad():
                for idx in (0, 2, 4):
                    self.reg_layer[idx].weight.copy_(
                        torch.from_numpy(sd[f"reg_layer.{idx}.weight"])
                    )
                    self.reg_layer[idx].bias.copy_(torch.from_numpy(sd[f"reg_layer.{idx}.bias"]))

        def forward(self, x):
            y = self.features(x)
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
            y = self.reg_layer(y)
            return torch.abs(y) if activation == "abs" else torch.relu(y)

    return Regressor().double()


@pytest.mark.parametrize("hw", [(64, 48), (50, 37)])
@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_matches_torch_reference(tmp_path, hw, activation):
    torch = pytest.importorskip("torch")
    sd = _reference_state_dict()
    path = str(tmp_path / "bl.pth")
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    model = uot_model.UOTRegressor(width=W8, activation=activation)
    x = np.random.default_rng(1).normal(size=(2, *hw, 3)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(x))
    params = _import_regressor(shapes["params"], path, activation)
    got = model.apply({"params": params}, jnp.asarray(x))
    with torch.no_grad():
        want = _torch_regressor(sd, activation)(torch.from_numpy(x).double().permute(0, 3, 1, 2))
    want = want[:, 0].numpy()
    # (64, 48) -> (8, 6); (50, 37) -> 2 * floor(/16) = (6, 4), as in PyTorch.
    assert got.shape == want.shape == (2, 2 * (hw[0] // 16), 2 * (hw[1] // 16))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    if activation == "relu":
        assert (np.asarray(got) == 0).any()  # the random head has negative outputs to clip


def _output_shape(height, width):
    model = uot_model.UOTRegressor(width=W8)
    images = jnp.zeros((1, height, width, 3))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    return jax.eval_shape(model.apply, shapes, images).shape[1:]


def test_output_shape_by_hand():
    assert _output_shape(512, 384) == (64, 48)  # multiples of 16: H / 8
    assert _output_shape(50, 37) == (6, 4)  # floor(50 / 16) = 3, 37 -> 2


def test_jit_eager_bf16_and_nonnegative():
    # Same shapes as test_matches_torch_reference: the eager ops are compiled once per process.
    model = uot_model.UOTRegressor(width=W8)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 48, 3)), jnp.float32)
    variables = reference.random_variables(model, x, seed=2)
    eager = model.apply(variables, x)
    jitted = jax.jit(model.apply)(variables, x)
    assert eager.shape == (2, 8, 6)
    assert float(eager.min()) >= 0.0
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5 * float(eager.max()))
    bf16 = uot_model.UOTRegressor(width=W8, dtype=jnp.bfloat16)
    out16 = jax.jit(bf16.apply)(variables, x)
    assert out16.dtype == jnp.float32  # density returned in float32 for the losses
    rel = float(jnp.linalg.norm(out16 - eager) / jnp.linalg.norm(eager))
    assert rel < 0.05, rel


def test_param_tree_and_head_widths():
    model = uot_model.UOTRegressor(width=1.0)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert set(shapes) == {"backbone", "reg_conv1", "reg_conv2", "reg_out"}
    assert len(shapes["backbone"]) == 16
    assert shapes["reg_conv1"]["kernel"].shape == (3, 3, 512, 256)
    assert shapes["reg_conv2"]["kernel"].shape == (3, 3, 256, 128)
    assert shapes["reg_out"]["kernel"].shape == (1, 1, 128, 1)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


def test_backbone_import_leaves_head(tmp_path):
    sd = _reference_state_dict(seed=3)
    path = str(tmp_path / "vgg19.npz")
    np.savez(path, **{k: v for k, v in sd.items() if k.startswith("features")})
    model = uot_model.UOTRegressor(width=W8)
    variables = reference.random_variables(model, jnp.zeros((1, 32, 32, 3)))
    new, convention = importers.load_pretrained(variables, path, arch="vgg19")
    assert convention.name == "imagenet"
    k = new["params"]["backbone"]["conv5_4"]["kernel"]
    np.testing.assert_array_equal(k, sd["features.34.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        new["params"]["reg_out"]["kernel"], variables["params"]["reg_out"]["kernel"]
    )
    with pytest.raises(ValueError, match="unknown checkpoint layout"):  # no regressor head
        _import_regressor(variables["params"], path)


def test_bad_inputs_raise():
    model = uot_model.UOTRegressor(width=W8)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\)"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="at least 16"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 32, 3)))
    with pytest.raises(ValueError, match="'abs' or 'relu'"):
        bad = uot_model.UOTRegressor(width=W8, activation="softplus")
        jax.eval_shape(bad.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_parameter_gradients_match_torch(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _reference_state_dict(seed=5)
    np.savez(tmp_path / "bl.npz", **sd)
    model = uot_model.UOTRegressor(width=W8)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 64, 48, 3)).astype(np.float32)
    w = rng.normal(size=(2, 8, 6)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(x))
    params = _import_regressor(shapes["params"], str(tmp_path / "bl.npz"))
    loss = lambda p: jnp.sum(model.apply({"params": p}, jnp.asarray(x)) * w)
    grads = jax.jit(jax.grad(loss))(params)
    regressor = _torch_regressor(sd)
    y = regressor(torch.from_numpy(x).double().permute(0, 3, 1, 2))
    (y[:, 0] * torch.from_numpy(w).double()).sum().backward()
    pairs = {
        ("backbone", "conv1_1"): regressor.features[0],
        ("backbone", "conv5_4"): regressor.features[34],
        ("reg_conv1",): regressor.reg_layer[0],
        ("reg_out",): regressor.reg_layer[4],
    }
    for keys, conv in pairs.items():
        g = grads
        for k in keys:
            g = g[k]
        want = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
        np.testing.assert_allclose(g["kernel"], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
        want_b = conv.bias.grad.numpy()
        np.testing.assert_allclose(g["bias"], want_b, rtol=1e-3, atol=1e-4 * np.abs(want_b).max())
