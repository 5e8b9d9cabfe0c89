"""DoReFa-Net's k-bit weights, activations and gradients (Zhou, Wu, Ni, Zhou, Wen, Zou 2016, arXiv:1606.06160, §2):

    quantize_k(r) = round((2^k - 1) r) / (2^k - 1),  r in [0, 1],  d/dr := 1 (straight through)     (§2.2)
    weights, k = 1:  r_o = sign(r_i) * E(|r_i|),  E over the whole layer, a constant for the gradient (Eq. 4)
    weights, k > 1:  r_o = 2 quantize_k( tanh(r_i) / (2 max|tanh(r)|) + 1/2 ) - 1                     (Eq. 5)
    activations:     r_o = quantize_k(clip(r, 0, 1))   (the clip's derivative is the 1_{0<=r<=1} mask)   (Eq. 6)
    gradients:       dr -> 2 max0(|dr|) [ quantize_k( dr / (2 max0(|dr|)) + 1/2 + N(k) ) - 1/2 ],
                     N(k) = sigma / (2^k - 1), sigma ~ U(-1/2, 1/2),  max0 per sample (all axes but the batch)
                     (Eq. 7; clipped to [0, 1] after the noise, as the reference code)

Rounding is torch.round (half to even); ties have probability zero for real-valued inputs.
"""
from __future__ import annotations

import torch

from common.quant.base import Quantizer, register
from common.quant.binary import binarize, straight_through
from common.validate import Range

BITS = {"bits": Range(1, 16)}


def quantize_k(r: torch.Tensor, k: int) -> torch.Tensor:
    """The 2^k levels {0, 1/(2^k-1), ..., 1} of r in [0, 1], with the straight-through gradient."""
    n = 2**k - 1
    with torch.no_grad():
        q = torch.round(r * n) / n
    return straight_through(r, q)


@register("dorefa_weight")
class DorefaWeight(Quantizer):
    """k-bit DoReFa weights: k = 1 -> E|W| * sign(W) (sign(0) = +1); k > 1 -> tanh-normalised quantize_k, in [-1, 1]."""

    ranges = BITS

    def __init__(self, bits: int = 1):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits == 1:
            with torch.no_grad():
                q = binarize(w, 1.0) * w.abs().mean()
            return straight_through(w, q)
        t = torch.tanh(w)
        return 2 * quantize_k(t / (2 * t.abs().max()) + 0.5, self.bits) - 1

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@register("dorefa_act")
class DorefaAct(Quantizer):
    """k-bit DoReFa activations quantize_k(clip(x, 0, 1))."""

    ranges = BITS

    def __init__(self, bits: int = 2):
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_k(x.clamp(0, 1), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@register("dorefa_grad")
class DorefaGrad(Quantizer):
    """k-bit stochastic DoReFa gradient quantizer (used as a layer's ``grad`` quantizer: it receives dC/d(output))."""

    ranges = BITS

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = bits

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        n = 2**self.bits - 1
        dims = tuple(range(1, g.dim()))
        m = g.abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        x = g / (2 * m) + 0.5 + (torch.rand_like(g) - 0.5) / n
        return 2 * m * (torch.round(x.clamp_(0, 1) * n) / n - 0.5)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
