"""Float architectures, registered by name. Quantization is applied afterwards by the conversion pass.

Every builder takes ``in_shape`` (C, H, W) and ``num_classes`` from the data module, then its own keyword
arguments, which configs give under ``model:`` and which are validated against the builder's signature.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from common.models.convnets import lenet5, vgg_small
from common.models.mlp import mlp
from common.validate import check_spec

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "lenet5": lenet5, "vgg_small": vgg_small}


def check_model_spec(spec: dict, path: str = "model") -> dict:
    return check_spec(spec, MODELS, path, "model", skip=("in_shape", "num_classes"))


def build_model(spec: dict, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    spec = dict(spec)
    return MODELS[spec.pop("name")](tuple(in_shape), num_classes, **spec)
