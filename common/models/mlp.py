"""Multi-layer perceptron: [Dropout(in)] -> (Linear -> BN -> act -> Dropout) x len(widths) -> Linear [-> BN].

BinaryConnect's permutation-invariant MNIST net is ``widths: [1024, 1024, 1024]`` with ``output_bn: true``
(the last layer has BN and no nonlinearity, its output goes to the squared hinge loss).
"""
from __future__ import annotations

import math

from torch import nn

from common.models.blocks import Activation, Init, activation, bn_layer, initialise
from common.validate import Range


def mlp(in_shape: tuple[int, ...], num_classes: int, widths: list[int] = [1024, 1024, 1024],  # noqa: B006
        batch_norm: bool = True, bn_momentum: float = 0.1, bn_eps: float = 1e-5, bn_shift: bool = False, output_bn: bool = False,
        dropout_in: float = 0.0, dropout_hidden: float = 0.0, act: Activation = "relu",
        init: Init = "torch") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout_in:
        layers.append(nn.Dropout(dropout_in))
    n_in = math.prod(in_shape)
    for i, w in enumerate(widths):
        layers += [nn.Linear(n_in, w), bn_layer("1d", w, batch_norm, bn_momentum, bn_eps, bn_shift), activation(act)]
        if dropout_hidden:
            layers.append(nn.Dropout(dropout_hidden))
        n_in = w
    layers.append(nn.Linear(n_in, num_classes))
    if output_bn:
        layers.append(bn_layer("1d", num_classes, True, bn_momentum, bn_eps, bn_shift))
    return initialise(nn.Sequential(*layers), init)


mlp.ranges = {"widths": Range(lo=1), "bn_momentum": Range(0, 1), "bn_eps": Range(lo=0, lo_open=True),
              "dropout_in": Range(0, 1, hi_open=True), "dropout_hidden": Range(0, 1, hi_open=True)}
