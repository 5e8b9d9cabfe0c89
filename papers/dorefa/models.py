"""The reference networks of DoReFa-Net (tensorpack ``svhn-digit-dorefa.py`` and ``alexnet-dorefa.py``), float.

Block order as the reference code: Conv (no bias) -> BN -> [MaxPool] -> act, with act = clip(x, 0, 1) (``clip01``)
when activations are quantized and ReLU when they are not. The k-bit activation quantizer is the *input* quantizer
of the next layer (conversion rule ``input: {name: dorefa_act}``), so the first layer's output is quantized and the
last layer's input is only clipped, as in the reference code. The gradient quantizer sits on each quantized layer's
output, before BN.
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from common.models import register_model
from common.models.blocks import activation
from common.validate import Range

Act = Literal["clip01", "relu"]


def _bn(n: int, kind: str = "2d") -> nn.Module:
    return (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(n, momentum=0.1, eps=1e-4)  # TF decay 0.9


@register_model("dorefa_svhn")
def dorefa_svhn(in_shape: tuple[int, ...], num_classes: int, act: Act = "clip01", dropout: float = 0.5,
                resize: int = 40) -> nn.Sequential:
    """conv0 48 5x5 valid (bias) -> MP2 -> act | conv1 64 3x3 -> BN -> act | conv2 64 3x3 -> BN -> MP2 -> act |
    conv3 128 3x3 valid -> BN -> act | conv4 128 3x3 -> BN -> act | conv5 128 3x3 valid -> BN -> act | dropout |
    conv6 512 5x5 valid -> BN -> act | fc1. The reference resizes the 32x32 digits to 40x40 first (``resize``)."""
    def conv(c_in, c_out, k, same=True):
        return nn.Conv2d(c_in, c_out, k, padding=k // 2 if same else 0, bias=False)

    side = -(-(-(-(resize - 4) // 2)) // 2) - 2 - 2 - 4  # conv0, two ceil-mode pools, conv3, conv5, conv6
    return nn.Sequential(
        nn.Upsample(size=(resize, resize), mode="bilinear", align_corners=False),
        nn.Conv2d(in_shape[0], 48, 5), nn.MaxPool2d(2, ceil_mode=True), activation(act),
        conv(48, 64, 3), _bn(64), activation(act),
        conv(64, 64, 3), _bn(64), nn.MaxPool2d(2, ceil_mode=True), activation(act),
        conv(64, 128, 3, same=False), _bn(128), activation(act),
        conv(128, 128, 3), _bn(128), activation(act),
        conv(128, 128, 3, same=False), _bn(128), activation(act),
        nn.Dropout(dropout),
        conv(128, 512, 5, same=False), _bn(512), activation(act),
        nn.Flatten(), nn.Linear(512 * side * side, num_classes))


dorefa_svhn.ranges = {"dropout": Range(0, 1, hi_open=True), "resize": Range(lo=37)}


@register_model("dorefa_alexnet")
def dorefa_alexnet(in_shape: tuple[int, ...], num_classes: int, act: Act = "clip01") -> nn.Sequential:
    """conv0 96 12x12/4 valid (bias) -> act | conv1 256 5x5 g2 -> BN -> MP3/2 -> act | conv2 384 3x3 -> BN -> MP3/2
    -> act | conv3 384 3x3 g2 -> BN -> act | conv4 256 3x3 g2 -> BN -> MP3/2 valid -> act | fc0 4096 -> BN -> act |
    fc1 4096 -> BN -> act | fct. 224x224 input: 54 -> 27 -> 14 -> 6."""
    def conv(c_in, c_out, k, groups=1):
        return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)

    return nn.Sequential(
        nn.Conv2d(in_shape[0], 96, 12, stride=4), activation(act),
        conv(96, 256, 5, 2), _bn(256), nn.MaxPool2d(3, 2, padding=1), activation(act),
        conv(256, 384, 3), _bn(384), nn.MaxPool2d(3, 2, padding=1), activation(act),
        conv(384, 384, 3, 2), _bn(384), activation(act),
        conv(384, 256, 3, 2), _bn(256), nn.MaxPool2d(3, 2), activation(act),
        nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096, bias=False), _bn(4096, "1d"), activation(act),
        nn.Linear(4096, 4096, bias=False), _bn(4096, "1d"), activation(act),
        nn.Linear(4096, num_classes))
