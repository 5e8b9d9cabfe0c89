"""BinaryConnect (Courbariaux, Bengio, David, NIPS 2015): training with binary weights +-H during propagations.

Deterministic (sign) or stochastic (Bernoulli(hard_sigmoid(w/H))) binarization of every Dense/Conv weight,
straight-through gradient to the real-valued weights, latent clip to [-H, H], Glorot-scaled Adam updates,
squared hinge loss. The whole method is the core's `sign`/`sign_stochastic` quantizers plus configs.
"""

DEFAULT_CONFIG = "mnist_cpu_stoch"
