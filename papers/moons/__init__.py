"""Energy-Efficient ConvNets Through Approximate Computing (Moons, De Brabandere, Van Gool, Verhelst, WACV 2016,
arXiv:1603.06777), its precision search.

Per-layer fixed point for weights and layer inputs, each layer with its own word length: a greedy search lowers one
layer's weight bits, then one layer's input bits, from ``max_bits`` down to ``min_bits`` while the validation error
stays within ``budget`` points of the float network (formats: integer length from the largest magnitude, sign
included). Reported: the chosen widths, the model size and the bit-operations sum_l b_w b_a MACs_l, against 16-bit
everywhere -- the hardware-free proxy of the paper's energy gains.
"""
from __future__ import annotations

import torch

from common.ptq import Calibration, int_length, merge_rules, register_ptq
from common.validate import Range

DEFAULT_CONFIG = "mnist_cpu_search_10"


def macs(cal: Calibration) -> dict[str, int]:
    """Multiply-accumulates per sample of every layer, measured on one calibration image."""
    out: dict[str, int] = {}
    xs = cal.inputs()
    with torch.no_grad():
        for n in cal.layers:
            layer = cal.model.get_submodule(n)
            y = layer(xs[n][:1])
            out[n] = int(y[0].numel() * layer.weight[0].numel())
    return out


@register_ptq("moons")
class MoonsSearch:
    """``budget``: validation-error points allowed over float; widths searched from ``max_bits`` to ``min_bits``."""

    ranges = {"budget": Range(lo=0), "min_bits": Range(1, 32), "max_bits": Range(2, 32)}

    def __init__(self, budget: float = 0.5, min_bits: int = 2, max_bits: int = 16):
        self.budget, self.min_bits, self.max_bits = budget, min_bits, max_bits

    @staticmethod
    def fixed(bits: int, max_abs: float) -> dict:
        """Two's complement with room for the largest magnitude: fl = bits - 1 - ceil(log2 max|x|)."""
        return {"name": "fixed", "wl": bits, "fl": bits - 1 - int_length(max_abs)}

    def choose(self, cal: Calibration) -> tuple[list[dict], dict]:
        w_max = {n: float(cal.weight(n).abs().max()) for n in cal.layers}
        x_max = {n: float(v.abs().max()) for n, v in cal.inputs().items()}
        bits = {("weight", n): self.max_bits for n in cal.layers} | {("input", n): self.max_bits for n in cal.layers}

        def rules(b: dict) -> list[dict]:
            per_layer: dict[str, dict] = {}
            for (kind, n), v in b.items():
                per_layer.setdefault(n, {})[kind] = self.fixed(v, (w_max if kind == "weight" else x_max)[n])
            return merge_rules(per_layer)

        limit = cal.error() + self.budget
        trace = []
        for key in [("weight", n) for n in cal.layers] + [("input", n) for n in cal.layers]:
            for b in range(min(self.max_bits, 10), self.min_bits - 1, -1):  # 16 -> 10, 9, ... while within budget
                err = cal.error(rules({**bits, key: b}))
                trace.append({"part": f"{key[1]}.{key[0]}", "bits": b, "val_err": round(err, 4)})
                if err > limit:
                    break
                bits[key] = b
        m = macs(cal)
        sizes = {n: cal.weight(n).numel() for n in cal.layers}
        bitops = sum(bits[("weight", n)] * bits[("input", n)] * m[n] for n in cal.layers)
        bitops16 = sum(16 * 16 * m[n] for n in cal.layers)
        return rules(bits), {
            "weight_bits": {n: bits[("weight", n)] for n in cal.layers},
            "input_bits": {n: bits[("input", n)] for n in cal.layers},
            "weight_memory_bits": sum(sizes[n] * bits[("weight", n)] for n in cal.layers),
            "bitops_per_sample": bitops, "bitops_vs_16bit": round(bitops16 / bitops, 3), "search": trace}


__all__ = ["DEFAULT_CONFIG", "MoonsSearch", "macs"]
