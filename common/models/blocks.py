"""Pieces shared by the architectures: activation, batch norm and initialisation choices."""
from __future__ import annotations

from typing import Literal, Union

import torch
from torch import nn

from common.quant import build_quantizer, check_quantizer_spec
from common.quant.pow2 import ap2_ste

# an activation is a plain nonlinearity (clip01 = clip(x, 0, 1)), or a quantizer spec ({name: sign, ste: htanh} = BNN's binary activation)
Activation = Union[Literal["relu", "htanh", "clip01", "identity"], dict]
Init = Literal["torch", "glorot_uniform", "caffe_xavier"]


def activation(act: Activation, path: str = "model.act") -> nn.Module:
    if isinstance(act, dict):
        return build_quantizer(check_quantizer_spec(act, path))
    if act == "clip01":  # clip(x, 0, 1): DoReFa-Net's bounded activation h
        return nn.Hardtanh(0.0, 1.0)
    return {"relu": nn.ReLU, "htanh": nn.Hardtanh, "identity": nn.Identity}[act]()


class ShiftBatchNorm(nn.Module):
    """BNN's shift-based batch norm (Torch7 ``BatchNormalizationShiftPow2``), with AP2 = power-of-two rounding:

        c = x - mean_B(x);  var = mean_B(AP2(c) * c);  y = c * AP2((var + eps)^-1/2) * AP2(gamma) + beta

    Evaluation uses the running mean and variance. Gradients pass straight through AP2.
    """

    def __init__(self, n: int, eps: float = 1e-5, momentum: float = 0.125):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.training:
            mean = x.mean(dims)
            c = x - mean.view(shape)
            var = (ap2_ste(c) * c).mean(dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            c, var = x - self.running_mean.view(shape), self.running_var
        inv_std = ap2_ste((var + self.eps).rsqrt())
        return c * (inv_std * ap2_ste(self.weight)).view(shape) + self.bias.view(shape)


def bn_layer(kind: Literal["1d", "2d"], n: int, enabled: bool, momentum: float, eps: float,
             shift: bool = False) -> nn.Module:
    """BatchNorm whose running statistics follow x_run <- (1 - momentum) x_run + momentum x_batch
    (momentum = BinaryConnect's alpha); ``shift`` gives BNN's shift-based variant."""
    if not enabled:
        return nn.Identity()
    if shift:
        return ShiftBatchNorm(n, eps=eps, momentum=momentum)
    return (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(n, eps=eps, momentum=momentum)


def initialise(model: nn.Module, init: Init) -> nn.Module:
    """``torch``: PyTorch's defaults. ``glorot_uniform``: W ~ U(+-sqrt(6 / (fan_in + fan_out))), biases 0
    (Lasagne's default, used by the BinaryConnect/BNN float layers). ``caffe_xavier``: Caffe's "xavier" filler,
    W ~ U(+-sqrt(3 / fan_in)), biases 0 (TWN's Caffe models)."""
    if init != "torch":
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                if init == "glorot_uniform":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model
