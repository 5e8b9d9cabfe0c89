"""Training deep neural networks with low precision multiplications (Courbariaux, Bengio, David, ICLR 2015
workshop, arXiv:1412.7024; code MatthieuCourbariaux/deep-learning-multipliers).

Maxout networks trained with float, fixed point (one global format) or dynamic fixed point (a format per tensor
group whose integer length follows its overflow rate): the core's ``fixed`` and ``dynamic_fixed`` on each layer's
weights and input at the propagation precision, on the gradient at its output, and on the stored weights and biases
at the update precision (``update``: no float master copy). The maxout models are in ``models.py``.
"""
from papers.lowprec import models

DEFAULT_CONFIG = "pimnist_cpu_dfxp"

__all__ = ["DEFAULT_CONFIG", "models"]
