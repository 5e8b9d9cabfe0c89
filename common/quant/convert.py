"""The conversion pass: swap ``nn.Linear``/``nn.Conv2d`` of a float model for quantized layers by config rules.

A rule names the layers it applies to and what to quantize there::

    quant:
      rules:
        - layers: all                      # all | first | last | all_but_first | all_but_last | all_but_first_last
                                           #   | first:N | last:N (the first / last N layers)
                                           #   or a list of module-name globs ("features.*", "fc"), "first", "last"
          weight: {name: sign, H: 1.0}
          input: null
          grad: null
          clip: 1.0                        # latent-weight clip [-1, 1] after each step
          init_range: 1.0                  # re-initialise latent weights U(-1, 1) (BinaryConnect), optional
          update: null                     # quantize the stored weight and bias after every step (no master copy)
        - layers: [first, last]            # a later rule overrides earlier ones for the layers it names
          weight: null

"first" and "last" are the first and last ``Linear``/``Conv2d`` in the model's declaration order (models declare
layers in the order they are applied; torchvision models do too). A glob that matches no layer is an error, so
a typo cannot silently leave a layer in float. Works on any model, torchvision's included.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Iterable

import torch
from torch import nn

from common.errors import UserError
from common.quant.base import build_quantizer
from common.quant.layers import QConv2d, QLinear

SELECTORS = ("all", "first", "last", "all_but_first", "all_but_last", "all_but_first_last")


def convertible_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]


def select(layers: str | list[str], names: list[str], path: str = "quant.rules[0].layers") -> list[str]:
    """Names (in model order) that a rule's ``layers`` selects."""
    if not names:
        return []
    if isinstance(layers, str) and re.fullmatch(r"(first|last):\d+", layers):  # the first / last N layers
        side, n = layers.split(":")
        n = int(n)
        return names[:n] if side == "first" else names[len(names) - n:] if n else []
    if isinstance(layers, str) and layers in SELECTORS:
        first, last = names[0], names[-1]
        keep = {"all": lambda n: True, "first": lambda n: n == first, "last": lambda n: n == last,
                "all_but_first": lambda n: n != first, "all_but_last": lambda n: n != last,
                "all_but_first_last": lambda n: n not in (first, last)}[layers]
        return [n for n in names if keep(n)]
    patterns: Iterable[str] = [layers] if isinstance(layers, str) else layers
    chosen: set[str] = set()
    for p in patterns:
        if p == "first" or p == "last":
            chosen.add(names[0] if p == "first" else names[-1])
            continue
        hit = [n for n in names if fnmatch.fnmatchcase(n, p)]
        if not hit:
            raise UserError(f"{path}: pattern {p!r} matches no Linear/Conv2d layer "
                            f"(layers are: {', '.join(names)})")
        chosen.update(hit)
    return [n for n in names if n in chosen]


def _swap(layer: nn.Module, rule: dict) -> nn.Module:
    q = dict(weight=build_quantizer(rule.get("weight")), input=build_quantizer(rule.get("input")),
             grad=build_quantizer(rule.get("grad")), clip=rule.get("clip"), update=build_quantizer(rule.get("update")))
    dev, dt = layer.weight.device, layer.weight.dtype
    if isinstance(layer, nn.Linear):
        new = QLinear(layer.in_features, layer.out_features, layer.bias is not None, device=dev, dtype=dt, **q)
    else:
        new = QConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                      layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                      device=dev, dtype=dt, **q)
    take_parameters(new, layer, rule)
    return new


@torch.no_grad()
def take_parameters(new: nn.Module, old: nn.Module, rule: dict) -> None:
    """A replacement layer starts from the old one's weight and bias (or U(-r, r) weights with ``init_range: r``)."""
    new.weight.copy_(old.weight)
    if old.bias is not None:
        new.bias.copy_(old.bias)
    if rule.get("init_range") is not None:
        new.weight.uniform_(-rule["init_range"], rule["init_range"])


def convert(model: nn.Module, rules: list[dict]) -> nn.Module:
    """Return ``model`` with every layer that some rule selects replaced by its quantized version (in place).

    Each layer takes the last rule that selects it, whole. Layers no rule selects stay plain torch layers.
    """
    names = convertible_layers(model)
    plan: dict[str, dict] = {}
    for i, rule in enumerate(rules):
        for n in select(rule.get("layers", "all"), names, f"quant.rules[{i}].layers"):
            plan[n] = rule
    for name, rule in plan.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _swap(getattr(parent, attr), rule))
    return model
