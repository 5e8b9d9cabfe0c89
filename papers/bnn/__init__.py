"""Binarized Neural Networks (Courbariaux, Hubara, Soudry, El-Yaniv, Bengio 2016): binary weights and activations.

Weights: deterministic sign, identity straight-through gradient, latent clip to [-1, 1]. Activations: sign with the
hard-tanh estimator (gradient x 1_{|x|<=1}); stochastic during training in the Torch7 code. The first layer's input
stays real; the last layer's output goes through BN into the squared hinge loss. Options of the Torch7 code:
shift-based batch norm (``model.bn_shift``) and shift-based AdaMax (``optim.name: shift_adamax``).
"""

DEFAULT_CONFIG = "mnist_cpu"
