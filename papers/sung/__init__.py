"""Resiliency of Deep Neural Networks under Quantization (Sung, Shin, Hwang, ICLR 2016 workshop, arXiv:1511.06488).

Weights only, a symmetric uniform quantizer with M = 2^b - 1 levels (2 bits = ternary) whose step minimises each
layer's L2 error; signals stay in float. Direct quantization of a trained float network (``quantize``) and
retraining with the quantized weights in the forward pass and float shadow weights (``finetune``), over networks of
several widths.
"""
from __future__ import annotations

import torch

from common.ptq import Calibration, layer_rule, register_ptq
from common.validate import Range

DEFAULT_CONFIG = "mnist_cpu_w256_b2"
FINETUNE = ["mnist_cpu_w64_b2", "mnist_cpu_w256_b2", "mnist_cpu_w1024_b2", "cifar10_vggsmall_b2"]  # configs the sweep also fine-tunes after quantizing (``finetune``)


def l2_step(w: torch.Tensor, bits: int, candidates: int = 400) -> float:
    """The step of the (2^bits - 1)-level symmetric uniform quantizer with the smallest sum (w - Q(w))^2, found by a
    search over ``candidates`` steps between max|w| / half / 100 and max|w| / half (half = 2^(bits-1) - 1)."""
    half = 2 ** (bits - 1) - 1
    w = w.flatten().double()
    top = float(w.abs().max()) / half
    steps = torch.logspace(-2, 0, candidates, dtype=torch.float64) * top
    best, best_err = top, float("inf")
    for s in steps.tolist():
        err = float((w - torch.floor(w / s + 0.5).clamp(-half, half) * s).square().sum())
        if err < best_err:
            best, best_err = s, err
    return best


@register_ptq("sung")
class SungUniform:
    """``bits``: weight bits of every Conv/FC layer (2 = ternary)."""

    ranges = {"bits": Range(2, 16)}

    def __init__(self, bits: int = 2):
        self.bits = bits

    def choose(self, cal: Calibration) -> tuple[list[dict], dict]:
        steps = {n: l2_step(cal.weight(n), self.bits) for n in cal.layers}
        rules = [layer_rule(n, weight={"name": "uniform", "bits": self.bits, "step": s}) for n, s in steps.items()]
        return rules, {"steps": {n: round(s, 8) for n, s in steps.items()}}


__all__ = ["DEFAULT_CONFIG", "FINETUNE", "SungUniform", "l2_step"]
