"""The engine's compiled binary GEMM (``kernels.cpp``): C = K - 2 popcount(A XOR B) on bit-packed rows, int32 out,
exact (``tests/test_engine_kernels.py`` checks it against the int64 reference on every path this processor runs).

Three paths, chosen at run time from what the processor has: ``"avx512_vpopcntdq"`` (VPOPCNTQ on 512-bit vectors,
register-blocked 6 x 4 micro-tiles over packed 8-row panels of B, cache-blocked over K), ``"avx2"`` (the nibble
lookup-table popcount, VPSHUFB) and ``"scalar"`` (``__builtin_popcountll``). The file is compiled for plain x86-64
(no ``-march=native``): the vector functions carry function-level target attributes, so the build runs on any
x86-64 (and builds the scalar path only on other processors).

``isa()`` says which path runs; ``LOWBIT_ENGINE_ISA=avx2|scalar`` (or the ``isa`` argument) forces a lower one, for
tests and comparisons. ``engine.ops`` registers the kernel as the backend ``"kernel"`` and makes it the default when
it loads. Like the suite's other kernels (``common/quant/kernels.py``) it is compiled on first use with torch's
extension builder (a C++ compiler and ninja; seconds, once per machine, cached under ``~/.cache/torch_extensions``
and keyed by the source, the flags, torch and Python); ``LOWBIT_KERNELS=0`` turns it off; where the build fails, a
warning says so once and the plain-torch backends run (same numbers, slower). Threads: ``torch.get_num_threads()``.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"]  # no -march=native: the vector paths are chosen at run time
ISAS = ("scalar", "avx2", "avx512_vpopcntdq")  # index = the code kernels.cpp takes
ISA_ENV = "LOWBIT_ENGINE_ISA"

_ext = None
_loaded = False


def _name() -> str:
    """A module name that changes with the source, the flags, torch, Python and the architecture."""
    key = "|".join([SOURCE.read_text(), *FLAGS, torch.__version__, sys.version, platform.machine()])
    return "lowbit_engine_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _build():
    from common.quant.kernels import build_extension

    return build_extension(_name(), SOURCE, FLAGS)


def ext():
    """The compiled module, or None (turned off with LOWBIT_KERNELS=0, or the build failed: one warning)."""
    global _ext, _loaded
    if not _loaded:
        _loaded = True
        from common.quant.kernels import load_or_warn

        _ext = load_or_warn(_build, "the engine's binary GEMM kernel", "the plain-torch backend")
    return _ext


def supported() -> list[str]:
    """The paths this processor runs, slowest first (empty when the kernel is not built)."""
    m = ext()
    return [] if m is None else [name for code, name in enumerate(ISAS) if m.supported(code)]


def isa(requested: str | None = None) -> str:
    """The path a call runs: ``requested``, else $LOWBIT_ENGINE_ISA, else the fastest this processor has. A path
    the processor lacks (or an unknown name) is a ValueError; so is asking when the kernel is not built."""
    m = ext()
    if m is None:
        raise RuntimeError("the engine's binary GEMM kernel is not built (LOWBIT_KERNELS=0, or the build failed)")
    want = requested or os.environ.get(ISA_ENV) or None
    if want is None:
        return ISAS[m.best_isa()]
    if want not in ISAS:
        raise ValueError(f"{ISA_ENV}/isa: {want!r} is not one of {', '.join(ISAS)}")
    if not m.supported(ISAS.index(want)):
        raise ValueError(f"{ISA_ENV}/isa: this processor does not run {want!r} (it runs {', '.join(supported())})")
    return want


def binary_gemm(a: torch.Tensor, b: torch.Tensor, k: int, isa_name: str | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (M, B) x uint8 (N, B) packed rows of k bits (B a multiple of 8, padding bits 0) -> int32 (M, N),
    out[i, j] = k - 2 popcount(a_i XOR b_j) = the +-1 dot product; written into ``out`` (contiguous int32 (M, N))
    when given."""
    return ext().binary_gemm(a, b, int(k), ISAS.index(isa(isa_name)), out)


def im2col_pack(bits: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The packed im2col rows of a binary image, bool (N, C, H, W) (True = +1) -> uint8 (N Ho Wo, padded_bytes(K)),
    K = C kh kw in ``F.unfold``'s order, zero padding as bit 0 (-1): the bytes of ``ops.pack_bits`` of the unfolded
    rows, without the float32 unfold (kernel width <= 56)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return ext().im2col_pack(bits, kh, kw, sh, sw, ph, pw)


def or_pool2d(bits: torch.Tensor, kernel, stride, padding, out_hw) -> torch.Tensor:
    """Max pooling of a binary activation, bool (N, C, H, W) (any strides) -> bool (N, C, Ho, Wo): the OR of each
    window's bits, padding never counting (dilation 1; ``out_hw`` as torch's max pooling computes it)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return ext().or_pool2d(bits, kh, kw, sh, sw, ph, pw, out_hw[0], out_hw[1])


def im2col_pack_hwc(bits: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The packed im2col rows with the channels packed per pixel: bool (N, C, H, W) with C a multiple of 8, channels
    last (as the thresholds give it) or contiguous -> uint8 (N Ho Wo, padded_bytes(K)), K = C kh kw in (dy, dx, c)
    order, zero padding as bit 0 (-1)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return ext().im2col_pack_hwc(bits, kh, kw, sh, sw, ph, pw)


def threshold_pool(k: torch.Tensor, corr: torch.Tensor | None, t: torch.Tensor, down: torch.Tensor, kernel, stride,
                   padding, out_hw) -> torch.Tensor:
    """A binary layer's folded BN + sign and max pooling in one pass: k int32 (N, H, W, O) channels last, corr int32
    (H, W, O) or None, t int32 (O), down bool (O) -> bool (N, Ho, Wo, O), the OR over each window's taps inside the
    image of (k + corr >= t), XOR down (no pooling: kernel and stride 1, padding 0). AVX-512BW masks on the
    avx512 path (``isa()``), else scalar."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    empty = torch.empty(0, dtype=torch.int32)
    return ext().threshold_pool(k.contiguous(), empty if corr is None else corr.contiguous(), t, down, kh, kw, sh, sw,
                                ph, pw, out_hw[0], out_hw[1], ISAS.index(isa()))


def threshold_real(y: torch.Tensor, t: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """BN + sign of real values as thresholds, in one pass: y float32 (N, C, ...), t float32 (C), down bool (C) ->
    bool of y's shape, (y >= t) XOR down per channel."""
    return ext().threshold_real(y, t, down)


def im2col_int8_hwc(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The im2col rows of an int8 image: x int8 (N, C, H, W) -> int8 (N Ho Wo, kh kw C) in (dy, dx, c) order, zero
    padding."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return ext().im2col_int8_hwc(x.permute(0, 2, 3, 1).contiguous(), kh, kw, sh, sw, ph, pw)
