"""Ternary Weight Networks (Li, Zhang, Liu 2016, arXiv:1605.04711; official code fengfu-chris/caffe-twns).

Weights alpha * {-1, 0, +1}: threshold Delta = t * mean|W| (t = 0.7, the code; 0.75, the 2022 text), alpha = mean|W|
over |W| > Delta, one Delta and alpha per layer (the code) or per output filter (the 2022 text): the core's
``ternary`` quantizer on every Conv/FC layer, first and last included, of Conv -> BN -> ReLU -> Pool networks.
BPWN, the paper's binary counterpart, is sign(W) without a scale.
"""

DEFAULT_CONFIG = "mnist_cpu_twn"
