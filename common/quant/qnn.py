"""Multi-bit quantization of Quantized Neural Networks (Hubara, Courbariaux, Soudry, El-Yaniv, Bengio 2016, §4):

    LinearQuant(x, step) = Clip(round(x / step) * step, minV, maxV)
    LogQuant(x)          = Clip(AP2(x), minV, maxV),   AP2(x) = sign(x) 2^round(log2|x|)

with the straight-through estimator g_x = g_q * 1_{|x| <= max} ("not cancelling the gradient when r is too large
significantly worsens performance"). The paper does not fix minV/maxV or how ``bits`` maps to them; this suite's
reading, stated once here: ``bits`` b gives 2^b levels in [-max, max] -- LinearQuant on the two's-complement grid
step = max / 2^(b-1), minV = -max, maxV = max - step; LogQuant with 2^(b-1) magnitudes 2^e, e in
[log2(max) - 2^(b-1) + 1, log2(max)], times a sign. ``scale: max`` first divides by max|x| of the tensor and
multiplies back (used for gradients, whose range is unknown). Rounding is to nearest, ties to even (torch.round),
or ``stochastic`` (round up with probability x/step - floor(x/step)).
"""
from __future__ import annotations

from typing import Literal

import torch

from common.quant import kernels
from common.quant.base import Quantizer, register, straight_through
from common.quant.pow2 import ap2
from common.validate import Range

Rounding = Literal["nearest", "stochastic"]


def round_to_grid(x: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    if rounding == "nearest":
        return torch.round(x)
    return torch.floor(x + torch.rand_like(x))  # P(up) = x - floor(x)


def _round_to_grid_(x: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """round_to_grid in place (the same values)."""
    if rounding == "nearest":
        return x.round_()
    return x.add_(kernels.rand_like(x)).floor_()


class _QnnQuantizer(Quantizer):
    ranges = {"bits": Range(1, 32), "max": Range(lo=0, lo_open=True)}

    def __init__(self, bits: int = 2, max: float = 1.0, scale: Literal["none", "max"] = "none",
                 rounding: Rounding = "nearest"):
        super().__init__()
        self.bits, self.max, self.scale, self.rounding = bits, max, scale, rounding

    def quantize(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.scale == "max" and x.numel() > 0:  # (no values: no max|x| to scale by, nothing to scale)
                m = x.abs().max().clamp_min(torch.finfo(x.dtype).tiny)
                q = self.quantize(x / m * self.max) * (m / self.max)
            else:
                q = self.quantize(x)
        # with ``scale: max`` every value is in range: plain straight-through
        return straight_through(x, q, None if self.scale == "max" else self.max)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, max={self.max}, scale={self.scale}, rounding={self.rounding}"


@register("linear_quant")
class LinearQuant(_QnnQuantizer):
    """QNN LinearQuant with 2^bits levels: step = max / 2^(bits-1), clip to [-max, max - step]."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        step = self.max / 2 ** (self.bits - 1)
        return _round_to_grid_(torch.div(x, step), self.rounding).mul_(step).clamp_(-self.max, self.max - step)


@register("log_quant")
class LogQuant(_QnnQuantizer):
    """QNN LogQuant: sign(x) * 2^round(log2|x|), exponents clipped to the 2^(bits-1) values below log2(max)."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        top = torch.log2(torch.tensor(self.max, dtype=x.dtype, device=x.device))
        lo = top - (2 ** (self.bits - 1) - 1)
        mag = ap2(x.abs()).clamp_(torch.exp2(lo), torch.exp2(top))
        return torch.where(x >= 0, mag, -mag)
