"""Overcoming Challenges in Fixed Point Training of Deep Convolutional Networks (Lin, Talathi, ICML 2016 workshop,
arXiv:1607.02241).

Weights, activations and gradients in fixed point with round-to-nearest (no stochastic rounding), fine-tuned from a
float network by three schemes: the whole network; only the top layers (the others quantized but frozen); and
stage-wise from the bottom up (stage k quantizes layers 1..k and trains layers k and above, starting from stage
k - 1). Each scheme is a config: ``init_from`` chains the stages, ``optim.train_layers`` freezes layers.
"""

DEFAULT_CONFIG = "mnist_cpu_whole_4_4_4"
