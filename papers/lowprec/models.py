"""The maxout networks of Courbariaux, Bengio, David 2015 (after Goodfellow et al. 2013), float.

A maxout unit is the max over ``pieces`` linear (or convolutional) pieces: one Linear/Conv2d with units x pieces
outputs, then a max over each group of pieces, so the conversion pass quantizes the pieces like any layer.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from common.models import register_model
from common.validate import Range


class Maxout(nn.Module):
    """Max over groups of ``pieces`` consecutive channels (dim 1): (N, U*k, ...) -> (N, U, ...)."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (x.shape[1] // self.pieces, self.pieces)).amax(2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def _init(layer: nn.Module, pieces: int) -> nn.Module:
    """W ~ U(+-sqrt(6 / (fan_in + fan_out * pieces))) (their code's maxout init), biases 0."""
    fan_in = layer.weight[0].numel()
    fan_out = layer.weight.shape[0] // pieces * layer.weight[0, 0].numel()
    bound = math.sqrt(6 / (fan_in + fan_out * pieces))
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


@register_model("maxout_mlp")
def maxout_mlp(in_shape: tuple[int, ...], num_classes: int, units: list[int] = [240, 240],  # noqa: B006
               pieces: int = 5, dropout_in: float = 0.2, dropout_hidden: float = 0.5) -> nn.Sequential:
    """PI-MNIST: [Dropout] -> (Linear(units x pieces) -> maxout -> Dropout) x 2 -> Linear -> softmax.
    The softmax layer starts at zero, as their code."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout_in)]
    n_in = math.prod(in_shape)
    for u in units:
        layers += [_init(nn.Linear(n_in, u * pieces), pieces), Maxout(pieces), nn.Dropout(dropout_hidden)]
        n_in = u
    out = nn.Linear(n_in, num_classes)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


maxout_mlp.ranges = {"units": Range(lo=1), "pieces": Range(lo=1), "dropout_in": Range(0, 1, hi_open=True),
                     "dropout_hidden": Range(0, 1, hi_open=True)}


@register_model("maxout_convnet")
def maxout_convnet(in_shape: tuple[int, ...], num_classes: int, channels: list[int] = [64, 128, 128],  # noqa: B006
                   conv_pieces: int = 2, fc_units: int = 400, fc_pieces: int = 5, dropout_in: float = 0.2,
                   dropout_hidden: float = 0.5) -> nn.Sequential:
    """CIFAR-10 / SVHN: 3 x (Conv 5x5 pad 2, ``conv_pieces`` pieces -> maxout -> MaxPool 3/2 -> Dropout) ->
    maxout FC ``fc_units`` x ``fc_pieces`` -> Dropout -> Linear -> softmax."""
    c_in, h, _ = in_shape
    layers: list[nn.Module] = [nn.Dropout(dropout_in)]
    for c in channels:
        layers += [_init(nn.Conv2d(c_in, c * conv_pieces, 5, padding=2), conv_pieces), Maxout(conv_pieces),
                   nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(dropout_hidden)]
        c_in, h = c, math.ceil((h - 3) / 2) + 1
    out = nn.Linear(fc_units, num_classes)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, nn.Flatten(), _init(nn.Linear(c_in * h * h, fc_units * fc_pieces), fc_pieces),
                         Maxout(fc_pieces), nn.Dropout(dropout_hidden), out)


maxout_convnet.ranges = {"channels": Range(lo=1), "conv_pieces": Range(lo=1), "fc_units": Range(lo=1),
                         "fc_pieces": Range(lo=1), "dropout_in": Range(0, 1, hi_open=True),
                         "dropout_hidden": Range(0, 1, hi_open=True)}
