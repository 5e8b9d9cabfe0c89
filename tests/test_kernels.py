"""The fused CPU kernels (common/quant/kernels.cpp) give bit-identical values to the torch expressions they replace,
on random inputs with the awkward values (NaN, +-inf, -0.0, subnormals, ties, range edges), and leave torch's
generator in the same state; training with and without them gives the same weights."""
from __future__ import annotations

import pytest
import torch

from common.quant import kernels
from common.quant.binary import Sign, binarize, binarize_stochastic
from common.quant.dorefa import DorefaGrad, DorefaWeight
from common.quant.fixed import DynamicFixed, to_fixed
from common.quant.qnn import _round_to_grid_
from common.quant.ternary import Ternary, ternarize

pytestmark = pytest.mark.skipif(kernels.ext() is None, reason="the fused kernels could not be built here")

SPECIAL = [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-40, -1e-40, 0.5, -0.5, 1.5, 2.0 ** -15]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (NaN payloads and the sign of zero included)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def both_paths(f, *args, seed: int = 0):
    """f(*args) with the kernels and with the torch path, from the same generator state; also both end states."""
    torch.manual_seed(seed)
    a = f(*args)
    sa = torch.get_rng_state()
    torch.manual_seed(seed)
    with kernels.disabled():
        b = f(*args)
    return a, b, sa, torch.get_rng_state()


def data(n: int, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * scale
    x[: len(SPECIAL)] = torch.tensor(SPECIAL)
    return x


def test_kernels_are_used_on_contiguous_float32_cpu_tensors_only():
    x = torch.randn(8, 4)
    assert kernels.fits(x)
    assert not kernels.fits(x.t())  # a view with strides: the torch path
    assert not kernels.fits(x.double())
    with kernels.disabled():
        assert not kernels.fits(x)
    assert kernels.fits(x)


@pytest.mark.parametrize("n", [1, 5, 623, 624, 625, 1249, 100_003])
def test_rand_like_draws_what_torch_draws(n):
    a, b, sa, sb = both_paths(lambda: kernels.rand_like(torch.empty(n)))
    assert same_bits(a, b) and torch.equal(sa, sb)
    assert float(a.min()) >= 0 and float(a.max()) < 1


def test_rand_like_interleaved_with_torch_draws_keeps_the_stream():
    sizes = [7, 700, 5, 2000, 1, 624, 3]
    torch.manual_seed(3)
    mixed = [kernels.rand_like(torch.empty(k)) if i % 2 else torch.rand(k) for i, k in enumerate(sizes)]
    torch.manual_seed(3)
    plain = [torch.rand(k) for k in sizes]
    assert all(same_bits(a, b) for a, b in zip(mixed, plain))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("wl,fl", [(16, 14), (10, 6), (2, 0), (8, -3), (32, 30), (12, 40)])
@pytest.mark.parametrize("span", ["twos_complement", "symmetric"])
def test_to_fixed_bit_identical(rounding, wl, fl, span):
    x = data(30_011, scale=3.0)
    x[20] = (2 ** (wl - 1) - 1) * 2.0 ** -fl  # the largest value, and one step beyond it
    x[21] = 2 ** (wl - 1) * 2.0 ** -fl
    a, b, sa, sb = both_paths(lambda: to_fixed(x, wl, fl, rounding, span))
    assert same_bits(a, b) and torch.equal(sa, sb)
    out = torch.empty_like(x)  # into a given buffer, and in place
    a, b, *_ = both_paths(lambda: to_fixed(x, wl, fl, rounding, span, out=out).clone())
    assert same_bits(a, b)
    a, b, *_ = both_paths(lambda: to_fixed(x.clone(), wl, fl, rounding, span, out=None))
    y1, y2 = x.clone(), x.clone()
    torch.manual_seed(5)
    to_fixed(y1, wl, fl, rounding, span, out=y1)
    torch.manual_seed(5)
    with kernels.disabled():
        to_fixed(y2, wl, fl, rounding, span, out=y2)
    assert same_bits(y1, y2)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
@pytest.mark.parametrize("wl", [8, 10, 16])
def test_dynamic_fixed_overflow_rates_identical(scale, wl):
    x = data(20_000, scale)
    q = DynamicFixed(wl=wl)
    for il in (-4, 0, 3, 7):
        with kernels.disabled():
            expected = q._overflow_rates(x, il)
        assert q._overflow_rates(x, il) == expected
    top = (2 ** (wl - 1) - 1) * 2.0 ** -(wl - 1 - 3)  # values exactly at both thresholds are counted (>=)
    y = torch.tensor([top, -top, top / 2, -top / 2, top / 2 * (1 - 2 ** -20), 0.0])
    assert q._overflow_rates(y, 3) == (2 / 6, 4 / 6)


@pytest.mark.parametrize("per", ["layer", "filter"])
@pytest.mark.parametrize("shape", [(1024, 784), (10, 1024), (50, 20, 5, 5), (20, 1, 5, 5), (7, 3)])
@pytest.mark.parametrize("t", [0.7, 0.05, 5.0])
def test_ternarize_bit_identical(per, shape, t):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 0.05
    w.view(-1)[:3] = torch.tensor([0.0, -0.0, 1e-40])
    a, b, *_ = both_paths(lambda: ternarize(w, per, t))
    assert same_bits(a, b)
    w.view(-1)[5] = float("nan")
    a, b, *_ = both_paths(lambda: ternarize(w, per, t))
    assert same_bits(a, b)


@pytest.mark.parametrize("H", [1.0, 0.5, 1 / 3, 2.7e-3])
def test_binarize_bit_identical(H):
    x = data(10_007)
    x[:2] = torch.tensor([float("nan"), -float("nan")])
    a, b, *_ = both_paths(lambda: binarize(x, H))
    assert same_bits(a, b)


@pytest.mark.parametrize("f", [lambda x: binarize_stochastic(x, 1.0), lambda x: _round_to_grid_(x * 3, "stochastic"),
                               lambda x: DorefaWeight(1)(x), lambda x: DorefaGrad(4)(x.view(100, -1))])
def test_stochastic_and_scaled_quantizers_bit_identical(f):
    x = torch.randn(100, 301, generator=torch.Generator().manual_seed(4))
    a, b, sa, sb = both_paths(lambda: f(x))
    assert same_bits(a, b) and torch.equal(sa, sb)


@pytest.mark.parametrize("q", [lambda: Sign(), lambda: Ternary(0.7), lambda: DorefaWeight(1)])
def test_straight_through_gradient_unchanged_by_the_kernels(q):
    """The kernels compute values only: the latent weight still gets the estimator's gradient."""
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(6))
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(7))
    grads = []
    for ctx in (kernels.disabled, lambda: torch.enable_grad()):
        with ctx():
            wk = w.clone().requires_grad_()
            (q()(wk) * g).sum().backward()
            grads.append(wk.grad)
    assert grads[1] is not None and same_bits(grads[0], grads[1])


@pytest.mark.parametrize("config", ["gupta/mnist_lenet5_fl14_sr", "lowprec/mnist_lenet5_dfxp", "twn/mnist_lenet5",
                                    "dorefa/mnist_lenet5_w1a2g4", "binaryconnect/mnist_lenet5_stoch"])
def test_training_steps_identical_with_and_without_kernels(config):
    """A few training steps of the shared-setting configs (forward, backward, step, after-step pass) end with the
    same weights and buffers bit for bit."""
    from benchmarks import training as bench

    method = bench.Method("m", "m", config, "W")
    net = bench.NETWORKS["lenet5"]
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(9))
    states = []
    for ctx in (kernels.disabled, lambda: torch.enable_grad()):
        with ctx():
            torch.manual_seed(10)
            module = bench.suite_module(method, net)
            step = bench.make_step(module, x, y)
            for _ in range(3):
                step()
            states.append({k: v.clone() for k, v in module.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        a, b = states[0][k], states[1][k]
        assert torch.equal(a, b) if not a.is_floating_point() or a.dtype != torch.float32 else same_bits(a, b), k


@pytest.mark.parametrize("update_every", [1, 3, 100])
def test_dynamic_fixed_calls_identical_through_range_updates(update_every):
    """Forward and stored-value calls of dynamic fixed point (the fused observe-and-round pass between updates, the
    usual path at updates) give the same values, integer lengths, rates and call counts as the torch path."""
    runs = []
    for ctx in (kernels.disabled, lambda: torch.enable_grad()):
        with ctx():
            q = DynamicFixed(wl=10, max_overflow=1e-2, update_every=update_every, init_il=5).train()
            g = torch.Generator().manual_seed(11)
            outs, ils = [], set()
            for i in range(12):
                x = torch.randn(4000, generator=g) * (0.02 * 4 ** (i % 4))  # ranges that make il move both ways
                outs.append(q(x.requires_grad_()).detach())
                ils.add(int(q.il))
                w = x.detach().clone()
                q.quantize_(w)
                outs.append(w)
            runs.append((outs, {k: v.clone() for k, v in q.state_dict().items()}))
    (a, sa), (b, sb) = runs
    assert all(same_bits(x, y) for x, y in zip(a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert int(sa["calls"]) == 24
    if update_every < 100:
        assert len(ils) > 1  # the integer length did move
