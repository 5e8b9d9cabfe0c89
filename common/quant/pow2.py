"""Power-of-two rounding, the basis of BNN's shift-based batch norm and AdaMax (Courbariaux, Hubara et al. 2016, §1.3).

AP2(x) = sign(x) * 2^round(log2|x|): the power of two nearest to x in the log domain, so multiplying by it is a
bit shift. AP2(0) = 0.
"""
from __future__ import annotations

import torch


def ap2(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * 2^round(log2 |x|), with AP2(0) = 0 (``torch.round`` ties to even in the log domain)."""
    mag = torch.exp2(torch.round(torch.log2(x.abs())))
    return torch.where(x == 0, torch.zeros_like(x), torch.sign(x) * mag)


def ap2_scalar(x: float) -> float:
    return float(ap2(torch.tensor(x, dtype=torch.float64)))


class _AP2STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return ap2(x)

    @staticmethod
    def backward(ctx, g):
        return g


def ap2_ste(x: torch.Tensor) -> torch.Tensor:
    """AP2 forward with an identity (straight-through) gradient."""
    return _AP2STE.apply(x)
