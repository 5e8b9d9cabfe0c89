"""DoReFa-Net's k-bit weights, activations and gradients (Zhou, Wu, Ni, Zhou, Wen, Zou 2016, arXiv:1606.06160, §2):

    quantize_k(r) = round((2^k - 1) r) / (2^k - 1),  r in [0, 1],  d/dr := 1 (straight through)     (§2.2)
    weights, k = 1:  r_o = sign(r_i) * E(|r_i|),  E over the whole layer, a constant for the gradient (Eq. 4)
    weights, k > 1:  r_o = 2 quantize_k( tanh(r_i) / (2 max|tanh(r)|) + 1/2 ) - 1                     (Eq. 5)
    activations:     r_o = quantize_k(clip(r, 0, 1))   (the clip's derivative: the 1_{0<r<1} mask, as autograd's clamp)   (Eq. 6)
    gradients:       dr -> 2 max0(|dr|) [ quantize_k( dr / (2 max0(|dr|)) + 1/2 + N(k) ) - 1/2 ],
                     N(k) = sigma / (2^k - 1), sigma ~ U(-1/2, 1/2),  max0 per sample (all axes but the batch)
                     (Eq. 7; clipped to [0, 1] after the noise, as the reference code)

Rounding is torch.round (half to even); ties have probability zero for real-valued inputs.
"""
from __future__ import annotations

import torch

from common.quant import kernels
from common.quant.base import Quantizer, register, straight_through
from common.validate import Range

BITS = {"bits": Range(1, 16)}


def quantize_k(r: torch.Tensor, k: int) -> torch.Tensor:
    """The 2^k levels {0, 1/(2^k-1), ..., 1} of r in [0, 1], with the straight-through gradient."""
    n = 2**k - 1
    with torch.no_grad():
        q = (r * n).round_().div_(n)
    return straight_through(r, q)


def _clip_quantize(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(round(clip(x, 0, 1) n) / n, the 0/1 float mask where autograd's clamp passes the gradient: 0 < x < 1,
    bounds and NaN excluded -- the ones of clip(x, 0, 1) == x, kept strictly inside by hardtanh's kernel)."""
    c = x.clamp(0, 1)
    mask = torch.ops.aten.hardtanh_backward(torch.eq(c, x, out=torch.empty_like(c)), x, 0.0, 1.0)
    return c.mul_(n).round_().div_(n), mask


class _ClipQuantize(torch.autograd.Function):
    """quantize_k(clip(x, 0, 1)) with its gradient in one node: the straight-through quantize_k times the clip's
    derivative as autograd's clamp computes it (g where 0 < x < 1, exactly 0 elsewhere), as one fused pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        q, mask = _clip_quantize(x, n)
        ctx.save_for_backward(mask)
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        if grad.dtype == mask.dtype and grad.shape == mask.shape:  # g where mask == 1, else 0 (hardtanh's kernel)
            return torch.ops.aten.hardtanh_backward(grad, mask, 0.5, 1.5), None
        return torch.where(mask.bool(), grad, 0.0), None


@register("dorefa_weight")
class DorefaWeight(Quantizer):
    """k-bit DoReFa weights: k = 1 -> E|W| * sign(W) (sign(0) = +1); k > 1 -> tanh-normalised quantize_k, in [-1, 1]."""

    ranges = BITS

    def __init__(self, bits: int = 1):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits == 1:
            with torch.no_grad():  # sign(W) E|W| = copysign(E|W|, W + 0.0), as binarize(W, 1) * E|W| (1 * E = E)
                e = w.abs().mean()
                q = kernels.scaled_sign(w, e)
                if q is None:
                    q = w + 0.0
                    q = torch.copysign(e, q, out=q)
            return straight_through(w, q)
        t = torch.tanh(w)
        if t.numel() == 0:  # no weights: max|tanh(W)| has nothing to reduce; Eq. 5 maps none to none
            return 2 * quantize_k(t + 0.5, self.bits) - 1
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
        if not (x.requires_grad and torch.is_grad_enabled()):
            with torch.no_grad():
                return _clip_quantize(x, 2**self.bits - 1)[0]
        return _ClipQuantize.apply(x, 2**self.bits - 1)

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
        if g.numel() == 0:  # no values (and no per-sample maximum to take): Eq. 7 gives none, drawing no noise
            return g.clone()
        if g.requires_grad and torch.is_grad_enabled():  # differentiable (not as a grad quantizer): out of place
            dims = tuple(range(1, g.dim()))
            m = g.abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
            x = g / (2 * m) + 0.5 + (torch.rand_like(g) - 0.5) / n
            return 2 * m * (torch.round(x.clamp_(0, 1) * n) / n - 0.5)
        if g.dim() >= 2:  # max|g| per sample as max(-min, max): no |g| temporary
            lo, hi = torch.aminmax(g.reshape(g.shape[0], -1), dim=1, keepdim=True)
            m = torch.maximum(lo.neg_(), hi).view(g.shape[0], *([1] * (g.dim() - 1)))
        else:
            m = g.abs().amax(dim=tuple(range(1, g.dim())), keepdim=True)
        m2 = 2 * m.clamp_min_(torch.finfo(g.dtype).tiny)
        # 2 m (round(clip(g / (2m) + 1/2 + (u - 1/2) / n, 0, 1) n) / n - 1/2), the same operations in the same
        # order as the equation, in place on one buffer
        x = torch.div(g, m2).add_(0.5).add_(kernels.rand_like(g).sub_(0.5).div_(n))
        return x.clamp_(0, 1).mul_(n).round_().div_(n).sub_(0.5).mul_(m2)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
