"""Quantized layers, the grad hook, latent clipping and the conversion rules."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.models import build_model
from common.quant import QConv2d, QLinear, build_quantizer, after_step, convert, quant_layers

SIGN = {"name": "sign"}


def _sign(w):
    return torch.where(w >= 0, 1.0, -1.0)


def test_qlinear_uses_binary_weight_and_passes_gradient_to_latent():
    layer = QLinear(20, 7, weight=build_quantizer(SIGN))
    x = torch.randn(5, 20)
    y = layer(x)
    assert torch.allclose(y, F.linear(x, _sign(layer.weight.detach()), layer.bias.detach()))
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(layer.weight.grad, g.T @ x)  # gradient w.r.t. w_b, applied to w


def test_qconv_uses_binary_weight():
    layer = QConv2d(3, 4, 3, padding=1, weight=build_quantizer(SIGN))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(layer(x), F.conv2d(x, _sign(layer.weight.detach()), layer.bias.detach(), padding=1),
                          atol=1e-5)


def test_input_quantizer_applies_to_layer_input():
    layer = QLinear(6, 3, input=build_quantizer(SIGN))
    x = torch.randn(4, 6)
    assert torch.allclose(layer(x), F.linear(_sign(x), layer.weight, layer.bias))


def test_grad_quantizer_applies_to_output_gradient():
    layer = QLinear(6, 3, bias=False, grad=build_quantizer(SIGN))
    x = torch.randn(4, 6, requires_grad=True)
    g = torch.randn(4, 3)
    layer(x).backward(g)
    assert torch.allclose(x.grad, _sign(g) @ layer.weight.detach())
    assert torch.allclose(layer.weight.grad, _sign(g).T @ x.detach())


def test_after_step_clips_latent_weights():
    layer = QLinear(10, 10, weight=build_quantizer(SIGN), clip=0.5)
    free = QLinear(10, 10, weight=build_quantizer(SIGN))
    with torch.no_grad():
        layer.weight.mul_(10)
        free.weight.mul_(10)
    before = free.weight.detach().clone()
    model = nn.Sequential(layer, free)
    after_step(model)
    assert layer.weight.abs().max() <= 0.5 and layer.weight.abs().max() == 0.5
    assert torch.equal(free.weight, before)


def _mlp():
    return build_model({"name": "mlp", "widths": [16, 16, 16]}, (1, 4, 4), 10)


def _quantized(model):
    return [n for n, m in quant_layers(model) if m.weight_quantizer is not None]


@pytest.mark.parametrize("rule,expected", [
    ("all", ["1", "4", "7", "10"]),
    ("all_but_first_last", ["4", "7"]),
    ("first", ["1"]),
    ("last", ["10"]),
    ("all_but_first", ["4", "7", "10"]),
    (["4", "1*"], ["1", "4", "10"]),
])
def test_conversion_rules(rule, expected):
    model = convert(_mlp(), [{"layers": rule, "weight": SIGN}])
    assert _quantized(model) == expected


def test_later_rule_overrides_earlier_one():
    model = convert(_mlp(), [{"layers": "all", "weight": SIGN, "clip": 1.0},
                             {"layers": ["first", "last"], "weight": None}])
    assert _quantized(model) == ["4", "7"]
    layers = dict(quant_layers(model))
    assert layers["1"].latent_clip is None and layers["4"].latent_clip == 1.0


def test_conversion_keeps_float_function_and_weights():
    ref = _mlp().eval()
    model = convert(_mlp(), [{"layers": "all", "weight": {"name": "float"}}]).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(3, 1, 4, 4)
    assert torch.allclose(model(x), ref(x))
    assert all(isinstance(m, (QLinear, QConv2d)) for _, m in quant_layers(model))


def test_init_range_reinitialises_latent_weights():
    model = convert(_mlp(), [{"layers": "all", "weight": SIGN, "init_range": 1.0}])
    w = dict(quant_layers(model))["4"].weight
    assert w.abs().max() <= 1.0 and w.abs().max() > 0.9  # U(-1, 1), not the default ~U(-0.25, 0.25)


def test_unknown_pattern_is_a_user_error():
    with pytest.raises(UserError, match="matches no Linear/Conv2d"):
        convert(_mlp(), [{"layers": ["features.*"], "weight": SIGN}])


def test_torchvision_model_converts_unchanged():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10)
    convert(model, [{"layers": "all_but_first_last", "weight": SIGN}])
    names = _quantized(model)
    assert "conv1" not in names and "fc" not in names and "layer1.0.conv1" in names
    assert isinstance(model.layer4[1].conv2, QConv2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
