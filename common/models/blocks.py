"""Pieces shared by the architectures: activation, batch norm and initialisation choices."""
from __future__ import annotations

from typing import Literal

from torch import nn

Activation = Literal["relu", "htanh", "identity"]
Init = Literal["torch", "glorot_uniform"]


def activation(name: Activation) -> nn.Module:
    return {"relu": nn.ReLU, "htanh": nn.Hardtanh, "identity": nn.Identity}[name]()


def bn_layer(kind: Literal["1d", "2d"], n: int, enabled: bool, momentum: float, eps: float) -> nn.Module:
    """BatchNorm whose running statistics follow x_run <- (1 - momentum) x_run + momentum x_batch
    (momentum = BinaryConnect's alpha)."""
    if not enabled:
        return nn.Identity()
    return (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(n, eps=eps, momentum=momentum)


def initialise(model: nn.Module, init: Init) -> nn.Module:
    """``torch``: PyTorch's defaults. ``glorot_uniform``: W ~ U(+-sqrt(6 / (fan_in + fan_out))), biases 0
    (Lasagne's default, used by the BinaryConnect/BNN float layers)."""
    if init == "glorot_uniform":
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model
