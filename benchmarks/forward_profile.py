"""Where a network's forward pass spends its time, crowdjax against its PyTorch twin: each
distinct convolution of the network timed alone in both (XLA's `lax.conv_general_dilated`, torch's
`conv2d`), times the number of its uses, against the whole forward pass of each.

  python benchmarks/forward_profile.py --network=dkpnet [--size=768x1024] [--width=0.5]

The convolutions are read from the jaxpr of crowdjax's forward pass (every
`conv_general_dilated`, its shapes, strides, padding, dilation and groups). "convs" is the sum of
their times; "rest" is the whole pass less that sum: normalisation, activations, resizing,
concatenations and the copies between them, as each framework runs them. If crowdjax's convs
alone are within torch's and its rest is the gap, the gap is in the elementwise work around the
convolutions; if the convs are, it is in the convolution kernels. Both sides run in this process
at the same threads, interleaved, minimum of `--repeats`.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402  (the benchmark's optional dependency)

from benchmarks import vs_torch  # noqa: E402
from benchmarks.conv_profile import interleaved_min  # noqa: E402

ConvSpec = collections.namedtuple(
    "ConvSpec", "lhs rhs strides padding lhs_dilation rhs_dilation groups dimension_numbers"
)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def conv_specs(jaxpr) -> collections.Counter:
    """Every conv_general_dilated of a jaxpr and its sub-jaxprs, counted by its spec."""
    found = collections.Counter()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            p = eqn.params
            found[
                ConvSpec(
                    tuple(eqn.invars[0].aval.shape),
                    tuple(eqn.invars[1].aval.shape),
                    tuple(p["window_strides"]),
                    tuple(tuple(x) for x in p["padding"]),
                    tuple(p["lhs_dilation"]),
                    tuple(p["rhs_dilation"]),
                    p["feature_group_count"],
                    p["dimension_numbers"],
                )
            ] += 1
        for sub in _sub_jaxprs(eqn):
            found.update(conv_specs(sub))
    return found


def conv_pair(spec: ConvSpec):
    """(crowdjax call, torch call, description) of one convolution, NHWC / HWIO in crowdjax."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.lhs, np.float32)
    w = rng.standard_normal(spec.rhs, np.float32) * 0.05
    dn = spec.dimension_numbers
    if tuple(dn.lhs_spec) != (0, 3, 1, 2) or tuple(dn.rhs_spec) != (3, 2, 0, 1):
        raise ValueError(f"not an NHWC / HWIO convolution: {spec}")
    if spec.lhs_dilation != (1, 1):
        raise ValueError(f"input-dilated (transposed) convolution: {spec}")
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    fn = jax.jit(
        lambda x, w: lax.conv_general_dilated(
            x,
            w,
            spec.strides,
            spec.padding,
            rhs_dilation=spec.rhs_dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=spec.groups,
        )
    )
    compiled = fn.lower(xj, wj).compile()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    (top, bottom), (left, right) = spec.padding
    symmetric = top == bottom and left == right  # conv2d pads inside (as the twins do).
    pad = (0, 0, 0, 0) if symmetric else (left, right, top, bottom)
    padding = (top, left) if symmetric else 0

    def torch_call():
        with torch.inference_mode():
            inputs = torch.nn.functional.pad(xt, pad) if any(pad) else xt
            return torch.nn.functional.conv2d(
                inputs,
                wt,
                stride=spec.strides,
                padding=padding,
                dilation=spec.rhs_dilation,
                groups=spec.groups,
            )

    kh, kw, c_in, c_out = spec.rhs
    label = f"{spec.lhs[1]}x{spec.lhs[2]} {c_in * spec.groups}->{c_out} {kh}x{kw}/{spec.strides[0]}"
    return (lambda: compiled(xj, wj).block_until_ready()), torch_call, label


LOOP_CALLS = 10  # Calls per timing of one convolution: a small one takes well under 1 ms.


def looped(fn):
    def call():
        for _ in range(LOOP_CALLS):
            fn()

    return call


def profile(name: str, work: vs_torch.Work, *, width, repeats: int) -> dict:
    network = vs_torch.NETWORKS[name]
    config = vs_torch.benchmark_config(network, width=width, overrides=())
    net = vs_torch.CrowdjaxNet(network, config)
    x = vs_torch.random_inputs(network, work)
    variables = jax.device_put(net.initial)
    predict = net.predict()
    jaxpr = jax.make_jaxpr(predict)(variables, x).jaxpr
    specs = conv_specs(jaxpr)
    twin = network.twin(net.initial, net.config).eval()
    x_jax, x_torch = jax.device_put(x), vs_torch._nchw(x)

    def torch_whole():
        with torch.inference_mode():
            return twin(x_torch)

    whole, _ = interleaved_min(
        {
            "crowdjax": lambda: jax.block_until_ready(predict(variables, x_jax)),
            "torch": torch_whole,
        },
        repeats,
    )
    convs = {"crowdjax": 0.0, "torch": 0.0}
    lines = []
    for spec, count in sorted(specs.items(), key=lambda kv: -np.prod(kv[0].lhs) * kv[0].rhs[-1]):
        ours, theirs, label = conv_pair(spec)
        best, _ = interleaved_min({"crowdjax": looped(ours), "torch": looped(theirs)}, repeats)
        best = {k: v / LOOP_CALLS for k, v in best.items()}
        convs["crowdjax"] += count * best["crowdjax"]
        convs["torch"] += count * best["torch"]
        lines.append((label, count, best["crowdjax"], best["torch"]))
    return {"whole": whole, "convs": convs, "lines": lines, "uses": sum(specs.values())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="dkpnet", choices=sorted(vs_torch.NETWORKS))
    parser.add_argument("--size", default="768x1024", help="HxW of the predicted image")
    parser.add_argument(
        "--width", type=float, default=None, help="model.width (default: the network's)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    threads = vs_torch.set_threads(args.threads)
    h, w = (int(s) for s in args.size.lower().split("x"))
    result = profile(
        args.network, vs_torch.Work("predict", h, w, 1), width=args.width, repeats=args.repeats
    )
    print(
        f"{args.network} predict {h}x{w}, {threads} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| convolution (input map, channels, kernel/stride) | uses | crowdjax s | torch s | ratio |"
    )
    print("|---|---|---|---|---|")
    for label, count, ours, theirs in result["lines"]:
        print(f"| {label} | {count} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.2f} |")
    whole, convs = result["whole"], result["convs"]
    rest = {k: whole[k] - convs[k] for k in whole}
    print("\n| part | crowdjax s | torch s | ratio |\n|---|---|---|---|")
    for part, values in (
        ("whole forward", whole),
        (f"{result['uses']} convs, timed alone", convs),
        ("rest", rest),
    ):
        ours, theirs = values["crowdjax"], values["torch"]
        print(f"| {part} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
