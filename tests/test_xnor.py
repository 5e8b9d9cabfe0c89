"""XNOR-Net: the activation scale K, the B-A-C-P block order, and the block-order check."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import papers.xnor
from common.config import load_config
from common.errors import UserError
from common.models import build_model
from papers.xnor.models import XnorConv2d, XnorLinear

ROOT = Path(__file__).resolve().parent.parent
XNOR = ROOT / "papers/xnor/configs"


def _sign(t):
    return torch.where(t >= 0, 1.0, -1.0)


def _alpha_sign(w):
    return w.abs().mean(tuple(range(1, w.dim())), keepdim=True) * _sign(w)


def test_xnor_conv_with_activation_scale_k():
    m = build_model({"name": "xnor_lenet5"}, (1, 28, 28), 10)
    conv = next(x for x in m if isinstance(x, XnorConv2d))
    x = torch.randn(3, 20, 12, 12)
    w = conv.weight.detach()
    k = F.avg_pool2d(x.abs().mean(1, keepdim=True), 5, 1, 0)  # K = A * k, k = 1/25 box filter (Eq. 11)
    expected = F.conv2d(_sign(x), _alpha_sign(w)) * k + conv.bias.detach().view(1, -1, 1, 1)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    conv.act_scale = False
    assert torch.allclose(conv(x), F.conv2d(_sign(x), _alpha_sign(w), conv.bias.detach()), atol=1e-5)


def test_xnor_linear_with_beta():
    lin = XnorLinear(12, 4, weight=papers.xnor.models.build_quantizer({"name": "scaled_sign"}),
                     input=papers.xnor.models.build_quantizer({"name": "sign", "ste": "htanh"}))
    x = torch.randn(5, 12)
    beta = x.abs().mean(1, keepdim=True)
    w = lin.weight.detach()
    assert torch.allclose(lin(x), F.linear(_sign(x), _alpha_sign(w)) * beta + lin.bias.detach(), atol=1e-5)


def test_block_order_is_bn_sign_conv_pool():
    m = build_model({"name": "xnor_lenet5", "relu": False}, (1, 28, 28), 10)
    kinds = [type(x).__name__ for x in m]
    i = kinds.index("XnorConv2d")
    assert kinds[i - 1] == "BatchNorm2d" and kinds[i + 1] == "MaxPool2d"
    assert isinstance(m[0], nn.Conv2d) and type(m[0]) is nn.Conv2d  # first layer real
    assert type(m[-1]) is nn.Linear  # last layer real
    assert m[i].input_quantizer is not None and m[i].input_quantizer.ste == "htanh"


def test_binary_input_rule_on_a_standard_model_is_rejected():
    _, cfg = load_config("mnist_cpu_bwn", XNOR, ["quant.rules.0.input={name: sign, ste: htanh}"])
    with pytest.raises(UserError, match="block order"):
        papers.xnor.check(cfg)
    _, ok = load_config("mnist_cpu_xnor", XNOR)
    papers.xnor.check(ok)


def test_cli_rejects_xnor_without_block_order(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "papers.xnor", "train", "--config", "mnist_cpu_bwn", "--set",
                           "quant.rules.0.input={name: sign}", "--wandb", "disabled",
                           "--results-dir", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "quant.rules[0].input" in proc.stderr and "block order" in proc.stderr
    assert list(tmp_path.iterdir()) == []
