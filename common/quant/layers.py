"""Quantized layers: the torch layer plus three optional quantizers (weight, input, grad) and a latent clip.

- ``weight_quantizer``: applied to the latent real-valued weight on every forward; its STE carries the
  gradient back to the latent weight.
- ``input_quantizer``: applied to the activation entering the layer.
- ``grad_quantizer``: applied to the gradient flowing back through the layer's output (W/A/G papers).
- ``latent_clip``: after every optimizer step the latent weight is clipped to [-c, c] (BinaryConnect §2.4).
- ``update_quantizer``: after every optimizer step (and once before training) the stored weight and bias are
  replaced by their quantized values: no float master copy (Gupta et al. 2015; Courbariaux et al. 2015's update
  precision). The bias gets its own copy of the quantizer (its own range, for dynamic fixed point).

The training module calls :func:`after_step` after each optimizer step.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from common.quant.base import Quantizer


class _QuantizeGrad(torch.autograd.Function):
    """Identity forward; backward returns ``quantizer(grad)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
        ctx.quantizer = quantizer
        return x.clone()  # not a view: the next layer may work in place (ReLU(inplace=True))

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
                    clip: float | None, update: Quantizer | None) -> None:
        self.weight_quantizer, self.input_quantizer, self.grad_quantizer = weight, input, grad
        self.latent_clip = clip
        self.update_quantizer = update
        self.bias_update_quantizer = copy.deepcopy(update) if update is not None and self.bias is not None else None

    @torch.no_grad()
    def store(self) -> None:
        """Clip the latent weight, then quantize the stored weight and bias (where the rule asks for it)."""
        if self.latent_clip is not None:
            self.weight.clamp_(-self.latent_clip, self.latent_clip)
        if self.update_quantizer is not None:
            self.update_quantizer.quantize_(self.weight)
            if self.bias_update_quantizer is not None:
                self.bias_update_quantizer.quantize_(self.bias)

    def quantized_weight(self) -> torch.Tensor:
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.grad_quantizer is None else _QuantizeGrad.apply(y, self.grad_quantizer)

    def bits(self) -> dict[str, int]:
        """Bits of weight, input activation and output gradient (32 where not quantized)."""
        w = min((q.bits for q in (self.weight_quantizer, self.update_quantizer) if q is not None), default=32)
        return {"w": w, **{k: (32 if q is None else q.bits)
                           for k, q in (("a", self.input_quantizer), ("g", self.grad_quantizer))}}

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", latent_clip={self.latent_clip}" if self.latent_clip is not None else "")


class QLinear(QuantMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight: Quantizer | None = None,
                 input: Quantizer | None = None, grad: Quantizer | None = None, clip: float | None = None,
                 update: Quantizer | None = None, **kw):
        super().__init__(in_features, out_features, bias, **kw)
        self._init_quant(weight, input, grad, clip, update)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(F.linear(self._in(x), self.quantized_weight(), self.bias))

    def fans(self) -> tuple[int, int]:
        return self.in_features, self.out_features


class QConv2d(QuantMixin, nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, weight: Quantizer | None = None,
                 input: Quantizer | None = None, grad: Quantizer | None = None, clip: float | None = None,
                 update: Quantizer | None = None, **kw):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kw)
        self._init_quant(weight, input, grad, clip, update)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self._conv_forward(self._in(x), self.quantized_weight(), self.bias))

    def fans(self) -> tuple[int, int]:
        k = self.kernel_size[0] * self.kernel_size[1]
        return self.in_channels // self.groups * k, self.out_channels * k


QUANT_LAYERS = (QLinear, QConv2d)


def quant_layers(model: nn.Module) -> list[tuple[str, QuantMixin]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def activation_quantizers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Quantizers placed in the model itself (``act: {name: sign}``), not owned by a quantized layer (whose weight,
    input, grad and stored-value quantizers are its submodules)."""
    from common.quant.base import Quantizer

    owned = {id(q) for _, m in quant_layers(model) for q in m.modules() if q is not m}
    return [(n, q) for n, q in model.named_modules() if isinstance(q, Quantizer) and id(q) not in owned]


def after_step(model: nn.Module) -> None:
    """After an optimizer step: latent clip and stored-value quantization of every quantized layer."""
    for _, m in quant_layers(model):
        m.store()
