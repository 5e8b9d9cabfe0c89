"""DoReFa-Net quantizers against their equations: quantize_k levels, k-bit weights (Eq. 4, 5), activations (Eq. 6),
the stochastic gradient quantizer (Eq. 7: levels, per-sample scale, unbiasedness), its place in a layer, and the
reference models."""
import pytest
import torch

import papers.dorefa  # noqa: F401  (registers the reference models)
from common.config import validate
from common.errors import UserError
from common.models import build_model
from common.quant import QLinear, build_quantizer
from common.quant.dorefa import quantize_k


def q(name, bits):
    return build_quantizer({"name": name, "bits": bits})


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_quantize_k_has_exactly_the_2k_levels(k):
    r = torch.rand(50000)
    out = quantize_k(r, k)
    n = 2**k - 1
    assert torch.equal(out, torch.round(r * n) / n)
    assert torch.equal(out.unique(), torch.arange(n + 1, dtype=torch.float32) / n)


def test_one_bit_weights_are_layer_mean_times_sign():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    out = q("dorefa_weight", 1)(w)
    e = w.detach().abs().mean()  # one constant for the whole layer (§2.3), not per channel
    assert torch.allclose(out, torch.where(w.detach() >= 0, e, -e))
    g = torch.randn_like(w)
    out.backward(g)
    assert torch.equal(w.grad, g)  # identity, E is a constant for the gradient, no clipping mask
    assert q("dorefa_weight", 1)(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # E = 0; sign(0) = +1 times 0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_bit_weights_tanh_normalised(k):
    w = (torch.randn(64, 32) * 0.7).requires_grad_()
    out = q("dorefa_weight", k)(w)
    t = torch.tanh(w.detach())
    n = 2**k - 1
    expected = 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1
    assert torch.allclose(out, expected)
    assert len(out.unique()) <= 2**k and out.abs().max() <= 1
    # gradient: straight through round, exact through tanh and the max normalisation
    g = torch.randn_like(w)
    out.backward(g)
    w2 = w.detach().clone().requires_grad_()
    t2 = torch.tanh(w2)
    (2 * (t2 / (2 * t2.abs().max()) + 0.5) - 1).backward(g)
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_activations_clip_then_quantize_with_the_clip_mask(k):
    x = (torch.randn(10000) * 1.5).requires_grad_()
    out = q("dorefa_act", k)(x)
    n = 2**k - 1
    assert torch.equal(out, torch.round(x.detach().clamp(0, 1) * n) / n)
    assert len(out.unique()) == 2**k
    g = torch.randn(10000)
    out.backward(g)
    inside = (x.detach() >= 0) & (x.detach() <= 1)
    assert torch.equal(x.grad, g * inside)


@pytest.mark.parametrize("k", [2, 4, 6])
def test_gradient_quantizer_levels_and_per_sample_scale(k):
    g = torch.randn(32, 5, 4, 4) * torch.logspace(-3, 1, 32).view(32, 1, 1, 1)  # very different sample scales
    out = q("dorefa_grad", k)(g)
    m = g.abs().amax(dim=(1, 2, 3), keepdim=True)
    levels = (out / (2 * m) + 0.5) * (2**k - 1)  # back on the integer grid 0..2^k-1, per sample
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert levels.min() >= -1e-3 and levels.max() <= 2**k - 1 + 1e-3
    assert ((out - g).abs() <= 2 * m / (2**k - 1) + 1e-6).all()  # within one step of its own sample's grid


def test_gradient_quantizer_is_unbiased():
    """E[quantized] = dr: the uniform noise of N(k) before rounding is stochastic rounding on the grid."""
    torch.manual_seed(0)
    g = torch.randn(4, 50)
    k = 4
    draws = torch.stack([q("dorefa_grad", k)(g) for _ in range(8000)])
    step = 2 * g.abs().amax(1, keepdim=True) / (2**k - 1)
    # one draw's error is within one step (std <= step/2); the mean of 8000 has std <= step/180: 6 sigma < step/30
    assert ((draws.mean(0) - g).abs() <= step / 30).all()
    assert not torch.equal(draws[0], draws[1])  # and it is stochastic


def test_gradient_quantizer_acts_on_the_layer_output_gradient():
    torch.manual_seed(1)
    layer = QLinear(6, 3, bias=False, grad=q("dorefa_grad", 2))
    x = torch.randn(5, 6, requires_grad=True)
    gy = torch.randn(5, 3)
    torch.manual_seed(2)
    layer(x).backward(gy)
    torch.manual_seed(2)
    gq = q("dorefa_grad", 2)(gy)  # same noise draw
    assert torch.allclose(layer.weight.grad, gq.T @ x.detach(), atol=1e-6)  # feeds the weight gradient...
    assert torch.allclose(x.grad, gq @ layer.weight.detach(), atol=1e-6)  # ...and the input gradient


def test_bits_out_of_range_is_a_config_error():
    with pytest.raises(UserError, match=r"quant.rules\[0\].grad.bits: expected a value in 1..16, got 0"):
        validate({"quant": {"rules": [{"grad": {"name": "dorefa_grad", "bits": 0}}]}})


def test_reference_models_shapes_and_first_last_float():
    from common.quant import convert, quant_layers

    rule = {"layers": "all_but_first_last", "weight": {"name": "dorefa_weight", "bits": 1},
            "input": {"name": "dorefa_act", "bits": 2}, "grad": {"name": "dorefa_grad", "bits": 4}}
    svhn = convert(build_model({"name": "dorefa_svhn"}, (3, 32, 32), 10), [rule])
    assert svhn(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(quant_layers(svhn)) == 6  # conv1..conv6; conv0 and fc1 stay float
    alex = build_model({"name": "dorefa_alexnet"}, (3, 224, 224), 1000)
    assert alex.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert sum(p.numel() for p in alex.parameters()) > 60e6
