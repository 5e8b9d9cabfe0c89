"""Quantizers (registered by name), quantized layers and the conversion pass."""
from common.quant import binary, dorefa, fixed, qnn, ternary  # noqa: F401  (registers every quantizer by name)
from common.quant.base import QUANTIZERS, Quantizer, build_quantizer, check_quantizer_spec, register
from common.quant.convert import convert, convertible_layers, select
from common.quant.layers import QConv2d, QLinear, activation_quantizers, after_step, quant_layers

__all__ = ["QUANTIZERS", "Quantizer", "register", "build_quantizer", "check_quantizer_spec", "convert",
           "convertible_layers", "select", "QLinear", "QConv2d", "activation_quantizers", "after_step", "quant_layers"]
