"""Edge cases of the quantizers' equations, one test per case: dynamic fixed point's lower bound on the integer
length, empty tensors, non-finite TWN weights, half-precision fixed point, round-to-nearest just below a half
(documented, not changed), and SQNR's Laplacian step constant."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

import papers.sqnr
from common.quant import build_quantizer, kernels
from common.quant.fixed import DynamicFixed, to_fixed

PATHS = [contextlib.nullcontext, kernels.disabled]  # the fused kernels (where built) and the torch path


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.fixture
def flush_denormal(request):
    """torch.set_flush_denormal(param) inside the test (training runs flush: common/cli.py), the mode restored."""
    was = float(torch.tensor([1e-40]) * 1.0) == 0.0  # torch has no getter: a subnormal product flushed or not
    assert torch.set_flush_denormal(request.param) or not request.param
    yield request.param
    torch.set_flush_denormal(was)


@pytest.mark.parametrize("flush_denormal", [False, True], indirect=True)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("wl", [2, 3, 8, 32])
def test_dynamic_fixed_integer_length_stops_at_its_lower_bound(path, wl, flush_denormal):
    """An all-zero tensor used to lower il at every update without end (2^fl -> inf, 0 * inf = NaN); it now stops
    at il_min = wl - 126 (fl = 125: scale, step and thresholds normal floats, so subnormal flushing changes nothing),
    where zeros stay zeros, and real data moves it back up one step per update."""
    with path():
        q = DynamicFixed(wl=wl, max_overflow=1e-4, update_every=1, init_il=5).train()
        assert q.il_min == wl - 126 and q.fl(q.il_min) == 125
        zeros = torch.zeros(64)
        for _ in range(5 - q.il_min + 40):  # far more updates than the way down takes
            out = q(zeros)
            stored = zeros.clone()
            q.quantize_(stored)
        assert int(q.il) == q.il_min
        assert same_bits(out, zeros) and same_bits(stored, zeros)
        # at the bound, the grid 2^-125 still holds its values exactly, and the rates are counted as usual
        n = min(2 ** (wl - 1) - 1, 2048)
        tiny = torch.arange(-n, n + 1).float() * 2.0 ** -125
        assert torch.equal(to_fixed(tiny, wl, 125, "nearest", "symmetric"), tiny)
        top = (2 ** (wl - 1) - 1) * 2.0**-125
        v = torch.cat([tiny, torch.tensor([top, -top / 2, 2.0**-126, -(2.0**-126)])])
        counts = [float((v.abs() >= torch.tensor(t)).sum()) / v.numel() for t in (top, top / 2)]
        assert q._overflow_rates(v, q.il_min) == tuple(counts) and 0 < counts[0] < counts[1]
        # a real tensor lifts it again, one step per update
        x = torch.randn(64, generator=torch.Generator().manual_seed(3))
        q(x)
        assert int(q.il) == q.il_min + 1
        # the first non-zero tensor seen, all subnormal: the initial search never starts below the bound
        q = DynamicFixed(wl=wl, max_overflow=1e-4, update_every=10, init_il=None).train()
        sub = torch.full((16,), 2e-38)
        out = q(sub)
        assert int(q.il) == q.il_min and torch.equal(out, to_fixed(sub, wl, 125, "nearest", "symmetric"))
    # real data, even tiny, is nowhere near the bound: values ~1e-20 settle where they fit, 54 integer bits above it
    q = DynamicFixed(wl=8, max_overflow=1e-4, update_every=1, init_il=5).train()
    x = torch.randn(1000, generator=torch.Generator().manual_seed(4)) * 1e-20
    for _ in range(100):
        q(x)
    fits = min(il for il in range(-200, 6) if 127 / 128 * 2.0**il > float(x.abs().max()))  # none overflows
    assert int(q.il) == fits == -64 and int(q.il) == q.il_min + 54


EMPTY_SPECS = [
    {"name": "scaled_sign", "per": "filter"}, {"name": "scaled_sign", "per": "layer"},
    {"name": "scaled_sign", "per": "filter", "grad": "exact"}, {"name": "scaled_sign", "per": "layer", "grad": "exact"},
    {"name": "dorefa_weight", "bits": 1}, {"name": "dorefa_weight", "bits": 2}, {"name": "dorefa_weight", "bits": 4},
    {"name": "dorefa_grad", "bits": 4}, {"name": "dorefa_grad", "bits": 1},
    {"name": "linear_quant", "bits": 4, "scale": "max"}, {"name": "log_quant", "bits": 4, "scale": "max"},
]


@pytest.mark.parametrize("spec", EMPTY_SPECS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (0, 3, 2, 2), (4, 0, 3, 3)])
def test_empty_tensors_give_empty_results_forward_and_backward(spec, shape):
    """No values in, no values out: an empty tensor of the input's shape and dtype, an empty gradient of the same
    shape, and no uniform drawn (the stochastic gradient quantizer leaves torch's generator where it was)."""
    q = build_quantizer(spec).train()
    x = torch.zeros(shape, requires_grad=True)
    state = torch.get_rng_state()
    y = q(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.numel() == 0
    y.backward(torch.ones(shape))
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.dtype == x.dtype
    with torch.no_grad():  # the path a gradient quantizer takes, and evaluation
        z = q(torch.zeros(shape))
    assert z.shape == x.shape and z.numel() == 0
    assert torch.equal(torch.get_rng_state(), state)


def _twn_reference(w: torch.Tensor, per: str, t: float) -> torch.Tensor:
    """Eq. 1-5 with the approximate threshold, written out."""
    dims = tuple(range(1, w.dim())) if per == "filter" else tuple(range(w.dim()))
    a = w.abs()
    mask = (a > t * a.mean(dim=dims, keepdim=True)).float()
    alpha = (a * mask).sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True).clamp_min(1)
    return torch.copysign(mask * alpha, w)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("per", ["layer", "filter"])
@pytest.mark.parametrize("threshold", ["approx", "exact"])
def test_ternary_non_finite_weight_is_nan_for_its_own_group_only(path, per, threshold):
    """An inf or NaN weight has no TWN threshold or scale (E|W| = inf, I_Delta empty, alpha = 0/0): its group (the
    layer, or with per: filter its filter) comes out NaN, on both paths alike, and the other filters are untouched;
    the NaN reaches the loss and the run stops as diverged (exit 3, its result says where), as any blown-up run.
    Finite weights give the equation's bits."""
    q = build_quantizer({"name": "ternary", "t": 0.7, "per": per, "threshold": threshold})
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.05
    with path():
        finite = q(w)
        if threshold == "approx":
            assert same_bits(finite, _twn_reference(w, per, 0.7))
        assert bool(torch.isfinite(finite).all())
        for bad in (float("inf"), -float("inf"), float("nan")):
            v = w.clone()
            v[1, 2, 0, 1] = bad
            v[4, 0, 2, 2] = bad
            out = q(v)
            nan_filters = [f for f in range(6) if bool(torch.isnan(out[f]).any())]
            assert nan_filters == ([1, 4] if per == "filter" else list(range(6)))
            if per == "filter":
                keep = [0, 2, 3, 5]
                assert same_bits(out[keep], finite[keep])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fixed_half_precision_rounds_in_float32(dtype):
    """float16/bfloat16 are rounded in float32 and cast back: values on the grid stay (the sum x/eps + 1/2 or + u
    rounded in 11 or 8 bits moved them), stochastic rounding is unbiased; float32 and float64 are unchanged."""
    on_grid = torch.tensor([1025.0 if dtype == torch.float16 else 129.0, 3.0, -7.0, 0.0], dtype=dtype)
    assert torch.equal(to_fixed(on_grid, 16, 0), on_grid)  # (in float16, 1025 + 0.5 rounded to 1026)
    torch.manual_seed(1)
    sr = to_fixed(on_grid.repeat(1000), 16, 0, "stochastic")
    assert sr.dtype == dtype and torch.equal(sr, on_grid.repeat(1000))  # (in bfloat16, 129 + u gave 130 for u >= 1/2)
    # exactly the float32 computation, the same draws included, cast back; in place too
    x = (torch.randn(5000, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    for rounding in ("nearest", "stochastic"):
        torch.manual_seed(7)
        got = build_quantizer({"name": "fixed", "wl": 8, "fl": 4, "rounding": rounding})(x)
        torch.manual_seed(7)
        want = to_fixed(x.float(), 8, 4, rounding).to(dtype)
        assert got.dtype == dtype and torch.equal(got, want)
        torch.manual_seed(7)
        y = x.clone()
        build_quantizer({"name": "fixed", "wl": 8, "fl": 4, "rounding": rounding}).quantize_(y)
        assert torch.equal(y, want)
    # a value between grid points of a bfloat16 tensor: the stochastic mean is the value (eps = 1/4, 0.1 -> 0.4 up)
    torch.manual_seed(3)
    v = torch.full((200_000,), 0.1, dtype=dtype)
    mean = float(to_fixed(v, 8, 2, "stochastic").double().mean())
    assert abs(mean - float(v[0])) < 5 * 0.25 * math.sqrt(0.4 * 0.6 / 200_000)
    # float32 and float64 still computed in their own precision, as floor(x * 2^fl + 1/2) * 2^-fl
    for d in (torch.float32, torch.float64):
        z = (torch.randn(5000, generator=torch.Generator().manual_seed(4)) * 3).to(d)
        assert torch.equal(to_fixed(z, 8, 4), (z * 16 + torch.tensor(0.5, dtype=d)).floor().clamp(-128, 127) / 16)


@pytest.mark.parametrize("path", PATHS)
def test_nearest_rounding_of_the_float_just_below_a_half_is_documented(path):
    """Kept as committed runs computed it: floor(x * 2^fl + 1/2) with the sum rounded to the input's precision.
    It differs from exact round-half-up on exactly two sets (checked exhaustively in float32 over every value with
    |x * 2^fl| in [2^-10, 2^24]; below and above the sum cannot cross an integer): x * 2^fl = 1/2 - 2^-25 rounds
    up to eps, and odd integers x * 2^fl of magnitude in (2^23, 2^24) round to x + eps (wl >= 25 only)."""
    with path():
        for fl in (0, 4, 14, -3):
            eps = 2.0 ** -fl
            below_half = torch.tensor([0.5 - 2**-25, 0.5 - 2**-24, -(0.5 - 2**-25), 0.5, -0.5]) * eps
            assert (to_fixed(below_half, 16, fl) / eps).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
        big = torch.tensor([2.0**23 + 1, 2.0**23 + 2, -(2.0**23 + 1), -(2.0**23 + 2), 2.0**24 - 1])
        assert to_fixed(big, 32, 0).tolist() == [2.0**23 + 2, 2.0**23 + 2, -(2.0**23), -(2.0**23 + 2), 2.0**24]
        assert to_fixed(big, 24, 0).tolist() == [2.0**23 - 1] * 2 + [-(2.0**23)] * 2 + [2.0**23 - 1]  # saturated
    d = torch.tensor([0.5 - 2**-54, 0.5 - 2**-53], dtype=torch.float64)  # float64: the same at its precision
    assert to_fixed(d, 16, 0).tolist() == [1.0, 0.0]
    # everywhere else the result is exact round-half-up: a sample over many binades, both signs
    g = torch.Generator().manual_seed(9)
    v = (torch.rand(400_000, generator=g) * 2 - 1) * torch.exp2(torch.randint(-12, 25, (400_000,), generator=g))
    v = v.float()
    vd = v.double()
    exact = vd.floor() + ((vd - vd.floor()) >= 0.5).double()
    documented = (v == 0.5 - 2**-25) | ((vd.abs() > 2**23) & (vd.abs() < 2**24) & (vd.remainder(2) == 1))
    got = to_fixed(v, 32, 0).double()
    assert torch.equal(got[~documented], exact[~documented])


def test_sqnr_laplacian_step_is_fixed_and_leaves_the_global_generator_alone():
    """c(beta) for the Laplacian came from torch's global generator (whatever state the first call found, and it
    advanced it); now from its own generator seeded 0, as the Gaussian's: the same for any seed, nothing drawn."""
    step = papers.sqnr.optimal_step.__wrapped__  # uncached
    values = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        values.append(step(3, "laplacian", 20_000))
        assert torch.equal(torch.get_rng_state(), state)
    assert values[0] == values[1]
    c = papers.sqnr.optimal_step(4, "laplacian")
    assert c == torch.linspace(0.01, 4.0, 800, dtype=torch.float64).tolist()[92]  # 0.4694..., pinned
    # and it is the MSE optimum on an independent unit-variance Laplacian sample
    x = torch.distributions.Laplace(0.0, 1 / math.sqrt(2)).sample((200_000,)).double()
    assert abs(float(x.var()) - 1) < 0.02
    mse = lambda s: float((x - to_fixed(x / s, 4, 0) * s).square().mean())  # noqa: E731
    assert all(mse(c) <= mse(s) * 1.002 for s in torch.linspace(0.3, 0.7, 41).tolist())
    assert c > papers.sqnr.optimal_step(4)  # heavier tails than the Gaussian (0.3396): a wider step
