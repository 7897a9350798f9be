"""Benchmark: jitted UOT loss (solve + gradient w.r.t. the density) against a PyTorch reference.

Usage::

    python benchmarks/uot_loss.py                   # B = 8, 64 x 64, M in {100, 500, 2000}
    python benchmarks/uot_loss.py --points 500 --repeats 5 --density smooth

Problem: B images, an H x W density at stride 8 of a 512-pixel crop (coord_scale 512), M points
uniform in the crop, eps = 0.01, rho = 1, l2 cost, KL penalty. Densities: "random" (i.i.d. gamma,
total about M, unrelated to the points: a hard problem), "smooth" (the points blurred with a
Gaussian of 1.5 output pixels times noise in [0.7, 1.3]: a trained-network-like density) or
"flat" (about 1e-3 per pixel: an untrained network; the potentials travel far).

The PyTorch reference is the reference code's algorithm, per image: ``beta`` a parameter,
``torch.optim.LBFGS(lr=1, max_iter=20, line_search_fn="strong_wolfe", tolerance_grad=tol)``
with a closure computing ``-G``, then ``G(beta.detach(); u)`` and backward to the density. Both
sides stop at 20 iterations or ``max |dG/dbeta| <= tol``; the script prints the time (minimum
over repeats, after warm-up), the ratio, and how converged each side is (mean over images of
``max_j |dG/dbeta_j|`` and of G) so that the comparison is at equal work.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import gaussian_filter

from crowdjax.losses.uot import UOTOptions, uot_loss, uot_solve

EPS, RHO, STRIDE, SCALE, ITERS = 0.01, 1.0, 8, 512.0, 20


def make_problem(batch, size, num_points, kind, seed=0):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size * STRIDE, (batch, num_points, 2)).astype(np.float32)
    if kind == "random":
        density = rng.gamma(1.0, num_points / size**2, (batch, size, size))
    elif kind == "flat":
        density = rng.uniform(0.5e-3, 1.5e-3, (batch, size, size))
    else:
        density = np.zeros((batch, size, size))
        for b in range(batch):
            cells = np.minimum((points[b] // STRIDE).astype(int), size - 1)
            np.add.at(density[b], (cells[:, 1], cells[:, 0]), 1.0)
            density[b] = gaussian_filter(density[b], 1.5) * rng.uniform(0.7, 1.3, (size, size))
    return density.astype(np.float32), points, np.ones((batch, num_points), bool)


def uot_options(tol) -> UOTOptions:
    return UOTOptions(epsilon=EPS, rho=RHO, max_iters=ITERS, tol=tol)


def jax_step(tol):
    def total(density, points, mask):
        options = uot_options(tol)
        loss = uot_loss(density, points, mask, coord_scale=SCALE, stride=STRIDE, options=options)
        return loss.sum()

    return jax.jit(jax.value_and_grad(total))


def torch_step(density, points, tol):
    """The reference algorithm, one image at a time. Returns (loss, grad, max|dG/dbeta|, G)."""
    import torch

    b, h, w = density.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pix = (torch.stack([xs.flatten(), ys.flatten()], -1).float() + 0.5) * STRIDE / SCALE
    dens = torch.tensor(density, requires_grad=True)
    total, gnorms, values = 0.0, [], []
    for i in range(b):
        cost = torch.cdist(pix, torch.tensor(points[i]) / SCALE)
        u = dens[i].reshape(-1)

        def semi_dual(beta, u=u, cost=cost):
            alpha = -EPS * torch.logsumexp((beta[None, :] - cost) / EPS, dim=1)
            return (
                -(u * RHO * torch.expm1(-alpha / RHO)).sum()
                - (RHO * torch.expm1(-beta / RHO)).sum()
            )

        beta = torch.zeros(cost.shape[1], requires_grad=True)
        opt = torch.optim.LBFGS(
            [beta], lr=1, max_iter=ITERS, line_search_fn="strong_wolfe", tolerance_grad=tol
        )

        def closure(beta=beta, opt=opt, u=u, semi_dual=semi_dual):
            opt.zero_grad()
            neg = -semi_dual(beta, u.detach())
            neg.backward(inputs=[beta])
            return neg

        opt.step(closure)
        value = semi_dual(beta.detach(), u)
        total = total + value
        check = beta.detach().clone().requires_grad_(True)
        semi_dual(check, u.detach()).backward(inputs=[check])
        gnorms.append(float(check.grad.abs().max()))
        values.append(float(value.detach()))
    total.backward()
    return float(total.detach()), dens.grad.numpy(), np.mean(gnorms), np.mean(values)


def timed(fn, repeats):
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--points", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--density", choices=["random", "smooth", "flat"], default="random")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--torch_threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch thread counts to try; the fastest is reported (2 can lose under load).",
    )
    parser.add_argument(
        "--flush_denormal",
        action="store_true",
        help="torch.set_flush_denormal(True) (XLA on CPU flushes denormals).",
    )
    args = parser.parse_args()
    try:
        import torch

        torch.set_flush_denormal(args.flush_denormal)
    except ImportError:
        torch = None
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; B={args.batch}, "
        f"{args.size}x{args.size}, density={args.density}, tol={args.tol}, eps={EPS}"
    )
    step = jax_step(args.tol)
    for m in args.points:
        density, points, mask = make_problem(args.batch, args.size, m, args.density)
        d, p, k = jnp.asarray(density), jnp.asarray(points), jnp.asarray(mask)
        jax.block_until_ready(step(d, p, k))  # compile + warm-up
        t_jax, (loss, grad) = timed(
            lambda d=d, p=p, k=k: jax.block_until_ready(step(d, p, k)), args.repeats
        )
        options = uot_options(args.tol)
        sol = uot_solve(d, p, k, coord_scale=SCALE, stride=STRIDE, options=options)
        gmax = float(jnp.abs(sol.grad).max(-1).mean())
        line = (
            f"M={m:5d}  jax {t_jax:7.3f}s  iters {float(sol.num_iters.mean()):4.1f} "
            f"evals {int(sol.num_evals)} exp-passes {int(sol.num_anchors)} "
            f"|dG/dbeta| {gmax:.1e} G {float(loss) / args.batch:.5f}"
        )
        if torch is not None:
            t_torch, threads = np.inf, None
            for n in args.torch_threads:
                torch.set_num_threads(n)
                torch_step(density, points, args.tol)  # warm-up
                t_n, (_, t_grad, t_gmax, t_g) = timed(
                    lambda density=density, points=points: torch_step(density, points, args.tol),
                    args.repeats,
                )
                t_torch, threads = min((t_torch, threads), (t_n, n))
            grad_diff = np.abs(np.asarray(grad) - t_grad).max() / np.abs(t_grad).max()
            line += (
                f" | torch {t_torch:7.3f}s ({threads} thr) |dG/dbeta| {t_gmax:.1e} G {t_g:.5f}"
                f" | d(grad) {grad_diff:.0e} | ratio {t_torch / t_jax:5.1f}x"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
