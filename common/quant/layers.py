"""Quantized layers: the torch layer plus three optional quantizers (weight, input, grad) and a latent clip.

- ``weight_quantizer``: applied to the latent real-valued weight on every forward; its STE carries the
  gradient back to the latent weight.
- ``input_quantizer``: applied to the activation entering the layer.
- ``grad_quantizer``: applied to the gradient flowing back through the layer's output (W/A/G papers).
- ``latent_clip``: after every optimizer step the latent weight is clipped to [-c, c] (done by the training
  module through :func:`clip_latent_weights`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.quant.base import Quantizer


class _QuantizeGrad(torch.autograd.Function):
    """Identity forward; backward returns ``quantizer(grad)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
        ctx.quantizer = quantizer
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        with torch.no_grad():
            return ctx.quantizer(grad), None


class QuantMixin:
    weight: nn.Parameter
    weight_quantizer: Quantizer | None
    input_quantizer: Quantizer | None
    grad_quantizer: Quantizer | None
    latent_clip: float | None

    def _init_quant(self, weight: Quantizer | None, input: Quantizer | None, grad: Quantizer | None,
                    clip: float | None) -> None:
        self.weight_quantizer, self.input_quantizer, self.grad_quantizer = weight, input, grad
        self.latent_clip = clip

    def quantized_weight(self) -> torch.Tensor:
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.grad_quantizer is None else _QuantizeGrad.apply(y, self.grad_quantizer)

    def bits(self) -> dict[str, int]:
        """Bits of weight, input activation and output gradient (32 where not quantized)."""
        return {k: (32 if q is None else q.bits)
                for k, q in (("w", self.weight_quantizer), ("a", self.input_quantizer), ("g", self.grad_quantizer))}

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", latent_clip={self.latent_clip}" if self.latent_clip is not None else "")


class QLinear(QuantMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight: Quantizer | None = None,
                 input: Quantizer | None = None, grad: Quantizer | None = None, clip: float | None = None, **kw):
        super().__init__(in_features, out_features, bias, **kw)
        self._init_quant(weight, input, grad, clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(F.linear(self._in(x), self.quantized_weight(), self.bias))

    def fans(self) -> tuple[int, int]:
        return self.in_features, self.out_features


class QConv2d(QuantMixin, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, weight: Quantizer | None = None,
                 input: Quantizer | None = None, grad: Quantizer | None = None, clip: float | None = None, **kw):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kw)
        self._init_quant(weight, input, grad, clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self._conv_forward(self._in(x), self.quantized_weight(), self.bias))

    def fans(self) -> tuple[int, int]:
        k = self.kernel_size[0] * self.kernel_size[1]
        return self.in_channels // self.groups * k, self.out_channels * k


QUANT_LAYERS = (QLinear, QConv2d)


def quant_layers(model: nn.Module) -> list[tuple[str, QuantMixin]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """w <- clip(w, -c, c) for every quantized layer that declares a latent clip (BinaryConnect §2.4)."""
    for _, m in quant_layers(model):
        if m.latent_clip is not None:
            m.weight.clamp_(-m.latent_clip, m.latent_clip)
