"""Run the suite's trained quantized networks in the integer / bit arithmetic their papers promise.

- ``engine.export``: ``export(model, path, meta)``, ``export_checkpoint(ckpt, out)``, ``load(path)``: the packed
  file (``engine.fileformat``: versioned header + raw bit-packed / integer / float32 arrays; data, never pickle).
- ``engine.run``: ``Engine(path)(x)`` -> logits, XNOR-popcount for binary x binary layers, exact folded
  batch-norm + sign thresholds (``engine.fold``), float GEMMs with +-1 / ternary weights times alpha.
- ``engine.ops``: bit packing, ``binary_gemm`` (XNOR-popcount; the compiled kernels of ``engine.kernels`` where they
  build, plain torch otherwise) and ``int8_gemm``.
"""
from engine.export import ExportSizes, export, export_checkpoint, load
from engine.run import Engine

__all__ = ["Engine", "ExportSizes", "export", "export_checkpoint", "load"]
