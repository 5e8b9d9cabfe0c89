"""XNOR-Net and Binary-Weight-Networks (Rastegari, Ordonez, Redmon, Farhadi, ECCV 2016).

BWN: weights alpha * sign(W) with alpha = mean|W| per output filter (the core's ``scaled_sign``), through the
conversion pass on standard Conv -> BN -> ReLU -> Pool models, first and last layers real. XNOR-Net: binary weights
and binary inputs in the paper's own block order BN -> sign -> conv (x K) -> pool, defined in ``models.py``.
"""
from common.config import Config
from common.errors import UserError
from papers.xnor import models

DEFAULT_CONFIG = "mnist_cpu_xnor"
BLOCK_ORDER_MODELS = ("xnor_lenet5", "xnor_vgg_small", "xnor_alexnet", "xnor_resnet18")


def check(cfg: Config) -> None:
    """XNOR-Net binarizes activations only inside its B-A-C-P blocks: a binary-input rule on another model is an
    error, not a silently different network."""
    for i, rule in enumerate(cfg.quant.rules):
        if rule.input is not None and cfg.model["name"] not in BLOCK_ORDER_MODELS:
            raise UserError(f"quant.rules[{i}].input: XNOR-Net binary activations need the paper's block order "
                            f"(BN -> sign -> conv -> pool): use model.name one of {', '.join(BLOCK_ORDER_MODELS)}, "
                            f"not {cfg.model['name']!r}")


__all__ = ["DEFAULT_CONFIG", "check", "models"]
