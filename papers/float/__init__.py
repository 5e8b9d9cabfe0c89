"""The float reference of the shared setting: the networks of ``common/configs`` trained without quantization.

Every method of the leaderboard's apples-to-apples table is compared against this run, and the post-training
methods (Sung, SQNR, Ristretto, Moons, Qiu) quantize its checkpoint.
"""

DEFAULT_CONFIG = "mnist_lenet5"
