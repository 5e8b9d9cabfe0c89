"""Going Deeper with Embedded FPGA Platform for Convolutional Neural Network (Qiu et al., FPGA 2016), its data
quantization flow.

Dynamic precision: every layer has its own fractional length for weights, f = argmin_f sum |W - W(bw, f)|, and for
data (feature maps), chosen greedily layer by layer as the argmin of the L1 error of the layer's input computed on
calibration images with the earlier layers already quantized; round to nearest, no retraining. Static precision,
the contrast: one fractional length for all weights and one for all data.
"""
from __future__ import annotations

from typing import Literal

import torch

from common.ptq import Calibration, int_length, merge_rules, register_ptq
from common.quant.fixed import to_fixed
from common.validate import Range

DEFAULT_CONFIG = "mnist_cpu_dynamic_8_4"


def l1_error(xs: list[torch.Tensor], bits: list[int], fl: int) -> float:
    return sum(float((x - to_fixed(x, b, fl)).abs().sum()) for x, b in zip(xs, bits))


def best_fl(xs: list[torch.Tensor], bits: list[int], span: int) -> tuple[int, dict[int, float]]:
    """argmin over fractional lengths around the one that just holds the largest value, of the summed L1 error."""
    top = max(float(x.abs().max()) for x in xs)
    f0 = min(bits) - 1 - int_length(top)
    errors = {f: l1_error(xs, bits, f) for f in range(f0 - span, f0 + span + 1)}
    return min(errors, key=errors.get), errors


@register_ptq("qiu")
class QiuQuantization:
    """``conv_bits``/``fc_bits``: weight word lengths (sign included); ``data_bits``: feature maps (every layer's
    input, the image included); ``precision``: ``dynamic`` (per layer) or ``static`` (one per kind)."""

    ranges = {"conv_bits": Range(1, 32), "fc_bits": Range(1, 32), "data_bits": Range(1, 32), "span": Range(0, 32)}

    def __init__(self, conv_bits: int = 8, fc_bits: int = 4, data_bits: int = 8,
                 precision: Literal["dynamic", "static"] = "dynamic", span: int = 4):
        self.bits = {"conv": conv_bits, "fc": fc_bits}
        self.data_bits, self.precision, self.span = data_bits, precision, span

    def fixed(self, bits: int, fl: int) -> dict:
        return {"name": "fixed", "wl": bits, "fl": fl}

    def choose(self, cal: Calibration) -> tuple[list[dict], dict]:
        wbits = {n: self.bits[cal.kind[n]] for n in cal.layers}
        if self.precision == "static":
            f, _ = best_fl([cal.weight(n) for n in cal.layers], list(wbits.values()), self.span)
            weights = {n: {"weight": self.fixed(wbits[n], f)} for n in cal.layers}
            xs = cal.inputs()
            fd, _ = best_fl(list(xs.values()), [self.data_bits] * len(xs), self.span)
            data = {n: {"input": self.fixed(self.data_bits, fd)} for n in cal.layers}
            report = {"weight_fl": f, "data_fl": fd}
        else:
            weights = {n: {"weight": self.fixed(wbits[n], best_fl([cal.weight(n)], [wbits[n]], self.span)[0])}
                       for n in cal.layers}
            data: dict[str, dict] = {}
            for n in cal.layers:  # greedy: layer n's input measured with every earlier layer already quantized
                x = cal.inputs(merge_rules(weights, data))[n]
                data[n] = {"input": self.fixed(self.data_bits, best_fl([x], [self.data_bits], self.span)[0])}
            report = {"weight_fl": {n: weights[n]["weight"]["fl"] for n in cal.layers},
                      "data_fl": {n: data[n]["input"]["fl"] for n in cal.layers}}
        rules = merge_rules(weights, data)
        return rules, {**report, "weights_only_val_err": round(cal.error(merge_rules(weights)), 4)}


__all__ = ["DEFAULT_CONFIG", "QiuQuantization", "best_fl"]
