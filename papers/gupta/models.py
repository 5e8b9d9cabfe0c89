"""The CIFAR-10 network of Gupta et al. 2015 ("3 convolutional layers with pooling, then a fully connected softmax
layer"; the exact layout is not in the available material): Caffe's ``cifar10_quick``, float."""
from __future__ import annotations

from torch import nn

from common.models import register_model


@register_model("cifar10_quick")
def cifar10_quick(in_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """conv 32 5x5 pad 2 -> MaxPool 3/2 -> ReLU -> conv 32 5x5 -> ReLU -> AvgPool 3/2 -> conv 64 5x5 -> ReLU ->
    AvgPool 3/2 -> FC 64 -> FC 10 (Caffe examples/cifar10/cifar10_quick)."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, num_classes))
