"""BinaryConnect / BNN binarization against the papers' equations, on random inputs."""
import pytest
import torch

from common.quant import QUANTIZERS, build_quantizer
from common.quant.binary import hard_sigmoid


def test_registry_names():
    assert {"float", "sign", "sign_stochastic"} <= set(QUANTIZERS)
    assert QUANTIZERS["sign"].bits == 1 and QUANTIZERS["float"].bits == 32


def test_hard_sigmoid_equation():
    x = torch.randn(1000) * 3
    expected = torch.clip((x + 1) / 2, 0, 1)
    assert torch.equal(hard_sigmoid(x), expected)


@pytest.mark.parametrize("H", [1.0, 0.05])
def test_sign_values(H):
    q = build_quantizer({"name": "sign", "H": H})
    x = torch.randn(4096) * 2 * H
    x[:7] = 0.0  # zero maps to +H (x >= 0), unlike torch.sign
    x[7] = -0.0
    out = q(x)
    assert torch.equal(out, torch.where(x >= 0, torch.tensor(H), torch.tensor(-H)))
    assert torch.equal(out.unique(), torch.tensor([-H, H]))
    assert (out[:8] == H).all()


def test_sign_identity_ste_passes_gradient_unchanged():
    q = build_quantizer({"name": "sign"})
    x = (torch.randn(512) * 3).requires_grad_()
    g = torch.randn(512)
    q(x).backward(g)
    assert torch.equal(x.grad, g)  # dC/dw := dC/dw_b, no mask (BinaryConnect)


def test_sign_htanh_ste_cancels_gradient_outside_unit_interval():
    q = build_quantizer({"name": "sign", "ste": "htanh"})
    x = (torch.randn(4096) * 2).requires_grad_()
    g = torch.randn(4096)
    q(x).backward(g)
    mask = (x.detach().abs() <= 1).float()
    assert torch.equal(x.grad, g * mask)
    assert 0 < mask.mean() < 1  # both sides of the mask were exercised


def test_sign_stochastic_mean_matches_hard_sigmoid():
    """E[w_b] = H (2 p - 1) with p = hard_sigmoid(w / H). 20000 draws: the std of the mean is <= H / sqrt(20000)
    = 0.0071 H, so a 0.04 H tolerance is > 5 sigma for every element."""
    H = 0.5
    q = build_quantizer({"name": "sign_stochastic", "H": H}).train()
    w = torch.linspace(-1.5 * H, 1.5 * H, 31)
    draws = q(w.expand(20000, -1).contiguous())
    assert torch.equal(draws.unique(), torch.tensor([-H, H]))
    expected = H * (2 * hard_sigmoid(w / H) - 1)
    assert torch.allclose(draws.mean(0), expected, atol=0.04 * H)
    # saturated regions are deterministic
    assert (draws[:, w >= H] == H).all() and (draws[:, w <= -H] == -H).all()


def test_sign_stochastic_is_reproducible_with_a_seed():
    q = build_quantizer({"name": "sign_stochastic"}).train()
    w = torch.rand(1000) * 2 - 1
    torch.manual_seed(123)
    a = q(w)
    torch.manual_seed(123)
    b = q(w)
    torch.manual_seed(124)
    c = q(w)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sign_stochastic_gradient_and_eval_modes():
    q = build_quantizer({"name": "sign_stochastic", "eval": "real"}).train()
    w = (torch.rand(256) * 2 - 1).requires_grad_()
    g = torch.randn(256)
    q(w).backward(g)
    assert torch.equal(w.grad, g)
    q.eval()
    assert torch.equal(q(w), w)  # stochastic BinaryConnect tests with the real-valued weights
    qs = build_quantizer({"name": "sign_stochastic", "eval": "sign"}).eval()
    assert torch.equal(qs(w), torch.where(w >= 0, 1.0, -1.0))


def test_float_is_identity():
    x = torch.randn(10, requires_grad=True)
    assert build_quantizer({"name": "float"})(x) is x


def test_scaled_sign_against_hand_computation():
    w = torch.tensor([[[[0.5, -1.5]], [[0.0, 2.0]]], [[[-0.2, -0.2]], [[0.4, 0.0]]]])  # 2 filters, n = 4
    q = build_quantizer({"name": "scaled_sign"})
    out = q(w)
    a0, a1 = (0.5 + 1.5 + 0.0 + 2.0) / 4, (0.2 + 0.2 + 0.4 + 0.0) / 4
    expected = torch.tensor([[[[a0, -a0]], [[a0, a0]]], [[[-a1, -a1]], [[a1, a1]]]])
    assert torch.allclose(out, expected)
    per_layer = build_quantizer({"name": "scaled_sign", "per": "layer"})(w)
    assert torch.allclose(per_layer.abs(), torch.full_like(w, w.abs().mean()))


def test_scaled_sign_paper_gradient():
    w = (torch.randn(6, 3, 3, 3) * 0.8).requires_grad_()
    g = torch.randn_like(w)
    build_quantizer({"name": "scaled_sign"})(w).backward(g)
    alpha = w.detach().abs().mean((1, 2, 3), keepdim=True)
    expected = g * (1 / 27 + alpha * (w.detach().abs() <= 1).float())
    assert torch.allclose(w.grad, expected)


def test_scaled_sign_exact_gradient_matches_autograd_of_the_composition():
    w = (torch.randn(5, 7) * 0.9).requires_grad_()
    g = torch.randn_like(w)
    build_quantizer({"name": "scaled_sign", "grad": "exact"})(w).backward(g)
    w2 = w.detach().clone().requires_grad_()
    sign = build_quantizer({"name": "sign", "ste": "htanh"})  # sign with sign' = 1_{|w|<=1}
    (w2.abs().mean(1, keepdim=True) * sign(w2)).backward(g)
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)
