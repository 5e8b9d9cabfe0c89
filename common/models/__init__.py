"""Float architectures, registered by name. Quantization is applied afterwards by the conversion pass.

Every builder takes ``in_shape`` (C, H, W) and ``num_classes`` from the data module, then its own keyword
arguments, which configs give under ``model:`` and which are validated against the builder's signature.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from common.models.convnets import alexnet_bn, lenet5, vgg_small
from common.models.mlp import mlp
from common.validate import Range, check_spec, registrar

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "lenet5": lenet5, "vgg_small": vgg_small,
                                              "alexnet_bn": alexnet_bn}


# @register_model("name") on a builder ``fn(in_shape, num_classes, **kwargs) -> nn.Module``; papers that define
# their own block order (XNOR-Net, DoReFa, the maxout nets) register their models from their package
register_model = registrar(MODELS, "model")


@register_model("resnet18")
def resnet18(in_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-18 (He et al. 2016), randomly initialised. ``width`` multiplies the channels of every
    stage (64, 128, 256, 512): TWN's ResNet-18B has 1.5x the filters."""
    import torchvision
    from torchvision.models.resnet import BasicBlock

    m = torchvision.models.resnet18(num_classes=num_classes)
    if width != 1.0:  # same module names and forward; the stages rebuilt wider, initialised as torchvision does
        c = [round(width * w) for w in (64, 128, 256, 512)]
        m.conv1, m.bn1, m.inplanes = nn.Conv2d(3, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]), c[0]
        m.layer1, m.layer2 = m._make_layer(BasicBlock, c[0], 2), m._make_layer(BasicBlock, c[1], 2, stride=2)
        m.layer3, m.layer4 = m._make_layer(BasicBlock, c[2], 2, stride=2), m._make_layer(BasicBlock, c[3], 2, stride=2)
        m.fc = nn.Linear(c[3], num_classes)
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    return m


resnet18.ranges = {"width": Range(lo=0, lo_open=True)}


@register_model("alexnet")
def alexnet(in_shape: tuple[int, ...], num_classes: int, dropout: float = 0.5) -> nn.Module:
    """torchvision's AlexNet (single-tower variant, no LRN), randomly initialised."""
    import torchvision

    return torchvision.models.alexnet(num_classes=num_classes, dropout=dropout)


@register_model("vgg16")
def vgg16(in_shape: tuple[int, ...], num_classes: int, batch_norm: bool = False) -> nn.Module:
    """torchvision's VGG-16 (Simonyan, Zisserman 2015), randomly initialised."""
    import torchvision

    return (torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16)(num_classes=num_classes)


def check_model_spec(spec: dict, path: str = "model") -> dict:
    return check_spec(spec, MODELS, path, "model", skip=("in_shape", "num_classes"))


def build_model(spec: dict, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    spec = dict(spec)
    return MODELS[spec.pop("name")](tuple(in_shape), num_classes, **spec)
