"""Ternary weights of Ternary Weight Networks (Li, Zhang, Liu 2016, arXiv:1605.04711, Eq. 1-6):

    min ||W - alpha W~||^2,   W~_i = +1 if W_i > Delta, 0 if |W_i| <= Delta, -1 if W_i < -Delta,
    alpha*(Delta) = mean of |W_i| over I_Delta = {i : |W_i| > Delta}                      (Eq. 5)
    Delta* = argmax_Delta (sum_{I_Delta} |W_i|)^2 / |I_Delta|                              (Eq. 6)

``threshold: approx`` uses the paper's approximation Delta = t * mean|W| (t = 0.7 in the official code and
README, 0.75 in the 2022 text); ``threshold: exact`` solves Eq. 6 by sorting |W|. ``per: layer`` computes one
Delta and alpha per layer (the official Caffe code), ``per: filter`` one per output filter (Algorithm 1 of the
2022 text). Backward: straight-through identity into the latent real weights (Algorithm 1, lines 9-10).
"""
from __future__ import annotations

from typing import Literal

import torch

from common.quant import kernels
from common.quant.base import Quantizer, register, straight_through
from common.validate import Range


def _group_dims(w: torch.Tensor, per: str) -> tuple[int, ...]:
    return tuple(range(1, w.dim())) if per == "filter" else tuple(range(w.dim()))


def ternary_mask(w: torch.Tensor, per: str, t: float, threshold: str) -> torch.Tensor:
    """1 where |W_i| > Delta (the index set I_Delta), else 0, per layer or per output filter."""
    a = w.abs()
    dims = _group_dims(w, per)
    if threshold == "approx":
        delta = t * a.mean(dim=dims, keepdim=True)
        return torch.gt(a, delta, out=torch.empty_like(a))  # 0/1 written as floats directly (no bool temporary)
    # exact: I_Delta is always the k largest |W_i|; pick the k maximising (sum of the top k)^2 / k
    flat = a.reshape(a.shape[0], -1) if per == "filter" else a.reshape(1, -1)
    top, order = flat.sort(dim=1, descending=True)
    k = torch.arange(1, top.shape[1] + 1, dtype=w.dtype, device=w.device)
    best = (top.cumsum(1).square() / k).argmax(dim=1, keepdim=True)
    in_sorted = (torch.arange(top.shape[1], device=w.device) <= best).to(w.dtype)  # the top best+1 entries
    return torch.zeros_like(flat).scatter_(1, order, in_sorted).reshape(w.shape)


def ternarize(w: torch.Tensor, per: str = "layer", t: float = 0.7, threshold: str = "approx") -> torch.Tensor:
    """alpha * W~ (no gradient)."""
    with torch.no_grad():
        dims = _group_dims(w, per)
        group = w.numel() if per == "layer" else w[0].numel()
        if threshold == "approx":  # the steps below in fewer passes, where the kernels apply
            q = kernels.ternary(w, dims, t, group)
            if q is not None:
                return q
        if threshold == "approx":  # the mask of ternary_mask, reusing |W| and its buffer for |W| * mask
            a = w.abs()
            mask = torch.gt(a, t * a.mean(dim=dims, keepdim=True), out=torch.empty_like(a))
            a.mul_(mask)
        else:
            mask = ternary_mask(w, per, t, threshold)
            a = w.abs().mul_(mask)
        alpha = a.sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True).clamp_min(1)
        # alpha * sign(W) * mask: |alpha| or 0 with W's sign (where the mask is 1, W != 0, so sign(W) = +-1)
        return torch.copysign(mask.mul_(alpha), w, out=mask)


@register("ternary")
class Ternary(Quantizer):
    """TWN ternary weights alpha * {-1, 0, +1} (2 bits each, plus one float alpha per layer or filter)."""

    bits = 2
    ranges = {"t": Range(lo=0, lo_open=True)}

    def __init__(self, t: float = 0.7, per: Literal["layer", "filter"] = "layer",
                 threshold: Literal["approx", "exact"] = "approx"):
        super().__init__()
        self.t, self.per, self.threshold = t, per, threshold

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return straight_through(w, ternarize(w, self.per, self.t, self.threshold))

    def extra_repr(self) -> str:
        return f"t={self.t}, per={self.per}, threshold={self.threshold}"
