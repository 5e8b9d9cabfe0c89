"""Quantized Neural Networks (Hubara, Courbariaux, Soudry, El-Yaniv, Bengio 2016; JMLR 2018).

BNN generalised to k bits: binary (or k-bit) weights, k-bit activations by LinearQuant or LogQuant with the
gradient-cancelling straight-through estimator, and k-bit parameter gradients through the core's ``grad`` hook.
"""

DEFAULT_CONFIG = "mnist_cpu_w1a2"
