"""Binarization: deterministic and stochastic sign with their straight-through estimators.

Sources: BinaryConnect (Courbariaux, Bengio, David 2015, §2.2-2.3) and BNN (Courbariaux, Hubara et al. 2016, §1.1).
"""
from __future__ import annotations

from typing import Literal

import torch

from common.quant import kernels
from common.quant.base import Quantizer, register, straight_through
from common.validate import Range


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigma(x) = clip((x + 1) / 2, 0, 1)  (BinaryConnect eq. 3)."""
    return ((x + 1) * 0.5).clamp_(0, 1)


_CONST: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _const(v: float, like: torch.Tensor) -> torch.Tensor:
    key = (v, like.dtype, like.device)
    if key not in _CONST:
        _CONST[key] = torch.tensor(v, dtype=like.dtype, device=like.device)
    return _CONST[key]


def binarize(x: torch.Tensor, H: float) -> torch.Tensor:
    """+H where x >= 0, else -H: x + 0.0 turns -0.0 into +0.0, then copysign (one pass with the kernels)."""
    q = kernels.scaled_sign(x, _const(H, x))
    if q is not None:
        return q
    q = x + 0.0
    return torch.copysign(_const(H, x), q, out=q)


def binarize_stochastic(x: torch.Tensor, H: float) -> torch.Tensor:
    """+H with probability hard_sigmoid(x / H), else -H: with u ~ U[0, 1), u < (x/H + 1)/2 <=> (2u - 1) H < x
    (the clip of hard_sigmoid needs no pass of its own: u < 1 and u >= 0 saturate it). One uniform per value,
    and no temporary beyond it: the comparison's 0/1 is mapped to -H/+H in place (2H - H = H exactly)."""
    u = kernels.rand_like(x).mul_(2 * H).sub_(H)
    if x.dtype != torch.get_default_dtype():  # +-H rounded to the default dtype first, as torch.where(.., H, -H) does
        return torch.where(u < x, H, -H).to(x.dtype)
    return torch.lt(u, x, out=u).mul_(2 * H).sub_(H)  # the comparison written as 0/1 straight into u


Estimator = Literal["identity", "htanh"]


@register("sign")
class Sign(Quantizer):
    """Deterministic binarization: x_b = +H if x >= 0 else -H (BinaryConnect eq. 1; ``x >= 0``, so 0 -> +H).

    ``ste``: ``identity`` (BinaryConnect weights: dC/dx := dC/dx_b) or ``htanh`` (BNN activations:
    dC/dx := dC/dx_b * 1_{|x| <= 1}).
    """

    bits = 1
    ranges = {"H": Range(lo=0, lo_open=True)}

    def __init__(self, H: float = 1.0, ste: Estimator = "identity"):
        super().__init__()
        self.H, self.ste = H, ste

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = binarize(x, self.H)
        return straight_through(x, q, 1.0 if self.ste == "htanh" else None)

    def extra_repr(self) -> str:
        return f"H={self.H}, ste={self.ste}"


@register("sign_stochastic")
class SignStochastic(Quantizer):
    """Stochastic binarization: x_b = +H with probability p = sigma(x / H), else -H (BinaryConnect eq. 2-3).

    Backward as ``sign``. In evaluation mode the paper's test-time rule applies: ``eval: real`` uses the
    real-valued x (stochastic BinaryConnect, §2.6), ``eval: sign`` the deterministic sign (BNN activations).
    """

    bits = 1
    ranges = {"H": Range(lo=0, lo_open=True)}

    def __init__(self, H: float = 1.0, ste: Estimator = "identity", eval: Literal["real", "sign"] = "real"):
        super().__init__()
        self.H, self.ste, self.eval_mode = H, ste, eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.eval_mode == "real":
            return x
        with torch.no_grad():
            q = binarize(x, self.H) if not self.training else binarize_stochastic(x, self.H)
        return straight_through(x, q, 1.0 if self.ste == "htanh" else None)

    def extra_repr(self) -> str:
        return f"H={self.H}, ste={self.ste}, eval={self.eval_mode}"


class _ScaledSignSTE(torch.autograd.Function):
    """Forward alpha * sign(W). Backward ``paper``: g * (1/n + alpha * 1_{|W|<=1}) (XNOR-Net §3.1);
    ``exact``: (1/n) sign(W) sum_filter(g * sign(W)) + alpha * g * 1_{|W|<=1}, the derivative of alpha(W) sign(W)
    with sign' := 1_{|W|<=1} (the correction noted by the XNOR-Net-PyTorch authors)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, dims: tuple[int, ...], exact: bool) -> torch.Tensor:
        alpha = w.abs().mean(dim=dims, keepdim=True)
        b = binarize(w, 1.0)
        ctx.save_for_backward(w, alpha, b)
        ctx.dims, ctx.exact = dims, exact
        return alpha * b

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, alpha, b = ctx.saved_tensors
        if w.numel() == 0:  # no weights: an empty gradient of W's shape (n below would be 0 or 0/0)
            return torch.zeros_like(g), None, None
        n = w.numel() // alpha.numel()
        mask = w.abs()
        mask = torch.le(mask, 1, out=mask) if mask.dtype == g.dtype else (mask <= 1).to(g.dtype)  # 1_{|W|<=1}
        if ctx.exact:
            grad = b * (g * b).sum(dim=ctx.dims, keepdim=True) / n + alpha * g * mask
        else:
            grad = g * (1.0 / n + alpha * mask)
        return grad, None, None


@register("scaled_sign")
class ScaledSign(Quantizer):
    """XNOR-Net's binary-weight approximation (BWN, Rastegari et al. 2016, Eq. 2-6): W ~ alpha * sign(W) with
    alpha = mean|W| = ||W||_1 / n, per output filter (``per: filter``, n = c*w*h) or over the layer (``per: layer``);
    sign(0) = +1. ``grad``: ``paper`` (the paper's printed gradient) or ``exact`` (see _ScaledSignSTE).
    """

    bits = 1

    def __init__(self, per: Literal["filter", "layer"] = "filter", grad: Literal["paper", "exact"] = "paper"):
        super().__init__()
        self.per, self.grad = per, grad

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim())) if self.per == "filter" else tuple(range(w.dim()))
        return _ScaledSignSTE.apply(w, dims, self.grad == "exact")

    def extra_repr(self) -> str:
        return f"per={self.per}, grad={self.grad}"
