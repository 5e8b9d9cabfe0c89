"""Fixed Point Quantization of Deep Convolutional Networks (Lin, Talathi, Annapureddy, ICML 2016, arXiv:1511.06393).

Weights and activations in fixed point, the step of each tensor from its standard deviation, Delta = c(beta)·sigma,
c the MSE-optimal uniform step of a Gaussian or Laplacian at beta bits (computed numerically), rounded to a power of
two (the fixed-point step 2^-fl); per-layer weight bit widths from the SQNR analysis in closed form:
every layer contributes the same quantization noise at the output when 10^(-kappa beta_l / 10) is proportional to
its parameter count rho_l, so beta_i - beta_j = (10 / kappa) log10(rho_j / rho_i) -- compared with equal bit widths
at the same model size. Fine-tuning at 4/4 is the ``finetune`` command.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch

from common.ptq import Calibration, merge_rules, register_ptq
from common.quant.fixed import to_fixed
from common.validate import Range

DEFAULT_CONFIG = "mnist_cpu_sqnr_4"
FINETUNE = ["mnist_cpu_w4a4", "cifar10_vggsmall_w4a4"]  # configs the sweep also fine-tunes after quantizing (``finetune``)


@lru_cache(maxsize=None)
def optimal_step(bits: int, pdf: str = "gaussian", samples: int = 400000) -> float:
    """c(beta): the step of the ``bits``-bit two's-complement uniform quantizer with the least mean squared error on
    a unit-variance ``pdf`` (Gaussian or Laplacian), by a search on a fixed sample: both drawn from their own
    generator seeded 0, so c depends on nothing else (not the run's seed, not torch's global generator, which is
    left untouched). The Laplacian by the inverse CDF, as torch.distributions.Laplace.rsample: scale b = 1/sqrt(2)
    (variance 2 b^2 = 1), x = -b sign(u) log(1 - |u|), u ~ U(eps - 1, 1)."""
    g = torch.Generator().manual_seed(0)
    if pdf == "gaussian":
        x = torch.randn(samples, generator=g, dtype=torch.float64)
    else:
        u = torch.empty(samples, dtype=torch.float64).uniform_(torch.finfo(torch.float64).eps - 1, 1, generator=g)
        x = u.sign().mul_(torch.log1p(-u.abs())).mul_(-1 / math.sqrt(2))
    steps = torch.linspace(0.01, 4.0, 800, dtype=torch.float64).tolist()
    err = [float((x - to_fixed(x / s, bits, 0) * s).square().mean()) for s in steps]
    return steps[min(range(len(steps)), key=err.__getitem__)]


def sqnr_bits(sizes: dict[str, int], mean_bits: float, kappa: float, lo: int = 2, hi: int = 16) -> dict[str, int]:
    """Integer bits closest to the closed form beta_l = o - (10 / kappa) log10(rho_l) at the model size of
    ``mean_bits`` everywhere: o such that sum rho_l beta_l (clipped to [lo, hi]) meets that size, every beta_l
    rounded down, then one bit back to the layers with the largest remainders while the size stays within it."""
    budget = mean_bits * sum(sizes.values())

    def real(o: float) -> dict[str, float]:
        return {n: min(hi, max(lo, o - 10 / kappa * math.log10(r))) for n, r in sizes.items()}

    a, b = -200.0, 200.0
    for _ in range(100):  # bisection on the offset: the size grows with o
        o = (a + b) / 2
        a, b = (o, b) if sum(sizes[n] * x for n, x in real(o).items()) < budget else (a, o)
    exact = real(a)
    bits = {n: math.floor(x) for n, x in exact.items()}
    for n in sorted(exact, key=lambda n: exact[n] - bits[n], reverse=True):
        if bits[n] < hi and sum(sizes[m] * v for m, v in bits.items()) + sizes[n] <= budget:
            bits[n] += 1
    return bits


@register_ptq("sqnr")
class SqnrQuantization:
    """``weight_bits``: bits of every layer (``allocation: equal``) or their parameter-weighted mean (``sqnr``);
    ``act_bits``: every layer's input (null: float); ``pdf`` of the step rule; ``kappa`` dB per bit."""

    ranges = {"weight_bits": Range(lo=1, hi=16), "act_bits": Range(1, 16), "kappa": Range(lo=0, lo_open=True)}

    def __init__(self, weight_bits: float = 4, act_bits: int | None = None, allocation: Literal["equal", "sqnr"] = "sqnr",
                 pdf: Literal["gaussian", "laplacian"] = "gaussian", kappa: float = 6.02):
        self.weight_bits, self.act_bits, self.allocation, self.pdf, self.kappa = weight_bits, act_bits, allocation, pdf, kappa

    def fl(self, x: torch.Tensor, bits: int) -> int:
        step = optimal_step(bits, self.pdf) * float(x.double().std())
        return round(-math.log2(step))

    def choose(self, cal: Calibration) -> tuple[list[dict], dict]:
        sizes = {n: cal.weight(n).numel() for n in cal.layers}
        if self.allocation == "equal":
            bits = {n: round(self.weight_bits) for n in cal.layers}
        else:
            bits = sqnr_bits(sizes, self.weight_bits, self.kappa)
        weights = {n: {"weight": {"name": "fixed", "wl": b, "fl": self.fl(cal.weight(n), b)}} for n, b in bits.items()}
        acts = {}
        if self.act_bits is not None:
            xs = cal.inputs()
            acts = {n: {"input": {"name": "fixed", "wl": self.act_bits, "fl": self.fl(xs[n], self.act_bits)}}
                    for n in cal.layers}
        size = sum(sizes[n] * b for n, b in bits.items())
        return merge_rules(weights, acts), {"weight_bits": bits, "weight_memory_bits": size,
                                            "mean_weight_bits": round(size / sum(sizes.values()), 4)}


__all__ = ["DEFAULT_CONFIG", "FINETUNE", "SqnrQuantization", "optimal_step", "sqnr_bits"]
