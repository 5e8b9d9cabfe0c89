"""Deep Learning with Limited Numerical Precision (Gupta, Agrawal, Gopalakrishnan, Narayanan, ICML 2015,
arXiv:1502.02551).

Training in fixed point <IL, FL> (word length IL + FL, sign included) with round-to-nearest or stochastic
rounding: the core's ``fixed`` quantizer on every layer's input activation, on the back-propagated error at its
output, and on the stored weights and biases after every update (``update``: there is no float master copy, so
stochastic rounding is what lets updates smaller than half a step survive, in expectation). Products are
accumulated in float and rounded once (accumulate-then-round).
"""
from papers.gupta import models

DEFAULT_CONFIG = "mnist_cpu_fl14_sr"

__all__ = ["DEFAULT_CONFIG", "models"]
