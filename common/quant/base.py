"""Quantizer base class and registry.

A quantizer is an ``nn.Module`` registered under the name configs use (``sign``, ``sign_stochastic``, ``float``;
later ``ternary``, ``uniform``, ``fixed``, ``dynamic_fixed``...). ``forward`` computes the paper's equation and its
backward is the paper's straight-through estimator, written as a ``torch.autograd.Function``. Callers (the
quantized layers, the conversion pass, the config validator) only use the registry, so adding a quantizer never
touches them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from common.validate import Range, check_spec


# ---------------------------------------------------------------- the straight-through estimator every quantizer uses

def ste_mask(grad: torch.Tensor, x: torch.Tensor, bound: float) -> torch.Tensor:
    """grad * 1_{|x| <= bound}, the same product as before, with the mask written as 0/1 floats straight into the
    |x| buffer (no bool temporary and no conversion pass)."""
    a = x.abs()
    if a.dtype != grad.dtype:
        return grad * (a <= bound).to(grad.dtype)
    return grad * torch.le(a, bound, out=a)


class _StraightThrough(torch.autograd.Function):
    """Forward: the already quantized ``q``. Backward: the gradient w.r.t. ``q`` is passed to the real value ``x``
    unchanged (BinaryConnect: dC/dw := dC/dw_b), or, with a ``bound`` b, multiplied by 1_{|x| <= b} (BNN's
    hard-tanh estimator with b = 1, "gradient cancellation")."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor, bound: float | None) -> torch.Tensor:
        ctx.bound = bound
        if bound is not None:
            ctx.save_for_backward(x)
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.bound is not None:
            (x,) = ctx.saved_tensors
            grad = ste_mask(grad, x, ctx.bound)
        return grad, None, None


def straight_through(x: torch.Tensor, q: torch.Tensor, bound: float | None = None) -> torch.Tensor:
    """``q`` in the forward pass, d/dx = 1 (or 1_{|x| <= bound}) in the backward pass."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return q  # no graph to build (update quantizers, evaluation): skip the autograd node
    return _StraightThrough.apply(x, q, bound)


QUANTIZERS: dict[str, type["Quantizer"]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a quantizer available to configs under ``name``."""

    def deco(cls: type) -> type:
        if name in QUANTIZERS:
            raise ValueError(f"quantizer {name!r} registered twice")
        cls.registered_name = name
        QUANTIZERS[name] = cls
        return cls

    return deco


class Quantizer(nn.Module):
    """Base of every quantizer.

    Subclasses set ``bits`` (storage bits per value, used for parameter memory and bit-operations) and
    ``ranges`` (numeric limits of their constructor arguments, checked at config validation).
    """

    registered_name: str = ""
    bits: int = 32
    ranges: dict[str, Range] = {}
    calibrating: bool = False  # set during a calibration pass: stateful quantizers observe and pass values through

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def quantize_(self, x: torch.Tensor) -> None:
        """x <- forward(x) in place, without gradient (stored-value quantization after a step). Quantizers that can
        write their result straight into ``x`` override this to save the copy."""
        x.copy_(self(x))


@register("float")
class Float(Quantizer):
    """Identity: the value stays a 32-bit float (the baseline of every paper)."""

    bits = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def check_quantizer_spec(spec: dict, path: str) -> dict:
    """Validate a ``{name: ..., **args}`` quantizer spec from a config."""
    return check_spec(spec, QUANTIZERS, path, "quantizer")


def build_quantizer(spec: dict | None) -> Quantizer | None:
    """Instantiate a validated spec; ``None`` means "not quantized"."""
    if spec is None:
        return None
    spec = dict(spec)
    return QUANTIZERS[spec.pop("name")](**spec)
