"""PyTorch twins of crowdjax's networks, for `benchmarks/vs_torch.py`.

Each twin is written from the papers' layouts with `torch.nn` (NCHW, the reference code's
layout), not translated from the Flax code, and takes its weights from a crowdjax parameter tree
(HWIO kernels -> OIHW; flax's unflipped transposed-conv kernels -> flipped IOHW), so that a twin
and the crowdjax network given the same parameters compute the same function; the benchmark
checks that on every timed input before it trusts a timing. Inputs: NCHW images (or [N, H, W]
maps for the discriminator); outputs: [N, h, w] maps, as crowdjax's.

Twins: :class:`UOTTwin` (VGG19 regressor of Bayesian loss / UOT), :class:`AutoScaleTwin`
(VGG16-FPN, regression head, crowdjax layout), :class:`SPNTwin` (L2SM's scale-preserving
network), :class:`GeneratorTwin` and :class:`DiscriminatorTwin` (ASNet, Tables 8-9),
:class:`DKPNetTwin` (truncated HRNet-W40 + DKPNet's head, attention "none" or "se").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from flax import traverse_util
from torch import nn

from crowdjax.models.hrnet_import import hrnet_torch_key
from crowdjax.models.vgg import VGG_STAGES


def _tensor(value) -> torch.Tensor:
    return torch.from_numpy(np.array(value, np.float32))  # A writable copy.


def conv(p, *, stride=1, padding=None, dilation=1) -> nn.Conv2d:
    """An nn.Conv2d holding flax conv params {"kernel" HWIO, "bias"?} (padding default k // 2 x
    dilation, PyTorch's 'same' for odd kernels)."""
    kh, kw, c_in, c_out = np.shape(p["kernel"])
    if padding is None:
        padding = dilation * (kh // 2)
    layer = nn.Conv2d(c_in, c_out, (kh, kw), stride, padding, dilation=dilation, bias="bias" in p)
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["kernel"]).permute(3, 2, 0, 1))
        if "bias" in p:
            layer.bias.copy_(_tensor(p["bias"]))
    return layer


def conv_transpose(p, *, stride=2, padding=0) -> nn.ConvTranspose2d:
    """An nn.ConvTranspose2d from flax ConvTranspose params: flax does not flip its kernel (a
    conv of the dilated input), PyTorch does (the gradient of a conv)."""
    kh, kw, c_in, c_out = np.shape(p["kernel"])
    layer = nn.ConvTranspose2d(c_in, c_out, (kh, kw), stride, padding)
    with torch.no_grad():
        layer.weight.copy_(torch.flip(_tensor(p["kernel"]), (0, 1)).permute(2, 3, 0, 1))
        layer.bias.copy_(_tensor(p["bias"]))
    return layer


def linear(p) -> nn.Linear:
    """An nn.Linear from flax Dense params {"kernel" [in, out], "bias"}."""
    c_in, c_out = np.shape(p["kernel"])
    layer = nn.Linear(c_in, c_out)
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["kernel"]).T)
        layer.bias.copy_(_tensor(p["bias"]))
    return layer


def batch_norm(p, stats, momentum=0.1) -> nn.BatchNorm2d:
    """An nn.BatchNorm2d (eps 1e-5) from MaskedBatchNorm params {scale, bias} and stats."""
    layer = nn.BatchNorm2d(np.shape(p["scale"])[0], eps=1e-5, momentum=momentum)
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["scale"]))
        layer.bias.copy_(_tensor(p["bias"]))
        layer.running_mean.copy_(_tensor(stats["mean"]))
        layer.running_var.copy_(_tensor(stats["var"]))
    return layer


class VGGStages(nn.Module):
    """VGG conv stages (3x3 conv + ReLU) with 2x2 max-pools after the stages in `pools`;
    returns every stage's output (before its pool)."""

    def __init__(self, params, *, arch, pools, dilations=(1, 1, 1, 1, 1)):
        super().__init__()
        self.pools = pools
        stages = []
        for s, stage in enumerate(VGG_STAGES[arch]):
            layers = []
            for i in range(len(stage)):
                layers += [conv(params[f"conv{s + 1}_{i + 1}"], dilation=dilations[s]), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        outs = []
        for stage, pool in zip(self.stages, self.pools, strict=True):
            x = stage(x)
            outs.append(x)
            if pool:
                x = F.max_pool2d(x, 2, 2)
        return outs


class UOTTwin(nn.Module):
    """VGG19 (16 convs, 4 pools), bilinear x2 (align_corners), head 3x3, 3x3, 1x1, abs/ReLU."""

    def __init__(self, params, *, activation="abs"):
        super().__init__()
        self.backbone = VGGStages(params["backbone"], arch="vgg19", pools=(1, 1, 1, 1, 0))
        self.head = nn.Sequential(
            conv(params["reg_conv1"]),
            nn.ReLU(),
            conv(params["reg_conv2"]),
            nn.ReLU(),
            conv(params["reg_out"]),
        )
        self.activation = activation

    def forward(self, images):
        x = self.backbone(images)[-1]
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = self.head(x)[:, 0]
        return torch.abs(x) if self.activation == "abs" else F.relu(x)


def _center_crop(x, hw):
    top, left = (x.shape[2] - hw[0]) // 2, (x.shape[3] - hw[1]) // 2
    return x[:, :, top : top + hw[0], left : left + hw[1]]


class AutoScaleTwin(nn.Module):
    """AutoScale's VGG16-FPN, regression head: input padded by 8, VGG16 stride 8 (conv5 dilated
    by 2), laterals on stages 2-5, top-down 1x1 reductions (+ 4x4 stride-2 transposed convs where
    the resolution doubles), side outputs upsampled (align_corners) and fused; density [N, H, W]."""

    LEVELS = (2, 3, 4, 5)
    STRIDES = {2: 2, 3: 4, 4: 8, 5: 8}

    def __init__(self, params, *, input_pad=8):
        super().__init__()
        self.pad = input_pad
        self.backbone = VGGStages(
            params["backbone"], arch="vgg16", pools=(1, 1, 1, 0, 0), dilations=(1, 1, 1, 1, 2)
        )
        self.lateral = nn.ModuleDict({str(lv): conv(params[f"lateral{lv}"]) for lv in self.LEVELS})
        self.reduce = nn.ModuleDict({str(lv): conv(params[f"reduce{lv}"]) for lv in (3, 4, 5)})
        self.up = nn.ModuleDict({str(lv): conv_transpose(params[f"up{lv}"]) for lv in (3, 4)})
        self.side = nn.ModuleDict({str(lv): conv(params[f"side{lv}"]) for lv in self.LEVELS})
        self.fuse = conv(params["fuse"])

    def forward(self, images):
        h, w = images.shape[2:]
        stages = self.backbone(F.pad(images, (self.pad,) * 4))
        pyramid = {}
        for lv in reversed(self.LEVELS):
            lat = F.relu(self.lateral[str(lv)](stages[lv - 1]))
            if lv < 5:
                red = F.relu(self.reduce[str(lv + 1)](pyramid[lv + 1]))
                if self.STRIDES[lv + 1] > self.STRIDES[lv]:
                    red = self.up[str(lv + 1)](red)
                lat = F.relu(torch.cat([lat, _center_crop(red, lat.shape[2:])], 1))
            pyramid[lv] = lat
        sides = []
        for lv in self.LEVELS:
            side = self.side[str(lv)](pyramid[lv])
            side = F.interpolate(
                side, scale_factor=self.STRIDES[lv], mode="bilinear", align_corners=True
            )
            sides.append(_center_crop(side, (h, w)))
        return self.fuse(torch.cat(sides, 1))[:, 0]


class SPNTwin(nn.Module):
    """L2SM's SPN: VGG16 (pools after stages 1-3), a 3x3 conv + ReLU per stage, adaptive average
    pools to 16, 8, 4, 2, 1, bilinear (half-pixel) upsampling onto conv5, concatenated with it,
    3x3 convs 256, 128, 64 + ReLU and a 4x4 stride-2 transposed conv: density at stride 4.
    Images of at least 128 px a side (conv5 then has at least 16 cells: the pyramid is upsampled,
    where half-pixel bilinear and crowdjax's normalised triangle weights agree)."""

    PYRAMID = (16, 8, 4, 2, 1)

    def __init__(self, params):
        super().__init__()
        self.backbone = VGGStages(params["backbone"], arch="vgg16", pools=(1, 1, 1, 0, 0))
        self.pyramid = nn.ModuleList(conv(params[f"pyramid{s + 1}"]) for s in range(5))
        self.regress = nn.ModuleList(conv(params[f"reg_conv{i + 1}"]) for i in range(3))
        self.deconv = conv_transpose(params["deconv"], padding=1)

    def forward(self, images):
        stages = self.backbone(images)
        f_b = stages[-1]
        if min(f_b.shape[2:]) < self.PYRAMID[0]:
            # crowdjax's triangle weights then shrink the 16 x 16 map with antialiasing.
            raise ValueError(f"SPNTwin needs images of at least 128 px a side, got {images.shape}")
        up = []
        for layer, x, n in zip(self.pyramid, stages, self.PYRAMID, strict=True):
            pooled = F.adaptive_avg_pool2d(F.relu(layer(x)), n)
            up.append(F.interpolate(pooled, size=f_b.shape[2:], mode="bilinear"))
        x = torch.cat([f_b, *up], 1)
        for layer in self.regress:
            x = F.relu(layer(x))
        return self.deconv(x)[:, 0]


class GeneratorTwin(nn.Module):
    """ASNet's G (Table 8): VGG16 with `pools` max-pools, 3x3 convs dilated by 4 (256, 64) + ReLU,
    a 3x3 conv to one channel, bilinear (half-pixel) upsampling to `map_stride`."""

    def __init__(self, params, *, pools=4, map_stride=1):
        super().__init__()
        layout = (1,) * pools + (0,) * (5 - pools)
        self.backbone = VGGStages(params["backbone"], arch="vgg16", pools=layout)
        self.back_end = nn.Sequential(
            conv(params["dilated1"], dilation=4),
            nn.ReLU(),
            conv(params["dilated2"], dilation=4),
            nn.ReLU(),
            conv(params["output"]),
        )
        self.map_stride = map_stride

    def forward(self, images):
        x = self.back_end(self.backbone(images)[-1])
        h, w = images.shape[2] // self.map_stride, images.shape[3] // self.map_stride
        if x.shape[2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear")
        return x[:, 0]


class DiscriminatorTwin(nn.Module):
    """ASNet's D1 / D2 (Table 9): four 4x4 stride-2 convs (padding 1) + LeakyReLU, a 4x4 conv
    (padding 2) to one logit per output pixel. Input [N, H, W] maps."""

    def __init__(self, params, *, leaky_slope=0.2):
        super().__init__()
        layers = []
        for i in range(4):
            layers += [
                conv(params[f"conv{i + 1}"], stride=2, padding=1),
                nn.LeakyReLU(leaky_slope),
            ]
        layers.append(conv(params["output"], padding=2))
        self.net = nn.Sequential(*layers)

    def forward(self, maps):
        return self.net(maps[:, None])[:, 0]


# ----------------------------------------------------------------------------------------------
# HRNet (cls_hrnet layout, official module names so that crowdjax's key map fills it).


# conv_bn, Bottleneck and BasicBlock are also the blocks of tests/models/test_hrnet.py's reference.


def conv_bn(c_in, c_out, k, stride, relu):
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


class Bottleneck(nn.Module):
    def __init__(self, c_in, planes):
        super().__init__()
        c_out = 4 * planes
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.downsample = None if c_in == c_out else conv_bn(c_in, c_out, 1, 1, relu=False)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class _HRModule(nn.Module):
    """Branches of basic blocks, then every branch fused into every other (1x1 conv + BN +
    nearest upsampling from a lower resolution, stride-2 3x3 conv-BNs from a higher one)."""

    def __init__(self, channels, blocks):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels
        )
        rows = []
        for i, ci in enumerate(channels):
            row = []
            for j, cj in enumerate(channels):
                if j > i:
                    row.append(conv_bn(cj, ci, 1, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    n = i - j
                    steps = [
                        conv_bn(cj, ci if k == n - 1 else cj, 3, 2, relu=k < n - 1)
                        for k in range(n)
                    ]
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        outs = []
        for i, row in enumerate(self.fuse_layers):
            total = 0
            for j, f in enumerate(row):
                if f is None:
                    z = xs[j]
                elif j > i:
                    z = F.interpolate(f(xs[j]), size=xs[i].shape[2:], mode="nearest")
                else:
                    z = f(xs[j])
                total = total + z
            outs.append(F.relu(total))
        return outs


class HRNetStage3Twin(nn.Module):
    """HRNet truncated after stage 3: [N, 3, H, W] -> the three branches (the lower two
    bilinearly upsampled) and layer1, concatenated at stride 4."""

    def __init__(self, branch_channels, stem_channels, layer1_planes, blocks, stage3_modules):
        super().__init__()
        c0, c1, c2 = branch_channels
        s, p = stem_channels, layer1_planes
        self.conv1, self.bn1 = nn.Conv2d(3, s, 3, 2, 1, bias=False), nn.BatchNorm2d(s)
        self.conv2, self.bn2 = nn.Conv2d(s, s, 3, 2, 1, bias=False), nn.BatchNorm2d(s)
        self.layer1 = nn.Sequential(*[Bottleneck(s if b == 0 else 4 * p, p) for b in range(blocks)])
        first = None if 4 * p == c0 else conv_bn(4 * p, c0, 3, 1, relu=True)
        self.transition1 = nn.ModuleList(
            [first, nn.Sequential(conv_bn(4 * p, c1, 3, 2, relu=True))]
        )
        self.stage2 = nn.Sequential(_HRModule((c0, c1), blocks))
        self.transition2 = nn.ModuleList(
            [None, None, nn.Sequential(conv_bn(c1, c2, 3, 2, relu=True))]
        )
        self.stage3 = nn.Sequential(
            *[_HRModule((c0, c1, c2), blocks) for _ in range(stage3_modules)]
        )

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        layer1 = x = self.layer1(x)
        xs = [x if t is None else t(x) for t in self.transition1]
        ys = self.stage2(xs)
        ys = self.stage3([ys[0], ys[1], self.transition2[2](ys[-1])])
        size = ys[0].shape[2:]
        up = [F.interpolate(y, size=size, mode="bilinear") for y in ys[1:]]
        return torch.cat([ys[0], *up, layer1], 1)

    def load_crowdjax(self, params, batch_stats):
        """Copies HRNetStage3 variables in (every twin tensor must be filled: strict)."""
        state = {}
        for collection, tree in (("params", params), ("batch_stats", batch_stats)):
            for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
                value = _tensor(leaf)
                if path[-1] == "kernel":
                    value = value.permute(3, 2, 0, 1)
                state[hrnet_torch_key(path, collection)] = value
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"HRNet twin: missing {missing}, unexpected {unexpected}")


class DKPNetTwin(nn.Module):
    """DKPNet: HRNet stage 3, a 1x1 conv + BN + ReLU to `channels`, channel attention ("none":
    y = 1; "se": y = sigmoid(FC(ReLU(FC(mean(x)))))), head 1x1 conv + BN + ReLU (x2) and a 1x1
    conv to the density at stride 4."""

    def __init__(self, variables, *, hrnet: dict, attention: str, bn_momentum=0.1):
        super().__init__()
        if attention not in ("none", "se"):
            raise ValueError(f"the DKPNet twin has attention none/se, not {attention!r}")
        params, stats = variables["params"], variables["batch_stats"]
        self.backbone = HRNetStage3Twin(**hrnet)
        self.backbone.load_crowdjax(params["backbone"], stats["backbone"])
        self.reduce = conv(params["reduce"])
        self.reduce_bn = batch_norm(params["reduce_bn"], stats["reduce_bn"], bn_momentum)
        self.se = None
        if attention == "se":
            self.se = nn.Sequential(
                linear(params["se"]["fc"]), nn.ReLU(), linear(params["se"]["out"]), nn.Sigmoid()
            )
        names = sorted(k for k in params if k.startswith("head_") and not k.startswith("head_bn"))
        self.head = nn.ModuleList(conv(params[k]) for k in names)
        self.head_bn = nn.ModuleList(
            batch_norm(params[f"head_bn_{i}"], stats[f"head_bn_{i}"], bn_momentum)
            for i in range(len(names))
        )
        self.out = conv(params["out"])

    def forward(self, images):
        x = F.relu(self.reduce_bn(self.reduce(self.backbone(images))))
        if self.se is not None:
            x = x * self.se(x.mean((2, 3)))[:, :, None, None]
        for layer, bn in zip(self.head, self.head_bn, strict=True):
            x = F.relu(bn(layer(x)))
        return self.out(x)[:, 0]
