"""Independent reference implementations (numpy, float64 loops; torch) for the model tests."""

from __future__ import annotations

import math

import numpy as np

from crowdjax.models.vgg import VGG_STAGES, vgg_channels, vgg_conv_names

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def imagenet_input(raw_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] -> (x / 255 - mean) / std, float32."""
    return ((raw_rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def caffe_input(raw_rgb: np.ndarray, mean_bgr) -> np.ndarray:
    """Keras ``preprocess_input(mode="caffe")`` / HED: RGB -> BGR, minus the BGR mean, float64."""
    return raw_rgb[..., ::-1].astype(np.float64) - np.asarray(mean_bgr, np.float64)


def conv2d(x, kernel, bias, dilation=1):
    """NHWC x, HWIO kernel, 'same' zero padding (pad = dilation * (k // 2)), float64."""
    k = kernel.shape[0]
    p = dilation * (k // 2)
    xp = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy * dilation : dy * dilation + h, dx * dilation : dx * dilation + w]
            out += patch @ kernel[dy, dx].astype(np.float64)
    return out + bias


def max_pool(x, window=2, stride=2, padding=0, ceil_mode=False):
    """Brute-force PyTorch MaxPool2d on NHWC, from its documented output-size formula."""

    def size(n):
        span = n + 2 * padding - window
        out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (out - 1) * stride >= n + padding:
            out -= 1
        return out

    h, w = x.shape[1:3]
    oh, ow = size(h), size(w)
    out = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - padding, j * stride - padding
            rows = slice(max(r0, 0), min(r0 + window, h))
            cols = slice(max(c0, 0), min(c0 + window, w))
            out[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return out


def resize_align_corners(x, out_h, out_w):
    """Hand formula of bilinear align_corners=True, one output pixel at a time (NHWC)."""
    h, w = x.shape[1:3]
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        sy = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = int(math.floor(sy))
        y1 = min(y0 + 1, h - 1)
        ty = sy - y0
        for j in range(out_w):
            sx = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = int(math.floor(sx))
            x1 = min(x0 + 1, w - 1)
            tx = sx - x0
            out[:, i, j] = (
                (1 - ty) * (1 - tx) * x[:, y0, x0]
                + (1 - ty) * tx * x[:, y0, x1]
                + ty * (1 - tx) * x[:, y1, x0]
                + ty * tx * x[:, y1, x1]
            )
    return out


def vgg_forward(x, convs, *, arch, stages=5, pools=None, dilations=None):
    """Numpy VGG: ``convs`` maps conv names to (HWIO kernel, bias). Returns (out, stage outputs)."""
    pools = pools or (True,) * (stages - 1) + (False,)
    dilations = dilations or (1,) * stages
    names = iter(vgg_conv_names(arch, stages))
    stage_out = {}
    for s in range(stages):
        for _ in VGG_STAGES[arch][s]:
            name = next(names)
            x = np.maximum(conv2d(x, *convs[name], dilation=dilations[s]), 0.0)
        stage_out[name] = x
        if pools[s]:
            x = max_pool(x)
    return x, stage_out


def random_vgg_convs(arch, width, seed=0):
    """Random HWIO conv weights of a VGG of the given width (He-scaled so activations stay O(1))."""
    rng = np.random.default_rng(seed)
    convs, c_in = {}, 3
    names = iter(vgg_conv_names(arch))
    for stage in vgg_channels(arch, width):
        for c in stage:
            k = rng.normal(0, math.sqrt(2.0 / (9 * c_in)), (3, 3, c_in, c)).astype(np.float32)
            convs[next(names)] = (k, rng.normal(0, 0.1, c).astype(np.float32))
            c_in = c
    return convs


def torchvision_state_dict(convs, arch):
    """torchvision ``vgg*.features`` keys (conv at the Sequential indices), OIHW weights, numpy."""
    sd, idx = {}, 0
    names = iter(vgg_conv_names(arch))
    for stage in VGG_STAGES[arch]:
        for _ in stage:
            k, b = convs[next(names)]
            sd[f"features.{idx}.weight"] = np.ascontiguousarray(k.transpose(3, 2, 0, 1))
            sd[f"features.{idx}.bias"] = b
            idx += 2  # conv, relu
        idx += 1  # max-pool
    return sd


def torch_vgg_features(state_dict, arch, *, drop_last_pool=True):
    """A torchvision-layout ``features`` nn.Sequential (Conv2d/ReLU/MaxPool2d) from a state dict."""
    import torch
    from torch import nn

    layers, c_in = [], 3
    for stage in VGG_STAGES[arch]:
        for _ in stage:
            idx = len(layers)
            w = torch.from_numpy(state_dict[f"features.{idx}.weight"])
            conv = nn.Conv2d(c_in, w.shape[0], 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(torch.from_numpy(state_dict[f"features.{idx}.bias"]))
            layers += [conv, nn.ReLU(inplace=False)]
            c_in = w.shape[0]
        layers.append(nn.MaxPool2d(2, 2))
    if drop_last_pool:
        layers = layers[:-1]
    return nn.Sequential(*layers).double().eval()


def random_variables(model, x, seed=0, method=None):
    """Variables for ``model`` with random He-scaled numpy values, shapes from ``jax.eval_shape``.

    Avoids ``model.init``, whose random initialisers compile once per parameter shape (slow on CPU).
    ``method``: the module method ``init`` runs (e.g. one that touches every submodule).
    """
    import functools

    import jax

    shapes = jax.eval_shape(functools.partial(model.init, method=method), jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if len(leaf.shape) == 4:
            std = math.sqrt(2.0 / math.prod(leaf.shape[:3]))
            return rng.normal(0, std, leaf.shape).astype(leaf.dtype)
        return rng.normal(0, 0.1, leaf.shape).astype(leaf.dtype)

    return jax.tree.map(draw, shapes)
