"""Inference cost of a (quantized) network: multiply-accumulates and bit-operations.

BOPs (bit-operations) = sum over Conv/Linear layers of MACs x weight bits x input-activation bits, the usual
hardware-neutral measure of low-bit inference cost (a float layer counts 32 x 32 per MAC). A layer's input bits
are its own input quantizer's, else those of an activation quantizer in the model (``act: {name: sign}``) that ran
since the previous layer, else 32. Parameter memory is ``common.module.parameter_bits``.
"""
from __future__ import annotations

import torch
from torch import nn

from common.quant import activation_quantizers


def layer_macs(layer: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one sample through a Conv2d/Linear layer, given its output for that sample."""
    if isinstance(layer, nn.Conv2d):
        per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        return out[0].numel() * per_output
    return out[0].numel() * layer.in_features


@torch.no_grad()
def inference_cost(model: nn.Module, in_shape: tuple[int, ...]) -> dict:
    """{'macs', 'bops'} of one inference of ``model`` on an input of shape ``in_shape`` (without the batch)."""
    state = {"a": 32, "macs": 0, "bops": 0}

    def on_quantizer(module, _inp, _out):
        state["a"] = module.bits

    def on_layer(module, _inp, out):
        macs = layer_macs(module, out)
        w = module.bits()["w"] if hasattr(module, "bits") else 32
        quantizer = getattr(module, "input_quantizer", None)
        a = quantizer.bits if quantizer is not None else state["a"]
        state["macs"] += macs
        state["bops"] += macs * w * a
        state["a"] = 32

    hooks = [m.register_forward_hook(on_layer) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks += [q.register_forward_hook(on_quantizer) for _, q in activation_quantizers(model)]
    training = model.training
    model.eval()
    try:
        model(torch.zeros(2, *in_shape))  # 2 samples: batch norm and per-sample quantizers need no special case
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return {"macs": state["macs"], "bops": state["bops"]}
