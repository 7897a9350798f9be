"""Where the CPU time of the VGG19 (UOT / Bayesian-loss) train step goes, crowdjax vs PyTorch.

Two modes, both timing crowdjax with the convolution implementations of `crowdjax.models.conv`
named by `--impls` ("xla": XLA's convolution, the code before that module; "auto", the default;
"matmul_grad") and a PyTorch twin in one process, interleaved (round-robin repeats, minimum of
each), at the same thread count:

  python benchmarks/conv_profile.py --mode=layers --size=512   # every VGG19 conv: fwd, dx, dkernel
  python benchmarks/conv_profile.py --mode=gemm --size=512     # a kernel gradient's products
  python benchmarks/conv_profile.py --mode=step --size=512     # the train step and predict

`--mode=step` runs the regressor's train step (value_and_grad of the pixel-wise L2 density loss +
Adam, jitted with the state donated, as the trainer does) and the forward pass at `--predict`
size, and the same in PyTorch (same layers, same initial weights, `torch.set_num_threads`).

Measured on the 2-core AMD EPYC CI machine (2 threads, shared: load average 14-25; seconds,
minimum of 3-4 interleaved repeats), kernel gradient of single VGG19 convs, batch 2:

  input  layer (map, C_in->C_out)  XLA conv  one matmul per tap  1-D conv over rows  torch
  512    512x512, 64->64            3.18      3.89                3.36                1.46
  512    256x256, 64->128           5.14      1.24                1.21                0.85
  512    256x256, 128->128          9.16      2.22                2.07                1.49
  512    128x128, 128->256          1.78      0.67                0.56                0.60
  512    128x128, 256->256          8.52      2.51
  512    64x64, 256->512            1.95      1.16
  512    64x64, 512->512            4.33      2.26
  512    64x64, 512->256 (head)     0.99      1.60
  256    256x256, 64->64            2.22      2.28
  256    128x128, 128->128          2.16      0.98
  256    64x64, 256->256            0.39      0.42                0.57                0.76
  256    32x32, 512->512            0.34      0.33                0.48                0.60

Wall times on that machine are noisy: two identical programs timed in one job (a bug made "auto"
trace XLA's convolution) gave 9.8 s and 13.4 s for the 256 x 256 step, hence the CPU-time column
and the need for a quiet machine for the step numbers.

Splitting the pixel sum of each tap's matmul into 2-32 batched parts (to give the matmul more
parallel work) changed nothing beyond the noise. "auto" takes the matmul where it won: C_in >= 64,
C_out >= 128 and an output gradient of 2**22 elements or more (`conv.matmul_grad_pays`).
The forward and input-gradient convolutions of XLA were at or below torch's at every layer. XLA
CPU flags tried on the same layers (--xla_cpu_use_onednn, --xla_cpu_use_xnnpack=false,
{xnn,ynn,onednn}_fusion_type=+individual_convolution): identical results and times within the
noise (no effect on the convolutions, which run as YNNPACK fusions). An im2col matrix (all 9 taps
concatenated, one matmul) was slower than the per-tap matmuls (the 9x copy), and so was a
channels-first copy of the input (each tap's product [C, N] x [N, O]: 1.3x their time over the
VGG19 layers at 256 x 256, batch 2; the taps' strided slices).

`--mode=gemm` (idle machine, 512 x 512, batch 2): one tap's product runs at 14-159 GFLOP/s as an
XLA dot and 10-189 as torch.mm; the nine products of every layer take 4.19 s in XLA, 2.91 s in
torch, and torch's whole kernel gradients 2.50 s: the matmul form cannot reach torch on XLA's dot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crowdjax.methods.uot.model import UOTRegressor  # noqa: E402
from crowdjax.models import conv  # noqa: E402
from crowdjax.models.vgg import VGG_STAGES  # noqa: E402


def interleaved_min(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Min wall time and min process CPU time (all threads) of each zero-argument callable, run
    round-robin after one warm-up each. On a shared, oversubscribed machine the CPU time is the
    steadier of the two (wall time counts the waits for a core)."""
    for fn in fns.values():
        fn()
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu


# ----------------------------------------------------------------------------------------------
# Layer mode.


def vgg19_layers(size: int):
    """(map size, C_in, C_out) of the 16 convs of VGG19 at a `size` x `size` input."""
    out, c_in = [], 3
    for stage, channels in enumerate(VGG_STAGES["vgg19"]):
        for c in channels:
            out.append((size >> stage, c_in, c))
            c_in = c
    return out


def layer_fns(x, w, g, impl):
    def f(x, w):
        return conv.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    with conv.conv_impl(impl):
        fwd = jax.jit(f).lower(x, w).compile()
        dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: f(x, w), x)[1](g)[0]).lower(x, w, g)
        dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: f(x, w), w)[1](g)[0]).lower(x, w, g)
        dx, dw = dx.compile(), dw.compile()
    return {
        f"{impl} fwd": lambda: fwd(x, w).block_until_ready(),
        f"{impl} dx": lambda: dx(x, w, g).block_until_ready(),
        f"{impl} dw": lambda: dw(x, w, g).block_until_ready(),
    }


def torch_layer_fns(x, w, g):
    import torch  # Optional dependency of the benchmark only.

    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()
    grad = torch.nn.grad
    with torch.no_grad():
        return {
            "torch fwd": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
            "torch dx": lambda: grad.conv2d_input(xt.shape, wt, gt, padding=1),
            "torch dw": lambda: grad.conv2d_weight(xt, wt.shape, gt, padding=1),
        }


def profile_layers(size: int, batch: int, repeats: int, impls) -> None:
    totals = {}
    for h, c_in, c_out in vgg19_layers(size):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, h, h, c_in), np.float32)
        w = rng.standard_normal((3, 3, c_in, c_out), np.float32) * 0.05
        g = rng.standard_normal((batch, h, h, c_out), np.float32)
        fns = {}
        for impl in impls:
            fns.update(layer_fns(jnp.asarray(x), jnp.asarray(w), jnp.asarray(g), impl))
        fns.update(torch_layer_fns(x, w, g))
        best, _ = interleaved_min(fns, repeats)
        for k, v in best.items():
            totals[k] = totals.get(k, 0.0) + v
        print(f"{h}x{h} {c_in}->{c_out}: " + " | ".join(f"{k} {v:.3f}" for k, v in best.items()))
    print("sum over layers: " + " | ".join(f"{k} {v:.2f}" for k, v in totals.items()))


# ----------------------------------------------------------------------------------------------
# GEMM mode: the matrix products a kernel gradient is made of, XLA's against PyTorch's.


def gemm_fns(x, g, batch: int, h: int) -> dict:
    """One tap's product X^T dY as an XLA dot and as torch.mm; torch's whole kernel gradient."""
    import torch  # Optional dependency of the benchmark only.

    xj, gj = jnp.asarray(x), jnp.asarray(g)
    dot = jax.jit(lambda a, b: jnp.einsum("nc,nd->cd", a, b)).lower(xj, gj).compile()
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    x4 = torch.from_numpy(x.reshape(batch, h, h, -1)).permute(0, 3, 1, 2).contiguous()
    g4 = torch.from_numpy(g.reshape(batch, h, h, -1)).permute(0, 3, 1, 2).contiguous()
    shape = (g.shape[1], x.shape[1], 3, 3)

    def torch_dw():
        with torch.no_grad():
            return torch.nn.grad.conv2d_weight(x4, shape, g4, padding=1)

    return {
        "xla dot": lambda: dot(xj, gj).block_until_ready(),
        "torch mm": lambda: torch.mm(xt.t(), gt),
        "torch dw": torch_dw,
    }


def profile_gemms(size: int, batch: int, repeats: int) -> None:
    """Per VGG19 layer, one kernel tap's product dW_tap = X^T dY ([C_in, N] x [N, C_out], N =
    batch x pixels: the reduction the kernel gradient does nine times) as an XLA dot and as
    torch.mm, and torch's whole kernel gradient (conv2d_weight). If nine XLA products already
    take longer than torch's whole kernel gradient, no arrangement of the kernel gradient into
    XLA matmuls can reach torch: the gap is in the product's library (XLA:CPU's dot against
    torch's oneDNN / MKL), not in the convolution's form."""
    totals = {}
    for h, c_in, c_out in vgg19_layers(size):
        rng = np.random.default_rng(0)
        n = batch * h * h
        x = rng.standard_normal((n, c_in), np.float32)
        g = rng.standard_normal((n, c_out), np.float32)
        best, _ = interleaved_min(gemm_fns(x, g, batch, h), repeats)
        best["9 xla dots"] = 9 * best["xla dot"]
        best["9 torch mms"] = 9 * best["torch mm"]
        for k, v in best.items():
            totals[k] = totals.get(k, 0.0) + v
        gflops = 2 * n * c_in * c_out / 1e9
        rates = f"xla {gflops / best['xla dot']:.0f}, torch {gflops / best['torch mm']:.0f} GFLOP/s"
        print(
            f"{h}x{h} {c_in}->{c_out}: "
            + " | ".join(f"{k} {v:.3f}" for k, v in best.items())
            + f" | one product: {rates}"
        )
    print("sum over layers: " + " | ".join(f"{k} {v:.2f}" for k, v in totals.items()))


# ----------------------------------------------------------------------------------------------
# Step mode.


def l2_loss(density, target):
    return jnp.mean(jnp.sum((density - target) ** 2, axis=(1, 2)))


def crowdjax_fns(impl, params, images, target, predict_images, lr=1e-5):
    """The jitted train step (state donated) and predict of the regressor with `impl` convs."""
    model = UOTRegressor()
    optimizer = optax.adam(lr)

    def step(state, images, target):
        params, opt_state = state
        loss, grads = jax.value_and_grad(
            lambda p: l2_loss(model.apply({"params": p}, images), target)
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    with conv.conv_impl(impl):
        state = (params, optimizer.init(params))
        step = jax.jit(step, donate_argnums=(0,)).lower(state, images, target).compile()
        predict = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, predict_images)
        predict = predict.compile()
    box = {"state": jax.tree.map(jnp.copy, state)}

    def train():
        box["state"], loss = step(box["state"], images, target)
        loss.block_until_ready()

    return {
        f"{impl} step": train,
        f"{impl} predict": lambda: predict(params, predict_images).block_until_ready(),
    }


def torch_twin(params):
    """The regressor in PyTorch with the crowdjax initial weights."""
    import torch  # Optional dependency of the benchmark only.

    layers = []
    backbone = params["backbone"]
    names = [n for n in backbone if n.startswith("conv")]
    names.sort(key=lambda n: tuple(int(v) for v in n[4:].split("_")))
    for name in names:
        k = np.asarray(backbone[name]["kernel"])
        conv2d = torch.nn.Conv2d(k.shape[2], k.shape[3], 3, padding=1)
        layers += [conv2d, torch.nn.ReLU()]
        conv2d.weight.data = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
        conv2d.bias.data = torch.from_numpy(np.asarray(backbone[name]["bias"]).copy())
        if name.endswith(f"_{len(VGG_STAGES['vgg19'][int(name[4]) - 1])}") and name[4] != "5":
            layers.append(torch.nn.MaxPool2d(2))
    head = []
    for name in ("reg_conv1", "reg_conv2", "reg_out"):
        k = np.asarray(params[name]["kernel"])
        conv2d = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], padding=k.shape[0] // 2)
        conv2d.weight.data = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
        conv2d.bias.data = torch.from_numpy(np.asarray(params[name]["bias"]).copy())
        head += [conv2d] + ([torch.nn.ReLU()] if name != "reg_out" else [])

    class Regressor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(*layers)
            self.head = torch.nn.Sequential(*head)

        def forward(self, x):
            x = self.features(x)
            x = torch.nn.functional.interpolate(
                x, scale_factor=2, mode="bilinear", align_corners=True
            )
            return torch.abs(self.head(x))[:, 0]

    return Regressor()


def torch_fns(params, images, target, predict_images, lr=1e-5):
    import torch  # Optional dependency of the benchmark only.

    model = torch_twin(params)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(target))
    xp = torch.from_numpy(np.asarray(predict_images)).permute(0, 3, 1, 2).contiguous()

    def train():
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).sum((1, 2)).mean()
        loss.backward()
        optimizer.step()

    def predict():
        with torch.no_grad():
            model(xp)

    return {"torch step": train, "torch predict": predict}


def check_twin(params, images):
    """The PyTorch twin computes the crowdjax regressor's density (so both time the same net)."""
    import torch  # Optional dependency of the benchmark only.

    want = UOTRegressor().apply({"params": params}, images)
    with torch.no_grad():
        got = torch_twin(params)(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def profile_step(size, batch, predict_hw, repeats, impls):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32))
    target = jnp.asarray(rng.uniform(0, 0.01, (batch, size // 8, size // 8)).astype(np.float32))
    predict_images = jnp.asarray(rng.standard_normal((1, *predict_hw, 3), np.float32))
    params = UOTRegressor().init(jax.random.key(0), images[:1, :64, :64])["params"]
    check_twin(params, images[:1, :64, :64])
    fns = {}
    for impl in impls:
        fns.update(crowdjax_fns(impl, params, images, target, predict_images))
    fns.update(torch_fns(params, images, target, predict_images))
    wall, cpu = interleaved_min(fns, repeats)
    print(f"VGG19 regressor, train {size}x{size} batch {batch}, predict {predict_hw}:")
    for k in wall:
        print(f"  {k}: wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s")
    for what in ("step", "predict"):
        for label, best in (("wall", wall), ("CPU", cpu)):
            t = best[f"torch {what}"]
            ratios = ", ".join(f"{impl} {best[f'{impl} {what}'] / t:.2f}" for impl in impls)
            print(f"  {what}, crowdjax / torch {label} time: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("layers", "gemm", "step"), default="step")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--predict", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--impls",
        nargs="+",
        default=("xla", "auto"),
        choices=conv.CONV_IMPLS,
        help="crowdjax convolution implementations to time (crowdjax.models.conv)",
    )
    args = parser.parse_args()
    import torch  # Optional dependency of the benchmark only.

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    if args.mode == "layers":
        profile_layers(args.size, args.batch, args.repeats, args.impls)
    elif args.mode == "gemm":
        profile_gemms(args.size, args.batch, args.repeats)
    else:
        profile_step(args.size, args.batch, tuple(args.predict), args.repeats, args.impls)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
