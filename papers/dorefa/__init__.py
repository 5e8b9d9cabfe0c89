"""DoReFa-Net (Zhou, Wu, Ni, Zhou, Wen, Zou 2016, arXiv:1606.06160; reference code tensorpack examples/DoReFa-Net).

k-bit weights (1 bit: E|W| * sign(W) per layer; k > 1: tanh-normalised quantize_k), activations
quantize_k(clip(x, 0, 1)) and stochastic k-bit gradients with a per-sample scale: the core's ``dorefa_weight``,
``dorefa_act`` and ``dorefa_grad``. One conversion rule on every layer but the first and the last quantizes the
weights, the layer's input (= the previous block's activation) and the gradient at the layer's output (before BN,
where the reference code puts its gradient quantizer). The reference networks are in ``models.py``.
"""
from papers.dorefa import models

DEFAULT_CONFIG = "mnist_cpu_w1a2g4"

__all__ = ["DEFAULT_CONFIG", "models"]
