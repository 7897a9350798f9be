"""Published PyTorch checkpoints (crowdjax.models.published): each layout is written in its
repository's exact keys and wrapping by an independent torch model (module names as the official
code, random weights, the config's small width), imported through `restore_variables`, and the
crowdjax prediction is compared with the torch forward pass.

Tolerance: float32 on both sides, max |crowdjax - torch| <= 1e-4 x max |torch| (+ 1e-6).
"""

from __future__ import annotations

import importlib
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from crowdjax import checkpointing, evaluation  # noqa: E402
from crowdjax.models import published  # noqa: E402
from crowdjax.run import Setup  # noqa: E402

TINY = "synthetic_crowd/tiny"
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
VGG19_CFG += [512, 512, 512, 512, "M", 512, 512, 512, 512]


def ch(c: int, width: float) -> int:
    return max(1, round(c * width))


def make_layers(cfg, width, in_channels=3, dilation=False):
    """torchvision / reference `make_layers` (conv + ReLU, 'M' = 2x2 max-pool)."""
    d = 2 if dilation else 1
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, ch(v, width), 3, padding=d, dilation=d), nn.ReLU()]
            in_channels = ch(v, width)
    return nn.Sequential(*layers)


def crop(d, g_hw):
    """The reference `crop`: centre crop to g_hw, offset floor((D - G) / 2)."""
    gh, gw = g_hw
    dh, dw = d.shape[2:4]
    t, left = (dh - gh) // 2, (dw - gw) // 2
    return d[:, :, t : t + gh, left : left + gw]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal conv weights, small random biases and BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * 4
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


class BayesianVGG(nn.Module):
    """Bayesian loss models/vgg.py (and DM-Count models.py with dmcount=True; the unofficial UOT
    code with upsample="nearest")."""

    def __init__(self, width, *, dmcount=False, upsample="bilinear"):
        super().__init__()
        self.features = make_layers(VGG19_CFG, width)
        self.dmcount, self.upsample = dmcount, upsample
        c512, c256, c128 = ch(512, width), ch(256, width), ch(128, width)
        head = [nn.Conv2d(c512, c256, 3, padding=1), nn.ReLU(), nn.Conv2d(c256, c128, 3, padding=1)]
        head.append(nn.ReLU())
        if dmcount:
            self.reg_layer = nn.Sequential(*head)
            self.density_layer = nn.Sequential(nn.Conv2d(c128, 1, 1), nn.ReLU())
        else:
            self.reg_layer = nn.Sequential(*head, nn.Conv2d(c128, 1, 1))

    def forward(self, x):
        x = self.features(x)
        if self.upsample == "bilinear":  # F.upsample_bilinear
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:  # F.interpolate default
            x = F.interpolate(x, scale_factor=2)
        x = self.reg_layer(x)
        return self.density_layer(x) if self.dmcount else torch.abs(x)


class AutoScaleRegression(nn.Module):
    """dk-liang/AutoScale_regression fpn.py (all its modules, used or not)."""

    def __init__(self, width):
        super().__init__()
        w = width
        c = [ch(v, w) for v in (64, 128, 256, 512, 512)]
        self.frontend = make_layers([64, 64, "M", 128, 128, "M", 256, 256, 256, "M"] + [512] * 3, w)
        self.backend = make_layers([512] * 3, w, in_channels=c[3], dilation=True)
        self.densend = make_layers([256, 128, 64], w, in_channels=c[3], dilation=True)
        lat, td = ch(32, w), ch(8, w)
        for k in range(1, 6):
            conv = nn.Conv2d(c[k - 1], lat, 3, padding=1)
            setattr(self, f"cd{k}", nn.Sequential(conv, nn.ReLU()))
        self.fuse = nn.Sequential(nn.Conv2d(3 * (lat + td) + lat, ch(28, w), 3, padding=1))
        self.fuse.append(nn.ReLU())
        self.fuse.append(nn.Conv2d(ch(28, w), 1, 1))
        self.rd5 = nn.Sequential(nn.Conv2d(lat, td, 1), nn.ReLU())
        for k in (4, 3, 2):
            setattr(self, f"rd{k}", nn.Sequential(nn.Conv2d(lat + td, td, 1), nn.ReLU()))
        for k in (5, 4, 3, 2):
            setattr(self, f"up{k}", nn.ConvTranspose2d(td, td, 4, stride=2))
        for k in (1, 2, 3, 4):
            setattr(self, f"dsn{k}", nn.Conv2d(lat + td, 1, 1))
        self.dsn5 = nn.Conv2d(lat, 1, 1)
        self.dsn6 = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        hw = x.shape[2:4]
        x = F.pad(x, (8, 8, 8, 8))
        conv1 = self.frontend[0:4](x)
        conv2 = self.frontend[4:9](conv1)
        conv3 = self.frontend[9:16](conv2)
        conv4 = self.frontend[16:23](conv3)
        conv5 = self.backend(conv4)
        _, (d2, d3, d4, d5) = top_down(self, conv2, conv3, conv4, conv5, hw)
        d6 = self.dsn6(torch.cat((d2, d3, d4, d5), 1))
        return d6, (d2, d3, d4, d5)


_AC = dict(mode="bilinear", align_corners=True)  # nn.UpsamplingBilinear2d


def top_down(m, conv2, conv3, conv4, conv5, hw):
    """Levels 5 .. 2 of the official FPNs (both repos share them): p2 and the side outputs
    d2 .. d5 upsampled and cropped to `hw`."""
    p5 = m.cd5(conv5)
    d5 = crop(F.interpolate(m.dsn5(F.relu(p5)), scale_factor=8, **_AC), hw)
    p4_1 = m.cd4(conv4)
    p4 = F.relu(torch.cat((p4_1, crop(m.rd5(F.relu(p5)), p4_1.shape[2:])), 1))
    d4 = crop(F.interpolate(m.dsn4(p4), scale_factor=8, **_AC), hw)
    p3_1 = m.cd3(conv3)
    p3 = F.relu(torch.cat((p3_1, crop(m.up4(m.rd4(F.relu(p4))), p3_1.shape[2:])), 1))
    d3 = crop(F.interpolate(m.dsn3(p3), scale_factor=4, **_AC), hw)
    p2_1 = m.cd2(conv2)
    p2 = F.relu(torch.cat((p2_1, crop(m.up3(m.rd3(F.relu(p3))), p2_1.shape[2:])), 1))
    d2 = crop(F.interpolate(m.dsn2(p2), scale_factor=2, **_AC), hw)
    return p2, (d2, d3, d4, d5)


class AutoScaleLocalization(nn.Module):
    """dk-liang/AutoScale (AutoScale_localization) fpn.py."""

    def __init__(self, width, classes=11):
        super().__init__()
        w = width
        c = [ch(v, w) for v in (64, 128, 256, 512, 512)]

        def convs(cin, cout, n, d=1):
            out = []
            for _ in range(n):
                out += [nn.Conv2d(cin, cout, 3, padding=d, dilation=d), nn.ReLU()]
                cin = cout
            return out

        self.conv1 = nn.Sequential(nn.Conv2d(3, c[0], 3, padding=35), nn.ReLU())
        self.conv1.extend(convs(c[0], c[0], 1))
        pool = lambda: nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.conv2 = nn.Sequential(pool(), *convs(c[0], c[1], 2))
        self.conv3 = nn.Sequential(pool(), *convs(c[1], c[2], 3))
        self.conv4 = nn.Sequential(pool(), *convs(c[2], c[3], 3))
        self.conv5 = nn.Sequential(nn.MaxPool2d(2, stride=1, padding=1), *convs(c[3], c[4], 3, 2))
        lat, td = ch(24, w), ch(8, w)
        for k in range(1, 6):
            conv = nn.Conv2d(c[k - 1], lat, 3, padding=1)
            setattr(self, f"cd{k}", nn.Sequential(conv, nn.BatchNorm2d(lat)))
        self.rd5 = nn.Sequential(nn.Conv2d(lat, td, 1), nn.BatchNorm2d(td))
        for k in (4, 3, 2):
            setattr(self, f"rd{k}", nn.Sequential(nn.Conv2d(lat + td, td, 1), nn.BatchNorm2d(td)))
        for k in (5, 4, 3, 2):
            setattr(self, f"up{k}", nn.ConvTranspose2d(td, td, 4, stride=2))
        for k in (1, 2, 3, 4):
            setattr(self, f"dsn{k}", nn.Conv2d(lat + td, classes, 1))
        self.dsn5 = nn.Conv2d(lat, classes, 1)
        self.dsn6 = nn.Conv2d(5 * classes, classes, 1)

    def forward(self, x):
        hw = x.shape[2:4]
        conv1 = self.conv1(x)
        conv2 = self.conv2(conv1)
        conv3 = self.conv3(conv2)
        conv4 = self.conv4(conv3)
        conv5 = self.conv5(conv4)
        p2, (d2, d3, d4, d5) = top_down(self, conv2, conv3, conv4, conv5, hw)
        p1_1 = self.cd1(conv1)
        p1 = F.relu(torch.cat((p1_1, crop(self.up2(self.rd2(F.relu(p2))), p1_1.shape[2:])), 1))
        d1 = crop(self.dsn1(p1), hw)
        d6 = self.dsn6(torch.cat((d1, d2, d3, d4, d5), 1))
        return d6, (d1, d2, d3, d4, d5)


# ---------------------------------------------------------------------------------------------


def _config(name: str, **model):
    config = importlib.import_module(f"configs.{name}").get_config("tiny")
    for k, v in model.items():
        config.model[k] = v
    return config


def _images(h=64, w=48, b=2, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, h, w, 3)).astype(np.float32)


def _torch_out(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images).permute(0, 3, 1, 2))


def _nhwc(t) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def _assert_close(ours, ref, what):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = float(np.abs(ref).max())
    assert scale > 1e-3, f"{what}: degenerate reference output"
    diff = float(np.abs(ours - ref).max())
    print(f"{what}: max |crowdjax - torch| = {diff:.3g} (max |torch| = {scale:.3g})")
    assert diff <= 1e-4 * scale + 1e-6, (what, diff, scale)


def _restore(config, path):
    setup = Setup(config)
    variables, info = checkpointing.restore_variables(
        str(path), setup.abstract_variables(), config=config
    )
    return setup, variables, info


def _wrap_autoscale(sd):
    """model_best.pth of the official AutoScale code (DataParallel keys, rate model, epoch)."""
    return {
        "epoch": 7,
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
        "best_prec1": 1.5,
        "rate_state_dict": {"module.output.2.bias": torch.zeros(1)},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One checkpoint per layout, with its torch model."""
    d = tmp_path_factory.mktemp("published")
    out = {}
    width = 1 / 16  # configs' tiny width (make_tiny)
    bl = randomize(BayesianVGG(width), 0)
    torch.save(bl.state_dict(), d / "best_model.pth")
    out["bl"] = (d / "best_model.pth", bl)
    uot = randomize(BayesianVGG(width, upsample="nearest"), 1)
    ckpt = {"epoch": 3, "optimizer_state_dict": {}, "model_state_dict": uot.state_dict()}
    torch.save(ckpt, d / "3_ckpt.tar.pth")
    out["uot_nearest"] = (d / "3_ckpt.tar.pth", uot)
    dm = randomize(BayesianVGG(width, dmcount=True), 2)
    torch.save(dm.state_dict(), d / "model_qnrf.pth")
    out["dmcount"] = (d / "model_qnrf.pth", dm)
    reg = randomize(AutoScaleRegression(width), 3)
    torch.save(_wrap_autoscale(reg.state_dict()), d / "reg_model_best.pth")
    out["reg"] = (d / "reg_model_best.pth", reg)
    loc = randomize(AutoScaleLocalization(width), 4)
    torch.save(_wrap_autoscale(loc.state_dict()), d / "loc_model_best.pth")
    out["loc"] = (d / "loc_model_best.pth", loc)
    return out


@pytest.mark.parametrize(
    "key, model_settings, layout",
    [
        ("bl", {}, "bayesian_vgg19"),
        ("uot_nearest", {"upsample": "nearest"}, "bayesian_vgg19"),
        ("dmcount", {"activation": "relu"}, "dmcount_vgg19"),
    ],
)
def test_vgg19_regressors_match_torch(files, key, model_settings, layout):
    path, model = files[key]
    setup, variables, info = _restore(_config("uot_shb", **model_settings), path)
    assert info == {"path": str(path), "step": 0, "kind": "imported", "layout": layout}
    leaf = jax.tree.leaves(variables)[0]
    assert leaf.sharding == setup.replicated
    images = _images()
    ours = setup.predict(variables, images, np.ones(images.shape[:3], bool))["density"]
    ref = _torch_out(model, images)[:, 0].numpy()
    _assert_close(ours, ref, f"{key} density")
    np.testing.assert_allclose(np.asarray(ours).sum((1, 2)), ref.sum((1, 2)), rtol=1e-4)


def test_autoscale_regression_matches_torch(files):
    path, model = files["reg"]
    config = _config("autoscale_reg_shb", use_l2s=False)
    setup, variables, info = _restore(config, path)
    assert info["layout"] == "autoscale_regression"
    images = _images()
    ours = setup.predict(variables, images, np.ones(images.shape[:3], bool))["density"]
    ref, _ = _torch_out(model, images)
    _assert_close(ours, ref[:, 0].numpy(), "autoscale_reg density")


def test_autoscale_localization_matches_torch(files):
    path, model = files["loc"]
    config = _config("autoscale_loc_shb", use_l2s=False, fpn_layout="official")
    setup, variables, info = _restore(config, path)
    assert info["layout"] == "autoscale_localization"
    images = _images(h=56, w=64)  # 56 + 68 = 124: the ceil-mode pools round 31 up to 16.
    out = jax.jit(setup.model.apply)(variables, images)  # the logits (predict_fn: their argmax)
    ref, sides = _torch_out(model, images)
    _assert_close(out["logits"], _nhwc(ref), "autoscale_loc logits")
    for k, (a, b) in enumerate(zip(out["side_outputs"], sides, strict=True)):
        _assert_close(a, _nhwc(b), f"autoscale_loc side {k + 1}")


def test_npz_and_safetensors_files_import_alike(files, tmp_path):
    path, model = files["dmcount"]
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    np.savez(tmp_path / "dm.npz", **sd)
    from safetensors.numpy import save_file

    save_file(sd, str(tmp_path / "dm.safetensors"))
    config = _config("uot_shb", activation="relu")
    abstract = Setup(config).abstract_variables()
    ref, _ = published.import_published(str(path), config, abstract)
    for name in ("dm.npz", "dm.safetensors"):
        got, layout = published.import_published(str(tmp_path / name), config, abstract)
        assert layout == "dmcount_vgg19"
        jax.tree.map(np.testing.assert_array_equal, got, ref)


# ---------------------------------------------------------------------------------------------
# Error paths.


def _edited(files, key, tmp_path, edit):
    path, model = files[key]
    sd = dict(model.state_dict())
    edit(sd)
    out = tmp_path / f"edited_{key}.pth"
    torch.save(sd, out)
    return str(out)


def _import(path, config):
    return published.import_published(path, config, Setup(config).abstract_variables())


def test_missing_unexpected_and_misshapen_keys_are_named(files, tmp_path):
    config = _config("uot_shb")
    path = _edited(files, "bl", tmp_path, lambda sd: sd.pop("reg_layer.2.bias"))
    with pytest.raises(ValueError, match=r"edited_bl.pth: missing key 'reg_layer.2.bias'"):
        _import(path, config)
    path = _edited(files, "bl", tmp_path, lambda sd: sd.update({"extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected keys .*'extra.weight'"):
        _import(path, config)
    path = _edited(files, "bl", tmp_path, lambda sd: sd.update({"reg_layer.4.bias": torch.ones(3)}))
    with pytest.raises(ValueError, match=r"reg_out/bias has shape \(3,\) in the file but \(1,\)"):
        _import(path, config)
    # Full-width published weights in a width-1/16 model.
    with pytest.raises(ValueError, match=r"need model.width=1"):
        _import(str(files["bl"][0]), _config("uot_shb", width=1 / 8))


def test_unknown_layout_and_methods_that_cannot_import(files, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"backbone.conv.weight": torch.zeros(1, 1, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"unknown checkpoint layout.*bayesian_vgg19"):
        _import(str(path), _config("uot_shb"))
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match=r"no state dict found"):
        _import(str(path), _config("uot_shb"))
    bl = str(files["bl"][0])
    config = _config("l2sm_synthetic")
    with pytest.raises(ValueError, match=r"method 'l2sm' cannot import .*uot <- bayesian_vgg19"):
        published.import_published(bl, config, {})
    with pytest.raises(ValueError, match=r"bayesian_vgg19 checkpoint .* of method 'uot'"):
        published.import_published(bl, _config("autoscale_reg_shb", use_l2s=False), {})
    with pytest.raises(ValueError, match=r"needs the config"):
        checkpointing.restore_variables(bl, {})


def test_config_settings_a_layout_needs_are_named(files):
    with pytest.raises(ValueError, match=r"--config.model.activation=relu"):
        _import(str(files["dmcount"][0]), _config("uot_shb"))
    reg = str(files["reg"][0])
    with pytest.raises(ValueError, match=r"--config.model.use_l2s=False"):
        published.import_published(reg, _config("autoscale_reg_shb"), {})
    loc = str(files["loc"][0])
    with pytest.raises(ValueError, match=r"--config.model.fpn_layout=official"):
        published.import_published(loc, _config("autoscale_loc_shb", use_l2s=False), {})


# ---------------------------------------------------------------------------------------------
# eval.py and init_from.


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    from crowdjax.data import datasets

    data_dir = os.environ.get("CROWDJAX_DATA_DIR", "")
    if data_dir and datasets.get_builder(TINY, data_dir=data_dir).is_prepared():
        return data_dir
    data_dir = str(tmp_path_factory.mktemp("data"))
    datasets.build(TINY, data_dir=data_dir)
    return data_dir


def test_evaluate_checkpoint_imports_a_pth(files, tiny_data, tmp_path):
    path, _ = files["bl"]
    config = _config("uot_shb")
    config.data.data_dir = tiny_data
    workdir = tmp_path / "eval"
    results = evaluation.evaluate_checkpoint(
        config, str(workdir), checkpoint=str(path), split="test"
    )
    for prefix, result in results.items():
        with open(workdir / f"eval_{prefix}.json") as f:
            written = json.load(f)
        assert written["checkpoint"]["kind"] == "imported", written["checkpoint"]
        assert written["checkpoint"]["layout"] == "bayesian_vgg19"
        assert result["num_images"] > 0 and np.isfinite(result["mae"])
        counts = [r["pred_count"] for r in written["per_image"]]
        assert np.std(counts) > 0  # the imported weights, not a constant


@pytest.mark.slow  # Compiles the training state's init (optimizer included).
def test_init_from_imports_a_pth(files, tmp_path):
    path, _ = files["bl"]
    config = _config("uot_shb")
    config.init_from = str(path)
    setup = Setup(config)
    ckpts = checkpointing.Checkpoints(str(tmp_path / "train"), async_save=False)
    state, origin = checkpointing.initial_state(setup, ckpts)
    ckpts.close()
    assert origin == "init_from"
    expected, _ = published.import_published(str(path), config, setup.abstract_variables())
    jax.tree.map(np.testing.assert_array_equal, state.variables, expected)
