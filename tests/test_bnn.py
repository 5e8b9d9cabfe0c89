"""BNN pieces against the paper's / Torch7 code's equations: AP2, shift-based BN and AdaMax, binary activations."""
import math

import pytest
import torch
from torch import nn

from common.config import load_config
from common.models.blocks import ShiftBatchNorm
from common.module import Classifier, bits_summary
from common.optim import ShiftAdaMax, build_optimizer
from common.quant import QLinear, quant_layers
from common.quant.pow2 import ap2

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BNN = ROOT / "papers/bnn/configs"


def test_ap2_is_nearest_power_of_two_in_log_domain():
    x = (torch.rand(10000) * 2 - 1) * torch.exp2(torch.randint(-10, 10, (10000,)).float())
    y = ap2(x)
    assert torch.equal(torch.sign(y), torch.sign(x))
    e = torch.log2(y.abs())
    assert torch.equal(e, torch.round(e))  # a power of two
    assert (torch.log2(x.abs()) - e).abs().max() <= 0.5 + 1e-6  # nearest in the log domain
    assert ap2(torch.tensor([0.0, 3.0, -0.3, 1.0])).tolist() == [0.0, 4.0, -0.25, 1.0]


def test_shift_batch_norm_equation_in_training_and_eval():
    torch.manual_seed(1)
    bn = ShiftBatchNorm(5, eps=1e-5, momentum=0.125)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.3, 1.0, 1.7, -0.6, 2.5]))
        bn.bias.copy_(torch.randn(5))
    x = torch.randn(64, 5) * 3 + 1
    y = bn(x)
    mu = x.mean(0)
    c = x - mu
    var = (ap2(c) * c).mean(0)
    expected = c * ap2((var + 1e-5).rsqrt()) * ap2(bn.weight.detach()) + bn.bias.detach()
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.allclose(bn.running_mean, 0.125 * mu) and torch.allclose(bn.running_var, 0.875 + 0.125 * var)
    bn.eval()
    z = bn(x)
    expected = (x - bn.running_mean) * ap2((bn.running_var + 1e-5).rsqrt()) * ap2(bn.weight.detach()) + bn.bias
    assert torch.allclose(z, expected, atol=1e-6)


def test_shift_batch_norm_2d_and_gradients_flow():
    bn = ShiftBatchNorm(3)
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    bn(x).sum().backward()
    assert x.grad is not None and bn.weight.grad is not None and bn.bias.grad is not None


def test_shift_adamax_step_is_a_power_of_two_times_the_glorot_scale():
    torch.manual_seed(0)
    w = nn.Parameter(torch.rand(50) * 2 - 1)
    w0 = w.detach().clone()
    lr, scale, b1, eps = 0.01, 3.7, 0.9, 2 ** -27
    opt = ShiftAdaMax([{"params": [w], "lr_scale": scale}], lr=lr)
    g = torch.randn(50)
    w.grad = g.clone()
    opt.step()
    step = 2.0 ** round(math.log2(lr / (1 - b1)))  # AP2 of the bias-corrected rate: 0.1 -> 2^-3
    assert step == 0.125
    m, v = (1 - b1) * g, g.abs()  # first step from zero state
    expected = w0 - step * scale * m / (ap2(v) + eps)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    # second step: m and v follow AdaMax, step rounds lr/(1-b1^2)
    g2 = torch.randn(50)
    w.grad = g2.clone()
    before = w.detach().clone()
    opt.step()
    m2 = b1 * m + (1 - b1) * g2
    v2 = torch.maximum(0.999 * v, g2.abs())
    step2 = 2.0 ** round(math.log2(lr / (1 - b1 ** 2)))
    assert torch.allclose(w.detach(), before - step2 * scale * m2 / (ap2(v2) + eps), atol=1e-6)


def test_build_optimizer_folds_lr_scale_for_torch_optimizers():
    w = nn.Parameter(torch.zeros(3))
    opt = build_optimizer("adam", [{"params": [w], "lr_scale": 4.0}], lr=0.5)
    assert opt.param_groups[0]["lr"] == 2.0 and "lr_scale" not in opt.param_groups[0]


def test_glorot_scale_rounded_to_power_of_two_and_applied_to_biases():
    _, cfg = load_config("cifar10_torch7", BNN)
    module = Classifier(cfg.to_dict(), (3, 32, 32), 10)
    groups = module.param_groups()[1:]
    assert groups and all(math.log2(g["lr_scale"]).is_integer() for g in groups)
    assert all(len(g["params"]) == 2 for g in groups)  # weight and bias


@pytest.mark.parametrize("config", ["mnist_theano", "mnist_torch7"])
def test_bnn_mlp_binarizes_every_hidden_activation_but_not_the_input(config):
    _, cfg = load_config(config, BNN, ["model.widths=[32, 32, 32]"])
    module = Classifier(cfg.to_dict(), (1, 28, 28), 10).eval()
    seen = {}
    for name, m in quant_layers(module.model):
        m.register_forward_pre_hook(lambda mod, inp, name=name: seen.__setitem__(name, inp[0].detach()))
    x = torch.randn(16, 1, 28, 28)
    module(x)
    names = list(seen)
    assert torch.equal(seen[names[0]], x.flatten(1))  # the first layer sees real pixels
    for n in names[1:]:
        assert set(seen[n].unique().tolist()) <= {-1.0, 1.0}
    assert all(isinstance(m, QLinear) and m.weight_quantizer is not None for _, m in quant_layers(module.model))
    assert bits_summary(module.model)[0] == {"w": 1, "a": 1, "g": 32}


def test_binary_activation_gradient_is_cancelled_outside_unit_interval():
    _, cfg = load_config("mnist_theano", BNN, ["model.widths=[8]", "model.dropout_in=0", "model.dropout_hidden=0"])
    module = Classifier(cfg.to_dict(), (1, 4, 4), 10).train()
    act = module.model[3]  # Flatten, Linear, BN, binary activation
    x = (torch.randn(6, 8) * 2).requires_grad_()
    act(x).sum().backward()
    assert torch.equal(x.grad, (x.detach().abs() <= 1).float())
