"""QNN LinearQuant / LogQuant against their equations, the gradient hook at 6 bits, and bits validation."""
import subprocess
import sys

import pytest
import torch

from common.quant import QLinear, build_quantizer


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_linear_quant_grid_and_clip(bits):
    q = build_quantizer({"name": "linear_quant", "bits": bits})
    x = torch.rand(20000) * 3 - 1.5
    out = q(x)
    step = 1.0 / 2 ** (bits - 1)
    expected = (torch.round(x / step) * step).clamp(-1.0, 1.0 - step)
    assert torch.equal(out, expected)
    levels = out.unique()
    assert len(levels) == 2 ** bits  # every level of the two's-complement grid is used, nothing else
    assert torch.allclose(levels / step, torch.round(levels / step))


def test_linear_quant_gradient_cancelled_outside_range():
    q = build_quantizer({"name": "linear_quant", "bits": 2, "max": 2.0})
    x = (torch.randn(5000) * 2).requires_grad_()
    g = torch.randn(5000)
    q(x).backward(g)
    assert torch.equal(x.grad, g * (x.detach().abs() <= 2.0).float())


def test_log_quant_levels_are_signed_powers_of_two():
    q = build_quantizer({"name": "log_quant", "bits": 3})
    x = torch.randn(20000)
    out = q(x)
    mags = out.abs().unique()
    assert torch.equal(mags, torch.tensor([0.125, 0.25, 0.5, 1.0]))  # 2^(3-1) magnitudes below max = 1
    inside = (x.abs() > 0.2) & (x.abs() < 0.7)
    e = torch.log2(x[inside].abs())
    assert torch.equal(out[inside].abs(), torch.exp2(torch.round(e)))  # AP2 in range
    assert torch.equal(torch.sign(out), torch.where(x >= 0, 1.0, -1.0))


def test_stochastic_rounding_is_unbiased():
    q = build_quantizer({"name": "linear_quant", "bits": 4, "rounding": "stochastic"})
    x = torch.rand(64) * 1.6 - 0.8
    draws = torch.stack([q(x) for _ in range(4000)])
    # std of one draw <= step/2 = 1/16; over 4000 draws the mean's std <= 0.001: tolerance 0.006 is > 5 sigma
    assert torch.allclose(draws.mean(0), x, atol=0.006)


def test_six_bit_gradient_through_the_grad_hook():
    layer = QLinear(16, 8, bias=False, grad=build_quantizer({"name": "linear_quant", "bits": 6, "scale": "max"}))
    x = torch.randn(32, 16, requires_grad=True)
    g = torch.randn(32, 8)
    layer(x).backward(g)
    m = g.abs().max()
    gq = (torch.round(g / m * 32) / 32).clamp(-1, 1 - 1 / 32) * m  # 6-bit grid over [-max|g|, max|g|)
    assert len(gq.unique()) <= 64
    assert torch.allclose(layer.weight.grad, gq.T @ x.detach(), atol=1e-5)
    assert torch.allclose(x.grad, gq @ layer.weight.detach(), atol=1e-5)


@pytest.mark.parametrize("bits", [0, 33])
def test_bits_out_of_range_exit_2(tmp_path, bits):
    proc = subprocess.run([sys.executable, "-m", "papers.qnn", "train", "--config", "mnist_cpu_w1a2", "--set",
                           f"model.act.bits={bits}", "--wandb", "disabled", "--results-dir", str(tmp_path / "r"),
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: model.act.bits: expected a value in 1..32, got {bits}"
    assert list(tmp_path.iterdir()) == []
