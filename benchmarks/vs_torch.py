"""crowdjax against PyTorch on the same networks, in one process, at the same thread count.

For each method's network, an independent PyTorch twin (`benchmarks/torch_twins.py`) takes
crowdjax's initialised parameters; both then run

  * train: one training step (forward, backward, Adam update) on a random batch with a pixel-wise
    L2 density loss on both sides, mean over the batch of sum over pixels of (out - target)^2
    (the methods' own losses differ in cost between the two code bases: this compares the
    networks). crowdjax's step is `crowdjax.run.default_train_step` jitted with the state
    donated, as `crowdjax.run.Setup` builds it (one device: no shardings needed), with the
    optimizer built by `Optimizers.from_config` from `config.optimizer` set to Adam (lr 1e-5,
    no weight decay); PyTorch: `torch.optim.Adam(lr=1e-5)`.
  * predict: the network's forward in inference mode (crowdjax: the jitted `model.apply` that the
    method's `predict_fn` starts with; PyTorch: `eval()` under `torch.inference_mode()`).

Before a timing counts, the two sides must agree: predict outputs allclose; the first step's
losses equal to 1e-3 and the loss drops of the first two steps within 10% (same gradients, same
Adam update). Timing: warm-up (crowdjax's first call compiles; shown as "first call s"), then
`--repeats` interleaved runs, crowdjax then PyTorch; the table gives the minimum of each.

Networks (config; what is timed):
  uot        VGG19 regressor of Bayesian loss / UOT (configs/uot_shb.py)
  autoscale  AutoScale's VGG16-FPN, regression head, no L2S (configs/autoscale_reg_shb.py)
  l2sm       L2SM's SPN, no scale map / re-prediction (configs/l2sm_sha.py)
  asnet_g    ASNet's generator (configs/asnet_sha_to_shb.py)
  asnet_d1   ASNet's global discriminator on whole density maps
  asnet_d2   ASNet's local discriminator on the S x S patches of a map (batch x S^2 patches)
  dkpnet     DKPNet: truncated HRNet-W40 + head, SE attention (deterministic, so the losses can
             be compared; VA's sampled latent would differ between the two sides), at width 0.5
             by default (configs/dkpnet_va_shanghaitech.py:cpu's width; 1.0 with --width=1)

Default works (`--sizes` replaces them for every network): train at the paper's crop, batch 1 on
a CPU (UOT, AutoScale: SHB's 512 x 512; L2SM trains on whole images: 512 x 512; ASNet: 512 x 512,
D1 on a batch of 4 maps, D2 on their 4 x 4 patches, 64 of 128 x 128; DKPNet: 400 x 400), and
predict on a whole 1024 x 768 (W x H) test image, batch 1. `--quick`: width 1/8, train 128 x 128,
predict 128 x 192, one repeat, DKPNet's HRNet with one block per branch and one stage-3 module.

Threads: `--threads=N` pins the process to N of its CPUs (os.sched_setaffinity, before JAX
starts its CPU client, whose thread pool takes the CPUs it may run on) and sets
`torch.set_num_threads(N)`; default: every CPU the process may use.
`--device=cuda` (benchmarks/accelerator.sh) runs the twins on torch's GPU, beside JAX on its
default device (then --threads is not used).

  python benchmarks/vs_torch.py                              # defaults below, ~12 min on 2 cores
  python benchmarks/vs_torch.py --quick                      # smoke: tiny widths and sizes
  python benchmarks/vs_torch.py --networks=uot,l2sm --repeats=5 --json=out.json
  python benchmarks/vs_torch.py --sizes=train:256x256:2,predict:768x1024:1 --width=0.5
  python benchmarks/vs_torch.py --override model.dtype=bfloat16   # any config field (repeatable;
                                                                  # no dot: config.model.<key>)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import os
import platform
import sys
import time
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax._src import xla_bridge  # backends_are_initialized: has --threads come too late?

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (after crowdjax: the optional extra is needed from here on)

from benchmarks import torch_twins  # noqa: E402
from configs import (  # noqa: E402
    asnet_sha_to_shb,
    autoscale_reg_shb,
    dkpnet_va_shanghaitech,
    l2sm_sha,
    uot_shb,
)
from crowdjax import registry, run  # noqa: E402
from crowdjax.methods.dkpnet.method import hrnet_settings  # noqa: E402
from crowdjax.optimizers import Optimizers, default_optimizer_config  # noqa: E402

LEARNING_RATE = 1e-5
INIT_SHAPE = (64, 64)  # Parameter shapes do not depend on the input size: initialise small.
PREDICT_RTOL = 2e-3
LOSS_RTOL = 1e-3
DROP_RTOL = 0.1


@dataclasses.dataclass(frozen=True)
class Work:
    """One timed job: "train" or "predict" on [batch, height, width(, 3)] inputs."""

    kind: str
    height: int
    width: int
    batch: int

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"


def parse_works(spec: str) -> tuple[Work, ...]:
    """ "train:512x512:1,predict:768x1024:1" (kind:HxW:batch) -> Works."""
    works = []
    for item in spec.split(","):
        try:
            kind, size, batch = item.split(":")
            h, w = (int(s) for s in size.lower().split("x"))
            work = Work(kind, h, w, int(batch))
        except ValueError as e:
            raise SystemExit(f"--sizes: bad entry {item!r} (want kind:HxW:batch): {e}") from None
        if kind not in ("train", "predict"):
            raise SystemExit(f"--sizes: kind must be train or predict, got {kind!r} in {item!r}")
        works.append(work)
    return tuple(works)


# ----------------------------------------------------------------------------------------------
# The networks.


@dataclasses.dataclass(frozen=True)
class Network:
    """A crowdjax network and its twin.

    Attributes:
      get_config: () -> the method's paper config, before the benchmark's settings.
      works: default works (paper crop / a whole test image, sized to finish on a CPU).
      width: default model.width.
      subtree: the params key of the timed part (ASNet's "generator", "d1", "d2"); None: all.
      call: (module, inputs) -> the network's output, for `model.apply(..., method=call)`
        (None: `model.apply(variables, inputs)`).
      output: picks the [B, h, w] map from the apply's result.
      twin: (numpy variables of the timed part, config) -> the torch twin.
      maps: the inputs are [B, H, W] density maps (discriminators), not images.
      batch_norm: train mode updates `batch_stats` (DKPNet).
      quick_overrides: config overrides of `--quick` (a smaller graph compiles faster).
    """

    get_config: Callable
    works: tuple[Work, ...]
    twin: Callable
    width: float = 1.0
    subtree: str | None = None
    call: Callable | None = None
    output: Callable = lambda out: out
    maps: bool = False
    batch_norm: bool = False
    quick_overrides: tuple[str, ...] = ()


def _asnet_twin_g(variables, config):
    return torch_twins.GeneratorTwin(
        variables["params"], pools=int(config.model.pools), map_stride=config.model.map_stride
    )


def _asnet_twin_d(variables, config):
    return torch_twins.DiscriminatorTwin(
        variables["params"], leaky_slope=float(config.model.leaky_slope)
    )


def _dkpnet_twin(variables, config):
    settings = dict(hrnet_settings(config))
    settings.pop("remat", None)  # Recomputation in the backward pass: the same function.
    return torch_twins.DKPNetTwin(variables, hrnet=settings, attention=config.dkpnet.attention)


def _no_l2s(config):
    config.model.use_l2s = False  # The FPN alone (the ablation's baseline network).
    return config


def _no_l2sm(config):
    config.model.use_l2sm = False  # SPN alone.
    return config


def _dkpnet_config():
    config = dkpnet_va_shanghaitech.get_config()
    config.dkpnet.attention = "se"
    return config


TRAIN_512 = Work("train", 512, 512, 1)
PREDICT_IMAGE = Work("predict", 768, 1024, 1)  # A whole 1024 x 768 (W x H) test image.

NETWORKS: dict[str, Network] = {
    "uot": Network(
        uot_shb.get_config,
        (TRAIN_512, PREDICT_IMAGE),
        lambda v, c: torch_twins.UOTTwin(v["params"], activation=c.model.activation),
    ),
    "autoscale": Network(
        lambda: _no_l2s(autoscale_reg_shb.get_config()),
        (TRAIN_512, PREDICT_IMAGE),
        lambda v, c: torch_twins.AutoScaleTwin(v["params"]["fpn"]),
        output=lambda out: out["density"],
    ),
    "l2sm": Network(
        lambda: _no_l2sm(l2sm_sha.get_config()),
        (TRAIN_512, PREDICT_IMAGE),
        lambda v, c: torch_twins.SPNTwin(v["params"]),
        output=lambda out: out["density"],
    ),
    "asnet_g": Network(
        asnet_sha_to_shb.get_config,
        (TRAIN_512, PREDICT_IMAGE),
        _asnet_twin_g,
        subtree="generator",
        call=lambda module, x: module.generator(x),
    ),
    "asnet_d1": Network(
        asnet_sha_to_shb.get_config,
        (Work("train", 512, 512, 4),),
        _asnet_twin_d,
        subtree="d1",
        call=lambda module, x: module.d1(x),
        maps=True,
    ),
    "asnet_d2": Network(
        asnet_sha_to_shb.get_config,
        (Work("train", 128, 128, 64),),  # The 4 x 4 patches of a batch of 4 512 x 512 maps.
        _asnet_twin_d,
        subtree="d2",
        call=lambda module, x: module.d2(x),
        maps=True,
    ),
    "dkpnet": Network(
        _dkpnet_config,
        (Work("train", 400, 400, 1), Work("predict", 768, 1024, 1)),
        _dkpnet_twin,
        width=0.5,
        output=lambda out: out["density"],
        batch_norm=True,
        quick_overrides=("model.hrnet_blocks=1", "model.hrnet_stage3_modules=1"),
    ),
}

QUICK_WIDTH = 1 / 8
QUICK_WORKS = (Work("train", 128, 128, 1), Work("predict", 128, 192, 1))


def apply_overrides(config, overrides) -> None:
    """`key=value` strings onto the config ("model.dtype=bfloat16"; no dot: config.model)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--override wants key=value, got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # A bare word: a string.
        *parents, leaf = key.split(".") if "." in key else ("model", key)
        node = config
        try:
            for p in parents:
                node = node[p]
        except KeyError:
            parent = key.rsplit(".", 1)[0]
            raise SystemExit(f"--override {item!r}: the config has no {parent!r}") from None
        node[leaf] = value


def benchmark_config(network: Network, *, width, overrides):
    """The network's config with the benchmark's settings: imagenet input, Adam, overrides."""
    config = network.get_config()
    config.model.pretrained = ""  # No backbone file: the twin takes the ImageNet input as is.
    config.model.width = network.width if width is None else width
    config.optimizers = ml_collections.ConfigDict()  # One group (ASNet has three).
    config.optimizer = default_optimizer_config(name="adam", learning_rate=LEARNING_RATE)
    apply_overrides(config, overrides)
    return config


# ----------------------------------------------------------------------------------------------
# crowdjax's side.


class CrowdjaxNet:
    """The timed part of a crowdjax model: init, apply and the jitted train step / predict."""

    def __init__(self, network: Network, config, *, variables=None):
        """`variables`: abstract variables (`abstract_variables()`) -> the host arrays both sides
        start from; None: crowdjax's own initialisation (the method's `init_variables`)."""
        self.network = network
        self.config = config
        self.method = registry.get_method(config.method)
        self.model = self.method.make_model(config)
        if network.call is None:
            self._init = functools.partial(
                self.method.init_variables, self.model, config=config, input_shape=INIT_SHAPE
            )
        else:  # Only the timed part (e.g. one ASNet discriminator): a smaller program.
            shape = (1, *INIT_SHAPE) if network.maps else (1, *INIT_SHAPE, 3)
            self._init = lambda rng: self.model.init(
                rng, jnp.zeros(shape, jnp.float32), method=network.call
            )
        if variables is None:
            # An RBG key: XLA compiles threefry's initialisers several times slower on a CPU.
            variables = self._timed_part(jax.jit(self._init)(jax.random.key(0, impl="rbg")))
        else:
            variables = variables(self.abstract_variables())
        # Host copies: each work starts both sides from these (the step donates its state).
        self.initial = jax.device_get(variables)
        self.optimizer = Optimizers.from_config(config, total_steps=1)

    def _timed_part(self, variables) -> dict:
        variables = dict(variables)
        if self.network.subtree:
            return {"params": variables["params"][self.network.subtree]}
        return variables

    def abstract_variables(self) -> dict:
        """Shapes and dtypes of the timed part's variables."""
        return self._timed_part(jax.eval_shape(self._init, jax.random.key(0, impl="rbg")))

    def apply(self, params, model_state, inputs, *, train: bool):
        """(the [B, h, w] output, the new model_state)."""
        network = self.network
        if network.subtree:
            params = {network.subtree: params}
        variables = {"params": params, **model_state}
        kwargs = {} if network.call is None else {"method": network.call}
        if network.batch_norm:
            if train:
                out, new_state = self.model.apply(
                    variables, inputs, train=True, mutable=["batch_stats"], **kwargs
                )
                return network.output(out), {**model_state, **new_state}
            kwargs["train"] = False
        return network.output(self.model.apply(variables, inputs, **kwargs)), model_state

    def loss_fn(self, params, model_state, batch, rng, *, model, config):
        """The pixel-wise L2 density loss, in `run.default_train_step`'s signature."""
        del rng, model, config  # No randomness in the timed networks (DKPNet: SE attention).
        out, new_state = self.apply(params, model_state, batch["inputs"], train=True)
        loss = jnp.mean(jnp.sum(jnp.square(out - batch["target"]), axis=(1, 2)))
        return loss, ({"l2": loss}, new_state)

    def train_step(self):
        """(state, batch) -> (state, metrics), jitted with the state donated."""
        method = types.SimpleNamespace(loss_fn=self.loss_fn)
        step = functools.partial(
            run.default_train_step,
            method=method,
            model=self.model,
            config=self.config,
            optimizer=self.optimizer,
        )
        return jax.jit(step, donate_argnums=(0,))

    def fresh_state(self) -> run.TrainState:
        params, model_state = run.split_variables(jax.device_put(self.initial))
        return run.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=jax.jit(self.optimizer.init)(params),  # One compile, not one per leaf.
            rng=jax.random.key(1),
        )

    def predict(self):
        """(variables, inputs) -> the output in inference mode, jitted."""

        def forward(variables, inputs):
            params, model_state = run.split_variables(variables)
            return self.apply(params, model_state, inputs, train=False)[0]

        return jax.jit(forward)

    def output_shape(self, inputs_shape) -> tuple:
        spec = jax.ShapeDtypeStruct(inputs_shape, jnp.float32)
        params, state = run.split_variables(self.initial)
        return jax.eval_shape(lambda x: self.apply(params, state, x, train=False)[0], spec).shape


# ----------------------------------------------------------------------------------------------
# Timing.


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# The torch side's device: "cpu", or "cuda" (`--device`) next to JAX on its GPU.
TORCH_DEVICE = {"device": "cpu"}


def _torch_device() -> torch.device:
    return torch.device(TORCH_DEVICE["device"])


def _sync():
    if TORCH_DEVICE["device"] == "cuda":
        torch.cuda.synchronize()  # CUDA kernels run asynchronously: time the work, not the launch.


def _nchw(x: np.ndarray) -> torch.Tensor:
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
    return torch.from_numpy(np.array(x)).to(_torch_device())  # A writable copy.


def random_inputs(network: Network, work: Work, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if network.maps:
        return rng.uniform(0, 0.01, (work.batch, work.height, work.width)).astype(np.float32)
    return rng.standard_normal((work.batch, work.height, work.width, 3)).astype(np.float32)


def check_close(name, got, want, *, rtol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: crowdjax output {got.shape} != torch {want.shape}")
    scale = max(np.abs(want).max(), 1e-12)
    err = np.abs(got - want).max() / scale
    if err > rtol:
        raise AssertionError(f"{name}: crowdjax and torch differ by {err:.2e} of max |out|")
    return err


def time_predict(net: CrowdjaxNet, work: Work, repeats: int, name: str) -> dict:
    x = random_inputs(net.network, work)
    twin = net.network.twin(net.initial, net.config).eval().to(_torch_device())
    predict = net.predict()
    variables = jax.device_put(net.initial)
    x_jax, x_torch = jax.device_put(x), _nchw(x)

    def crowdjax_call():
        return jax.block_until_ready(predict(variables, x_jax))

    def torch_call():
        with torch.inference_mode():
            out = twin(x_torch)
        _sync()
        return out

    first, got = _timed(crowdjax_call)
    _, want = _timed(torch_call)
    err = check_close(f"{name} predict {work.size}", got, want.cpu().numpy(), rtol=PREDICT_RTOL)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(_timed(crowdjax_call)[0])
        theirs.append(_timed(torch_call)[0])
    return {"first_call_s": first, "crowdjax_s": ours, "torch_s": theirs, "max_rel_diff": err}


def time_train(net: CrowdjaxNet, work: Work, repeats: int, name: str) -> dict:
    x = random_inputs(net.network, work)
    out_shape = net.output_shape(x.shape)
    target = np.random.default_rng(1).uniform(0, 0.01, out_shape).astype(np.float32)
    step = net.train_step()
    box = {"state": net.fresh_state()}
    batch = jax.device_put({"inputs": x, "target": target})

    def crowdjax_call():
        box["state"], metrics = step(box["state"], batch)
        return float(jax.block_until_ready(metrics)["loss"])

    twin = net.network.twin(net.initial, net.config).train().to(_torch_device())
    adam = torch.optim.Adam(twin.parameters(), lr=LEARNING_RATE)
    x_torch, target_torch = _nchw(x), torch.from_numpy(target).to(_torch_device())

    def torch_call():
        adam.zero_grad(set_to_none=True)
        loss = torch.square(twin(x_torch) - target_torch).sum((1, 2)).mean()
        loss.backward()
        adam.step()
        return float(loss.detach())  # float() waits for the device.

    first, loss1 = _timed(crowdjax_call)
    loss2 = crowdjax_call()
    want1, want2 = torch_call(), torch_call()
    err = check_close(f"{name} train loss {work.size}", loss1, want1, rtol=LOSS_RTOL)
    drop, want_drop = loss1 - loss2, want1 - want2
    if abs(drop - want_drop) > DROP_RTOL * abs(want_drop) + 1e-6 * abs(want1):
        raise AssertionError(
            f"{name} train {work.size}: one Adam step lowers the loss by {drop:.4e} in crowdjax, "
            f"{want_drop:.4e} in torch"
        )
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(_timed(crowdjax_call)[0])
        theirs.append(_timed(torch_call)[0])
    return {
        "first_call_s": first,
        "crowdjax_s": ours,
        "torch_s": theirs,
        "max_rel_diff": err,
        "loss_drop": [drop, want_drop],
    }


def run_network(name, *, works, repeats, width, overrides, quick=False, log=print) -> list[dict]:
    network = NETWORKS[name]
    if quick:
        overrides = [*network.quick_overrides, *overrides]
    config = benchmark_config(network, width=width, overrides=overrides)
    net = CrowdjaxNet(network, config)
    rows = []
    for work in works:
        if network.maps and work.kind == "predict":
            continue  # The discriminators are not used at prediction.
        timer = time_train if work.kind == "train" else time_predict
        result = timer(net, work, repeats, name)
        row = {
            "network": name,
            "work": work.kind,
            "size": work.size,
            "batch": work.batch,
            "width": float(config.model.width),
            **result,
            "crowdjax_min_s": min(result["crowdjax_s"]),
            "torch_min_s": min(result["torch_s"]),
        }
        row["ratio"] = row["crowdjax_min_s"] / row["torch_min_s"]
        log(
            f"  {name} {work.kind} {work.size} x{work.batch}: crowdjax "
            f"{row['crowdjax_min_s']:.3f} s, torch {row['torch_min_s']:.3f} s, "
            f"ratio {row['ratio']:.2f}"
        )
        rows.append(row)
    return rows


def markdown_table(rows) -> str:
    lines = [
        "| network | work | size (HxW) | batch | width | crowdjax s | torch s | crowdjax/torch "
        "| crowdjax first call s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['work']} | {r['size']} | {r['batch']} | {r['width']:g} "
            f"| {r['crowdjax_min_s']:.3f} | {r['torch_min_s']:.3f} | {r['ratio']:.2f} "
            f"| {r['first_call_s']:.1f} |"
        )
    return "\n".join(lines)


def set_threads(threads: int | None) -> int:
    """Pins the process to `threads` CPUs (default: all it may use) and sets torch's threads."""
    cpus = sorted(os.sched_getaffinity(0))
    threads = threads or len(cpus)
    if threads > len(cpus):
        raise SystemExit(f"--threads={threads}, but this process may use {len(cpus)} CPUs")
    if threads < len(cpus) and xla_bridge.backends_are_initialized():
        raise SystemExit("--threads: JAX's CPU client already started with every CPU")
    os.sched_setaffinity(0, cpus[:threads])
    torch.set_num_threads(threads)
    return threads


def main(argv=None, log=print) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after warm-up")
    parser.add_argument("--sizes", help="works for every network: kind:HxW:batch,...")
    parser.add_argument("--width", type=float, help="model.width (default: per network)")
    parser.add_argument("--threads", type=int, help="CPUs for both (default: all available)")
    parser.add_argument("--quick", action="store_true", help="smoke: width 1/8, tiny sizes")
    parser.add_argument("--override", action="append", default=[], help="config key=value")
    parser.add_argument("--json", help="write the rows and the run's facts here")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="torch's device (JAX: its default)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda: this torch has no CUDA device")
    TORCH_DEVICE["device"] = args.device

    names = [n for n in args.networks.split(",") if n]
    unknown = sorted(set(names) - set(NETWORKS))
    if unknown:
        raise SystemExit(f"--networks: unknown {unknown}; valid: {list(NETWORKS)}")
    threads = set_threads(args.threads) if args.device == "cpu" else torch.get_num_threads()
    width = QUICK_WIDTH if args.quick and args.width is None else args.width
    repeats = 1 if args.quick and args.repeats == 3 else args.repeats
    sizes = parse_works(args.sizes) if args.sizes else (QUICK_WORKS if args.quick else None)
    load_before = os.getloadavg()
    log(
        f"threads {threads}, jax {jax.__version__} ({jax.devices()[0].platform}), torch "
        f"{torch.__version__}, load average {load_before[0]:.2f} {load_before[1]:.2f}, "
        f"overrides {args.override}"
    )
    rows = []
    for name in names:
        works = sizes or NETWORKS[name].works
        rows += run_network(
            name,
            works=works,
            repeats=repeats,
            width=width,
            overrides=args.override,
            quick=args.quick,
            log=log,
        )
    load_after = os.getloadavg()
    log(markdown_table(rows))
    log(
        f"min of {repeats} interleaved repeats after warm-up; {threads} threads on "
        f"{platform.processor() or platform.machine()}; load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    if args.json:
        facts = {
            "threads": threads,
            "repeats": repeats,
            "overrides": args.override,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        }
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
