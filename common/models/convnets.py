"""Convolutional architectures: LeNet-5 and the BinaryConnect/BNN CIFAR-10 "VGG-small" net."""
from __future__ import annotations

from typing import Optional

from torch import nn

from common.models.blocks import Activation, Init, activation, bn_layer, initialise
from common.validate import Range


def lenet5(in_shape: tuple[int, ...], num_classes: int, channels: list[int] = [6, 16],  # noqa: B006
           fc: list[int] = [120, 84], padding: Optional[int] = None, batch_norm: bool = False, bn_momentum: float = 0.1,  # noqa: B006
           bn_eps: float = 1e-5, bn_shift: bool = False, act: Activation = "relu", init: Init = "torch") -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998): C5(pad 2 on 28x28 input) -> pool2 -> C5 -> pool2 -> FC 120 -> FC 84 -> FC.

    Block order: Conv -> [BN] -> act -> MaxPool. Channel and FC widths are configurable (TWN's LeNet-5 uses
    32-64 channels and FC 512). ``padding`` of the first conv: by default 2 on 28x28 inputs (LeCun's 32x32 layout).
    """
    c_in, h, w = in_shape
    pad = padding if padding is not None else (2 if h == 28 else 0)
    c1, c2 = channels
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c1, 5, padding=pad), bn_layer("2d", c1, batch_norm, bn_momentum, bn_eps, bn_shift), activation(act),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), bn_layer("2d", c2, batch_norm, bn_momentum, bn_eps, bn_shift), activation(act), nn.MaxPool2d(2),
        nn.Flatten()]
    side = ((h + 2 * pad - 4) // 2 - 4) // 2
    n_in = c2 * side * side
    for f in fc:
        layers += [nn.Linear(n_in, f), bn_layer("1d", f, batch_norm, bn_momentum, bn_eps, bn_shift), activation(act)]
        n_in = f
    layers.append(nn.Linear(n_in, num_classes))
    return initialise(nn.Sequential(*layers), init)


lenet5.ranges = {"padding": Range(lo=0), "channels": Range(lo=1), "fc": Range(lo=1), "bn_momentum": Range(0, 1),
                 "bn_eps": Range(lo=0, lo_open=True)}


def vgg_small(in_shape: tuple[int, ...], num_classes: int,
              channels: list[int] = [128, 128, 256, 256, 512, 512],  # noqa: B006
              fc: list[int] = [1024, 1024], batch_norm: bool = True, bn_momentum: float = 0.1,  # noqa: B006
              bn_eps: float = 1e-5, bn_shift: bool = False, output_bn: bool = True, act: Activation = "relu",
              pool_last: bool = False, init: Init = "torch") -> nn.Sequential:
    """(2x128C3)-MP2-(2x256C3)-MP2-(2x512C3)-MP2-(2x1024FC)-10 (BinaryConnect §3, BNN §2).

    Block order as the BinaryConnect code: Conv3x3(pad 1) -> [MaxPool2 after every second conv] -> BN -> act;
    with ``pool_last`` Conv -> BN -> act -> [MaxPool2] (TWN's VGG-7). FC -> BN -> act; the last FC -> BN
    (``output_bn``) with no nonlinearity, into the loss. SVHN variant: ``channels: [64, 64, 128, 128, 256, 256]``;
    TWN's VGG-7: ``fc: [1024]``.
    """
    c_in, h, w = in_shape
    layers: list[nn.Module] = []
    for i, c in enumerate(channels):
        block = [nn.Conv2d(c_in, c, 3, padding=1), bn_layer("2d", c, batch_norm, bn_momentum, bn_eps, bn_shift),
                 activation(act)]
        if i % 2 == 1:
            block.insert(len(block) if pool_last else 1, nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        layers += block
        c_in = c
    layers.append(nn.Flatten())
    n_in = c_in * h * w
    for f in fc:
        layers += [nn.Linear(n_in, f), bn_layer("1d", f, batch_norm, bn_momentum, bn_eps, bn_shift), activation(act)]
        n_in = f
    layers.append(nn.Linear(n_in, num_classes))
    if output_bn:
        layers.append(bn_layer("1d", num_classes, True, bn_momentum, bn_eps, bn_shift))
    return initialise(nn.Sequential(*layers), init)


vgg_small.ranges = {"channels": Range(lo=1), "fc": Range(lo=1), "bn_momentum": Range(0, 1),
                    "bn_eps": Range(lo=0, lo_open=True)}


def alexnet_bn(in_shape: tuple[int, ...], num_classes: int, dropout: float = 0.1, bn_eps: float = 1e-4,
               act: Activation = "relu", init: Init = "torch") -> nn.Sequential:
    """AlexNet with BatchNorm and no LRN, the float/BWN AlexNet of XNOR-Net (Table 1; official ``alexnet`` model):
    Conv-BN-ReLU blocks 96 11x11/4, 256 5x5, 384 3x3, 384 3x3, 256 3x3 with MP3/2 after the 1st, 2nd and 5th,
    FC6 4096 (6x6 conv) and FC7 4096 (1x1 conv) each after dropout, then Conv 1000 1x1. ``act`` may be a quantizer
    (QNN's quantized activations)."""
    def block(c_in, c_out, k, stride=1, padding=0):
        return [nn.Conv2d(c_in, c_out, k, stride, padding), nn.BatchNorm2d(c_out, eps=bn_eps), activation(act)]

    layers = (block(in_shape[0], 96, 11, 4, 2) + [nn.MaxPool2d(3, 2)] + block(96, 256, 5, padding=2)
              + [nn.MaxPool2d(3, 2)] + block(256, 384, 3, padding=1) + block(384, 384, 3, padding=1)
              + block(384, 256, 3, padding=1) + [nn.MaxPool2d(3, 2), nn.Dropout(dropout)] + block(256, 4096, 6)
              + [nn.Dropout(dropout)] + block(4096, 4096, 1) + [nn.Conv2d(4096, num_classes, 1), nn.Flatten()])
    return initialise(nn.Sequential(*layers), init)


alexnet_bn.ranges = {"dropout": Range(0, 1, hi_open=True), "bn_eps": Range(lo=0, lo_open=True)}
