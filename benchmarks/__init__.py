"""Speed benchmarks (tools, not part of the library): they print and store ratios, never assert timings.

    python -m benchmarks.training   the training step of every paper's quantization over float, next to Brevitas,
                                    and Lightning's overhead (README "Performance"); also ``python ci/bench.py``
    python -m benchmarks.engine     the integer engine: binary GEMM, layers and whole networks against float torch
"""
