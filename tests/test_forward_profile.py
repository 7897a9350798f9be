"""benchmarks/forward_profile.py: the convolutions it reads from a forward pass are the network's
(counted from the VGG19 layout), and each one's torch call computes what XLA's does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import forward_profile, vs_torch  # noqa: E402  (needs torch)


def _specs(name, *, width, overrides=()):
    network = vs_torch.NETWORKS[name]
    config = vs_torch.benchmark_config(network, width=width, overrides=overrides)
    net = vs_torch.CrowdjaxNet(network, config)
    x = vs_torch.random_inputs(network, vs_torch.Work("predict", 32, 48, 1))
    return forward_profile.conv_specs(jax.make_jaxpr(net.predict())(net.initial, x).jaxpr)


def test_reads_every_convolution_of_the_uot_regressor():
    specs = _specs("uot", width=1 / 8)
    # VGG19's 16 convolutions, then the head's two 3x3 and its 1x1 output.
    assert sum(specs.values()) == 16 + 3
    first = next(s for s in specs if s.lhs[-1] == 3)
    assert first.lhs == (1, 32, 48, 3) and first.rhs == (3, 3, 3, 8) and first.groups == 1


def test_each_convolutions_torch_call_computes_the_same():
    specs = _specs("dkpnet", width=1 / 8, overrides=vs_torch.NETWORKS["dkpnet"].quick_overrides)
    assert any(s.strides == (2, 2) for s in specs) and any(s.rhs[0] == 1 for s in specs)
    for spec in specs:
        ours, theirs, label = forward_profile.conv_pair(spec)
        got = np.asarray(ours())
        want = theirs().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=label)
