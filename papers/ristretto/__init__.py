"""Ristretto: Hardware-oriented Approximation of Convolutional Neural Networks (Gysel, Motamedi, Ghiasi, ICLR 2016
workshop, arXiv:1604.03168; code pmgysel/caffe).

Dynamic fixed point per layer for convolution weights, FC weights and layer inputs: the integer length from the
largest magnitude (weights: ceil(log2 max|w| + 1), sign included; activations one bit less), the word length
searched over 16/8/4/2/1 bits for each part with the others in float, the smallest within the error margin kept,
the three combined; fine-tuning with stochastically rounded weights and untrimmed activations.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from common.ptq import Calibration, int_length, merge_rules, register_ptq
from common.quant.base import register, straight_through
from common.quant.fixed import Fixed, Rounding, Span, to_fixed
from common.validate import Range

DEFAULT_CONFIG = "mnist_cpu_search"
FINETUNE = ["mnist_cpu_4_4_4"]  # configs the sweep also fine-tunes after quantizing (``finetune``)


@register("ristretto_fixed")
class RistrettoFixed(Fixed):
    """A static fixed-point format (``fixed``) as Ristretto fine-tunes with it: at test time the format itself; while
    training, ``training: stochastic`` rounds stochastically (the weights), ``off`` passes values through untrimmed
    (the activations), ``same`` rounds as at test time."""

    def __init__(self, wl: int = 16, fl: int = 8, rounding: Rounding = "nearest", range: Span = "twos_complement",
                 training: Literal["same", "stochastic", "off"] = "same"):
        super().__init__(wl, fl, rounding, range)
        self.in_training = training

    def _rounding(self) -> str | None:
        """How values are rounded now; None: not at all."""
        if not self.training or self.in_training == "same":
            return self.rounding
        return None if self.in_training == "off" else "stochastic"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rounding = self._rounding()
        if rounding is None:
            return x
        with torch.no_grad():
            q = to_fixed(x, self.wl, self.fl, rounding, self.span)
        return straight_through(x, q)

    @torch.no_grad()
    def quantize_(self, x: torch.Tensor) -> None:
        rounding = self._rounding()
        if rounding is not None:
            to_fixed(x, self.wl, self.fl, rounding, self.span, out=x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", training={self.in_training}" if self.in_training != "same" else "")


@register_ptq("ristretto")
class RistrettoSearch:
    """``error_margin``: accuracy points a part may cost (1 = the paper's 1%). ``conv_bits``/``fc_bits``/``act_bits``:
    fix a part's word length instead of searching it (e.g. 8/8/8)."""

    ranges = {"error_margin": Range(lo=0), "widths": Range(1, 32), "conv_bits": Range(1, 32), "fc_bits": Range(1, 32),
              "act_bits": Range(1, 32)}

    def __init__(self, error_margin: float = 1.0, widths: list[int] = [16, 8, 4, 2, 1],  # noqa: B006
                 conv_bits: int | None = None, fc_bits: int | None = None, act_bits: int | None = None):
        self.margin, self.widths = error_margin, sorted(widths, reverse=True)
        self.fixed_bits = {"conv": conv_bits, "fc": fc_bits, "act": act_bits}

    @staticmethod
    def weight_fl(bits: int, max_abs: float) -> int:
        return bits - (int_length(max_abs) + 1)  # IL = ceil(log2(max|w|) + 1): the sign bit included

    @staticmethod
    def act_fl(bits: int, max_abs: float) -> int:
        return bits - int_length(max_abs)  # one bit less headroom than weights: the largest values saturate

    def part(self, cal: Calibration, which: str, bits: int, x_max: dict[str, float]) -> dict[str, dict]:
        if which == "act":
            return {n: {"input": {"name": "ristretto_fixed", "wl": bits, "fl": self.act_fl(bits, x_max[n]), "training": "off"}}
                    for n in cal.layers}
        return {n: {"weight": {"name": "ristretto_fixed", "wl": bits, "fl": self.weight_fl(bits, float(cal.weight(n).abs().max())),
                               "training": "stochastic"}}
                for n in cal.layers if cal.kind[n] == which}

    def choose(self, cal: Calibration) -> tuple[list[dict], dict]:
        x_max = {n: float(v.abs().max()) for n, v in cal.inputs().items()}
        base = cal.error()
        chosen, sweeps = {}, {}
        for which in ("conv", "fc", "act"):
            if which != "act" and not any(k == which for k in cal.kind.values()):
                continue
            if self.fixed_bits[which] is not None:
                chosen[which] = self.fixed_bits[which]
                continue
            sweeps[which] = {}
            chosen[which] = self.widths[0]
            for bits in self.widths:  # the smallest width such that it and every larger one stay in the margin
                err = cal.error(merge_rules(self.part(cal, which, bits, x_max)))
                sweeps[which][bits] = round(err, 4)
                if err > base + self.margin:
                    break
                chosen[which] = bits
        rules = merge_rules(*(self.part(cal, w, b, x_max) for w, b in chosen.items()))
        return rules, {"bits": chosen, "sweeps_val_err": sweeps, "combined_val_err": round(cal.error(rules), 4),
                       "act_max": {n: round(v, 6) for n, v in x_max.items() if math.isfinite(v)}}


__all__ = ["DEFAULT_CONFIG", "FINETUNE", "RistrettoFixed", "RistrettoSearch"]
