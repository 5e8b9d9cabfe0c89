"""Post-training quantization: choose per-layer formats for a trained float network without training it.

A method is registered by name (``@register_ptq``) and configured under the config key ``ptq: {name: ..., **args}``
(validated against its signature, like quantizers). It looks at the float network through a ``Calibration`` --
calibration batches from the training split, each layer's weights and inputs, the validation error of any
candidate set of rules -- and returns explicit per-layer conversion rules plus a report of its search. The CLI's
``quantize`` command evaluates those rules on the test set and writes the result file; ``finetune`` then trains
the quantized network from the float weights (``common.cli``).
"""
from __future__ import annotations

import copy
import math
import torch
from torch import nn

from common.quant import check_quantizer_spec, convert, convertible_layers
from common.validate import check_spec, registrar

PTQ_METHODS: dict[str, type] = {}
register_ptq = registrar(PTQ_METHODS, "post-training method")  # @register_ptq("name") on a method class


def check_ptq_spec(spec: dict, path: str = "ptq") -> dict:
    return check_spec(spec, PTQ_METHODS, path, "post-training method")


def build_ptq(spec: dict):
    spec = dict(spec)
    return PTQ_METHODS[spec.pop("name")](**spec)


def layer_rule(name: str, **quantizers: dict | None) -> dict:
    """An explicit rule for one layer (quantizer specs validated here, so a method cannot emit a bad one)."""
    rule: dict = {"layers": [name]}
    for kind, spec in quantizers.items():
        rule[kind] = None if spec is None else check_quantizer_spec(spec, f"ptq rule {name}.{kind}")
    return rule


def merge_rules(*per_layer: dict[str, dict]) -> list[dict]:
    """{layer: {kind: spec}} mappings -> one explicit rule per layer (later mappings add kinds to a layer)."""
    layers: dict[str, dict] = {}
    for mapping in per_layer:
        for name, kinds in mapping.items():
            layers.setdefault(name, {}).update(kinds)
    return [layer_rule(n, **k) for n, k in layers.items()]


def int_length(max_abs: float) -> int:
    """ceil(log2(max|x|)), the integer bits a value of that magnitude needs (sign excluded); 0 for 0."""
    return math.ceil(math.log2(max_abs)) if max_abs > 0 else 0


class Calibration:
    """The float network and the data a post-training method may use."""

    def __init__(self, model: nn.Module, calib: list[tuple[torch.Tensor, torch.Tensor]], val_loader):
        self.model = model.eval()
        self.layers = convertible_layers(model)
        self.kind = {n: "conv" if isinstance(model.get_submodule(n), nn.Conv2d) else "fc" for n in self.layers}
        self.calib, self.val_loader = calib, val_loader
        self._float_error: float | None = None

    def weight(self, name: str) -> torch.Tensor:
        return self.model.get_submodule(name).weight.detach()

    def quantized(self, rules: list[dict]) -> nn.Module:
        return convert(copy.deepcopy(self.model), rules).eval()

    @torch.no_grad()
    def inputs(self, rules: list[dict] = ()) -> dict[str, torch.Tensor]:
        """Each layer's input over the calibration batches, in the network quantized by ``rules`` (float if none)."""
        model = self.quantized(list(rules)) if rules else self.model
        seen: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach()))
                 for n in self.layers]
        try:
            for x, _ in self.calib:
                model(x)
        finally:
            for h in hooks:
                h.remove()
        return {n: torch.cat(v) for n, v in seen.items()}

    @torch.no_grad()
    def error(self, rules: list[dict] = ()) -> float:
        """Top-1 validation error (%) of the network quantized by ``rules`` (the float network if none)."""
        if not rules and self._float_error is not None:
            return self._float_error
        model = self.quantized(list(rules)) if rules else self.model
        wrong = total = 0
        for x, y in self.val_loader:
            wrong += int((model(x).argmax(1) != y).sum())
            total += len(y)
        err = 100.0 * wrong / max(total, 1)
        if not rules:
            self._float_error = err
        return err
