"""Optimizers by name: ``adam``, ``sgd`` (torch) and BNN's ``shift_adamax``.

Per-layer learning-rate scales (BinaryConnect/BNN "Glorot" scaling) arrive as the ``lr_scale`` key of a parameter
group. Torch optimizers get it folded into the group's learning rate; ``shift_adamax`` applies it after rounding
the base step to a power of two, as the BNN Torch7 code does.
"""
from __future__ import annotations

import torch

from common.quant.pow2 import ap2, ap2_scalar


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax (BNN Torch7 ``adaMax_binary_clip_shift``):

        m <- b1 m + (1 - b1) g;  v <- max(b2 v, |g|);  step = AP2(lr / (1 - b1^t));  v_hat = AP2(v) + eps
        w <- w - step * (m / v_hat) * lr_scale

    with b1 = 0.9, b2 = 0.999, eps = 2^-27 by default.
    """

    def __init__(self, params, lr: float = 2 ** -6, betas: tuple[float, float] = (0.9, 0.999), eps: float = 2 ** -27):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, lr_scale=1.0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
                m, v, g = state["m"], state["v"], p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                torch.maximum(v * b2, g.abs(), out=v)
                step = ap2_scalar(group["lr"] / (1 - b1 ** state["t"]))
                p.addcdiv_(m, ap2(v) + group["eps"], value=-step * group["lr_scale"])
        return loss


def build_optimizer(name: str, groups: list[dict], *, lr: float, momentum: float = 0.0, nesterov: bool = False,
                    weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.Optimizer:
    if name == "shift_adamax":
        return ShiftAdaMax(groups, lr=lr)
    folded = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": g.get("lr", lr) * g.get("lr_scale", 1.0)}
              for g in groups]
    if name == "adam":
        return torch.optim.Adam(folded, lr=lr, weight_decay=weight_decay, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(folded, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    raise ValueError(name)
