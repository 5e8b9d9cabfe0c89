"""Float architectures, registered by name. Quantization is applied afterwards by the conversion pass.

Every builder takes ``in_shape`` (C, H, W) and ``num_classes`` from the data module, then its own keyword
arguments, which configs give under ``model:`` and which are validated against the builder's signature.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from common.models.convnets import alexnet_bn, lenet5, vgg_small
from common.models.mlp import mlp
from common.validate import check_spec

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "lenet5": lenet5, "vgg_small": vgg_small,
                                              "alexnet_bn": alexnet_bn}


def register_model(name: str) -> Callable:
    """Decorator for a builder ``fn(in_shape, num_classes, **kwargs) -> nn.Module``; papers that define their own
    block order (XNOR-Net) register their models from their package."""

    def deco(fn: Callable) -> Callable:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


@register_model("resnet18")
def resnet18(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (He et al. 2016), randomly initialised."""
    import torchvision

    return torchvision.models.resnet18(num_classes=num_classes)


@register_model("alexnet")
def alexnet(in_shape: tuple[int, ...], num_classes: int, dropout: float = 0.5) -> nn.Module:
    """torchvision's AlexNet (single-tower variant, no LRN), randomly initialised."""
    import torchvision

    return torchvision.models.alexnet(num_classes=num_classes, dropout=dropout)


def check_model_spec(spec: dict, path: str = "model") -> dict:
    return check_spec(spec, MODELS, path, "model", skip=("in_shape", "num_classes"))


def build_model(spec: dict, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    spec = dict(spec)
    return MODELS[spec.pop("name")](tuple(in_shape), num_classes, **spec)
