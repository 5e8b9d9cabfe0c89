"""XNOR-Net's own block order, B-A-C-P: BatchNorm -> binary activation -> binary conv (x K) -> [ReLU] -> pool
(Rastegari et al. 2016, §3.2, Fig. 3; Table 3b: C-B-A-P loses 14 points top-1 on AlexNet).

The binary layers binarize their input with ``input`` (sign with the hard-tanh estimator), their weights with
``weight`` (alpha * sign(W), alpha = mean|W| per filter) and, with ``act_scale``, multiply the output by the
activation scale K = A * k (Eq. 11): A = mean over channels of |I|, k a kh x kw box filter of 1/(kh kw), applied
with the conv's stride and padding. For fully connected layers K is beta = ||X||_1 / n per sample. The first and
last layers are real-valued (§4.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.models import register_model
from common.models.blocks import Init, initialise
from common.quant import QConv2d, QLinear, build_quantizer, check_quantizer_spec
from common.validate import Range

SIGN_HTANH = {"name": "sign", "ste": "htanh"}
SCALED_SIGN = {"name": "scaled_sign", "per": "filter"}


class XnorConv2d(QConv2d):
    def __init__(self, *args, act_scale: bool = True, **kw):
        super().__init__(*args, **kw)
        self.act_scale = act_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(self._in(x), self.quantized_weight(), None)
        if self.act_scale:
            a = x.abs().mean(1, keepdim=True)
            y = y * F.avg_pool2d(a, self.kernel_size, self.stride, self.padding, count_include_pad=True)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return self._out(y)


class XnorLinear(QLinear):
    def __init__(self, *args, act_scale: bool = True, **kw):
        super().__init__(*args, **kw)
        self.act_scale = act_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(self._in(x), self.quantized_weight())
        if self.act_scale:
            y = y * x.abs().mean(1, keepdim=True)
        if self.bias is not None:
            y = y + self.bias
        return self._out(y)


class Blocks:
    """Builds B-A-C-P blocks with one set of options."""

    def __init__(self, weight: dict, input: dict, act_scale: bool, relu: bool, bn_affine: bool, bn_eps: float,
                 bn_momentum: float, clip: float | None):
        self.weight = check_quantizer_spec(weight, "model.weight")
        self.input = check_quantizer_spec(input, "model.input")
        self.act_scale, self.relu, self.clip = act_scale, relu, clip
        self.bn = dict(affine=bn_affine, eps=bn_eps, momentum=bn_momentum)

    def _q(self) -> dict:
        return dict(weight=build_quantizer(self.weight), input=build_quantizer(self.input), clip=self.clip,
                    act_scale=self.act_scale)

    def conv(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, pool: nn.Module | None = None):
        layers = [nn.BatchNorm2d(c_in, **self.bn), XnorConv2d(c_in, c_out, k, stride, padding, **self._q())]
        return layers + ([nn.ReLU()] if self.relu else []) + ([pool] if pool is not None else [])

    def linear(self, n_in: int, n_out: int):
        layers = [nn.BatchNorm1d(n_in, **self.bn), XnorLinear(n_in, n_out, **self._q())]
        return layers + ([nn.ReLU()] if self.relu else [])


_COMMON = {"bn_eps": Range(lo=0, lo_open=True), "bn_momentum": Range(0, 1), "clip": Range(lo=0, lo_open=True)}


@register_model("xnor_lenet5")
def xnor_lenet5(in_shape: tuple[int, ...], num_classes: int, channels: list[int] = [20, 50],  # noqa: B006
                fc: list[int] = [500], weight: dict = SCALED_SIGN, input: dict = SIGN_HTANH,  # noqa: B006
                act_scale: bool = True, relu: bool = True, bn_affine: bool = True, bn_eps: float = 1e-4,
                bn_momentum: float = 0.1, clip: float | None = 1.0, init: Init = "torch") -> nn.Sequential:
    """LeNet-5 in XNOR-Net's block order (the MNIST net of the XNOR-Net-PyTorch reproduction):
    Conv(real) -> BN -> ReLU -> MP2, [BN -> sign -> XnorConv -> ReLU -> MP2], [BN -> sign -> XnorLinear -> ReLU]...,
    Linear(real)."""
    b = Blocks(weight, input, act_scale, relu, bn_affine, bn_eps, bn_momentum, clip)
    c_in, h, _ = in_shape
    c1, c2 = channels
    layers: list[nn.Module] = [nn.Conv2d(c_in, c1, 5), nn.BatchNorm2d(c1, eps=bn_eps, momentum=bn_momentum),
                               nn.ReLU(), nn.MaxPool2d(2)]
    layers += b.conv(c1, c2, 5, pool=nn.MaxPool2d(2)) + [nn.Flatten()]
    n_in = c2 * (((h - 4) // 2 - 4) // 2) ** 2
    for f in fc:
        layers += b.linear(n_in, f)
        n_in = f
    layers.append(nn.Linear(n_in, num_classes))
    return initialise(nn.Sequential(*layers), init)


xnor_lenet5.ranges = {"channels": Range(lo=1), "fc": Range(lo=1), **_COMMON}


@register_model("xnor_vgg_small")
def xnor_vgg_small(in_shape: tuple[int, ...], num_classes: int,
                   channels: list[int] = [128, 128, 256, 256, 512, 512],  # noqa: B006
                   fc: list[int] = [1024, 1024], weight: dict = SCALED_SIGN, input: dict = SIGN_HTANH,  # noqa: B006
                   act_scale: bool = True, relu: bool = False, bn_affine: bool = True, bn_eps: float = 1e-4,
                   bn_momentum: float = 0.1, clip: float | None = 1.0, init: Init = "torch") -> nn.Sequential:
    """The BinaryConnect/BNN CIFAR-10 net (XNOR-Net §4: "the same architecture as BNN") in B-A-C-P order:
    first conv real (Conv -> BN -> ReLU), then [BN -> sign -> XnorConv -> [MP2 every second conv]], FC blocks
    likewise, and a real last layer."""
    b = Blocks(weight, input, act_scale, relu, bn_affine, bn_eps, bn_momentum, clip)
    c_in, h, w = in_shape
    layers: list[nn.Module] = [nn.Conv2d(c_in, channels[0], 3, padding=1),
                               nn.BatchNorm2d(channels[0], eps=bn_eps, momentum=bn_momentum), nn.ReLU()]
    for i in range(1, len(channels)):
        pool = nn.MaxPool2d(2) if i % 2 == 1 else None
        layers += b.conv(channels[i - 1], channels[i], 3, padding=1, pool=pool)
        if pool is not None:
            h, w = h // 2, w // 2
    layers.append(nn.Flatten())
    n_in = channels[-1] * h * w
    for f in fc:
        layers += b.linear(n_in, f)
        n_in = f
    layers += [nn.BatchNorm1d(n_in, eps=bn_eps, momentum=bn_momentum), nn.ReLU(), nn.Linear(n_in, num_classes)]
    return initialise(nn.Sequential(*layers), init)


xnor_vgg_small.ranges = {"channels": Range(lo=1), "fc": Range(lo=1), **_COMMON}


@register_model("xnor_alexnet")
def xnor_alexnet(in_shape: tuple[int, ...], num_classes: int, weight: dict = SCALED_SIGN,  # noqa: B006
                 input: dict = SIGN_HTANH, act_scale: bool = True, relu: bool = False,  # noqa: B006
                 bn_affine: bool = False, bn_eps: float = 1e-4, bn_momentum: float = 0.1, clip: float | None = 1.0,
                 init: Init = "torch") -> nn.Sequential:
    """AlexNet-XNOR of the official code (allenai/XNOR-Net ``alexnetxnor``): Conv 96 11x11/4 (real) -> BN -> ReLU ->
    MP3/2, B-A-C 256 5x5 + MP3/2, B-A-C 384 3x3, B-A-C 384 3x3, B-A-C 256 3x3 + MP3/2, B-A-C 4096 6x6 (FC6 as a
    conv), B-A-C 4096 1x1 (FC7), BN -> ReLU -> Conv 1000 1x1 (real). BN without affine parameters, eps 1e-4."""
    b = Blocks(weight, input, act_scale, relu, bn_affine, bn_eps, bn_momentum, clip)
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], 96, 11, 4, 2), nn.BatchNorm2d(96, eps=bn_eps), nn.ReLU(),
                               nn.MaxPool2d(3, 2)]
    layers += b.conv(96, 256, 5, padding=2, pool=nn.MaxPool2d(3, 2))
    layers += b.conv(256, 384, 3, padding=1) + b.conv(384, 384, 3, padding=1)
    layers += b.conv(384, 256, 3, padding=1, pool=nn.MaxPool2d(3, 2))
    layers += b.conv(256, 4096, 6) + b.conv(4096, 4096, 1)
    layers += [nn.BatchNorm2d(4096, eps=bn_eps), nn.ReLU(), nn.Conv2d(4096, num_classes, 1), nn.Flatten()]
    return initialise(nn.Sequential(*layers), init)


xnor_alexnet.ranges = dict(_COMMON)



class XnorBasicBlock(nn.Module):
    """ResNet basic block in B-A-C order: [BN -> sign -> XnorConv3x3] x 2 plus the shortcut; shortcut B (a 1x1
    projection, kept real, with BN) where the shape changes (XNOR-Net Table 2, "ResNet-18 (shortcut B)")."""

    def __init__(self, b: Blocks, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*b.conv(c_in, c_out, 3, stride, 1), *b.conv(c_out, c_out, 3, 1, 1))
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


@register_model("xnor_resnet18")
def xnor_resnet18(in_shape: tuple[int, ...], num_classes: int, weight: dict = SCALED_SIGN,  # noqa: B006
                  input: dict = SIGN_HTANH, act_scale: bool = True, relu: bool = False,  # noqa: B006
                  bn_affine: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, clip: float | None = 1.0,
                  init: Init = "torch") -> nn.Sequential:
    """ResNet-18 in B-A-C-P order: the real 7x7/2 stem (Conv -> BN -> ReLU -> MP3/2), four stages of two
    ``XnorBasicBlock`` (64, 128, 256, 512 channels), BN -> ReLU -> global average pool -> real FC."""
    b = Blocks(weight, input, act_scale, relu, bn_affine, bn_eps, bn_momentum, clip)
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, width in enumerate((64, 128, 256, 512)):
        layers += [XnorBasicBlock(b, c, width, 1 if i == 0 else 2), XnorBasicBlock(b, width, width, 1)]
        c = width
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return initialise(nn.Sequential(*layers), init)


xnor_resnet18.ranges = dict(_COMMON)
