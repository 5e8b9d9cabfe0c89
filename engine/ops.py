"""The arithmetic of the engine: bit packing and the integer GEMMs behind the packed layers.

Bit layout (the file's and the engine's): a row of K values in {-1, +1} is K bits, bit 1 for +1 and bit 0 for -1,
packed little-endian within each byte (value j of the row is bit j % 8 of byte j // 8: ``numpy.packbits(...,
bitorder="little")``), and the row is padded with 0 bits to a multiple of 64 bits (8 bytes), so a kernel can read it
as whole uint64 words. Padding bits are 0 in both operands of a product, so they never count in XOR-popcount.
The file holds a layer's O x K weight bits as one such row (one padding a layer, not one a filter); the engine
unpacks it into O rows of K bits at load time.

Ternary values {-1, 0, +1} are two such bit-planes: ``plus`` (bit 1 where the value is +1) and ``minus`` (bit 1
where it is -1); t = plus - minus.

``binary_gemm`` is the one entry point for the binary-activation x binary-weight product (XNOR / popcount). Its
backend is chosen by name from ``BACKENDS``; all three are exact:

- ``"kernel"`` (the default where it builds): the compiled C++ kernel (``engine/kernels.cpp``, AVX-512 VPOPCNTDQ /
  AVX2 / scalar paths chosen at run time; ``engine.kernels``). ``LOWBIT_KERNELS=0`` turns it off; where it cannot be
  built a warning says so once and ``"auto"`` falls back to ``"unpack"``.
- ``"unpack"``: unpack both operands to +-1 float32 and multiply. Every partial sum of a +-1 x +-1 dot
  product is an integer of magnitude <= K, and float32 represents every integer below 2**24 exactly, so the matmul
  is exact in any summation order (K < 2**24 is checked).
- ``"popcount"``: the paper's arithmetic itself, dot = K - 2 * popcount(a XOR b), with a 256-entry popcount lookup
  table on the uint8 bytes (slow; the reference the compiled kernel is checked against).

``DEFAULT_BACKEND`` is ``"auto"``: ``"kernel"`` when it loads, else ``"unpack"`` (set it to a name to pin one).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

WORD_BITS = 64
_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
_SHIFTS = torch.arange(8, dtype=torch.uint8)
POPCOUNT_LUT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)


def padded_bytes(k: int) -> int:
    """Bytes of a packed row of ``k`` bits, padded to whole 64-bit words."""
    return -(-k // WORD_BITS) * (WORD_BITS // 8)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor (..., K) (True = +1) into uint8 (..., padded_bytes(K)), little-endian bit order, each row
    padded with 0 bits to a multiple of 64 bits."""
    *lead, k = bits.shape
    nb = padded_bytes(k)
    b = bits.to(torch.uint8)
    if nb * 8 != k:
        b = torch.nn.functional.pad(b, (0, nb * 8 - k))
    b = b.reshape(*lead, nb, 8)
    return (b * _BIT_WEIGHTS).sum(-1, dtype=torch.uint8) if b.numel() else b.sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: uint8 (..., B) -> bool (..., k) (True = +1)."""
    *lead, nb = packed.shape
    if nb * 8 < k:
        raise ValueError(f"a packed row of {nb} bytes holds fewer than {k} bits")
    bits = (packed.unsqueeze(-1) >> _SHIFTS) & 1
    return bits.reshape(*lead, nb * 8)[..., :k].bool()


def pack_ternary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """{-1, 0, +1} values (..., K) -> the two packed bit-planes (plus, minus)."""
    return pack_bits(t > 0), pack_bits(t < 0)


def unpack_ternary(plus: torch.Tensor, minus: torch.Tensor, k: int) -> torch.Tensor:
    """The two bit-planes -> int8 values in {-1, 0, +1}; a position set in both planes is not ternary."""
    p, m = unpack_bits(plus, k), unpack_bits(minus, k)
    if bool((p & m).any()):
        raise ValueError("ternary bit-planes overlap (a value both +1 and -1)")
    return p.to(torch.int8) - m.to(torch.int8)


def code_width(bits: int) -> int | None:
    """The packed width of integer codes of ``bits`` bits (two's complement or symmetric): 2 or 4 bits (four or two
    to a byte), None above 4 bits (stored as int8 / int16)."""
    return 2 if bits <= 2 else 4 if bits <= 4 else None


def pack_codes(q: torch.Tensor, width: int) -> torch.Tensor:
    """Integers in [-2^(width-1), 2^(width-1) - 1] -> uint8, 8 / width to a byte (the first value in the lowest
    bits, each stored as q + 2^(width-1)), the flattened tensor padded with 0 codes to whole bytes."""
    per = 8 // width
    v = (q.reshape(-1).to(torch.int16) + (1 << (width - 1))).to(torch.uint8)
    if v.numel() % per:
        v = torch.cat([v, v.new_full((per - v.numel() % per,), 1 << (width - 1))])
    v = v.view(-1, per)
    out = v[:, 0].clone()
    for j in range(1, per):
        out |= v[:, j] << (width * j)
    return out


def unpack_codes(packed: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: the first ``n`` values, as int8."""
    if width not in (2, 4) or type(width) is not int:
        raise ValueError(f"packed codes: width {width!r} is not 2 or 4")
    per = 8 // width
    if packed.dim() != 1 or packed.dtype != torch.uint8 or packed.numel() != -(-n // per):
        raise ValueError(f"an array of {n} packed {width}-bit codes is {-(-n // per)} bytes (uint8, one dimension)")
    mask = (1 << width) - 1
    v = torch.stack([(packed >> (width * j)) & mask for j in range(per)], dim=1).reshape(-1)[:n]
    return v.to(torch.int8) - (1 << (width - 1))


def pm1(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bool (True = +1) -> +-1 values of ``dtype``."""
    return bits.to(dtype) * 2 - 1


# ------------------------------------------------------------------------------------------------ binary GEMM

def _gemm_unpack(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Exact: +-1 float32 matmul (every partial sum is an integer of magnitude <= k < 2**24)."""
    return (pm1(unpack_bits(a, k)) @ pm1(unpack_bits(b, k)).T).to(torch.int32)


def _gemm_popcount(a: torch.Tensor, b: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """dot(a, b) = k - 2 popcount(a XOR b) on the packed bytes, popcount by lookup table (padding bits are 0 in both
    operands, so they XOR to 0)."""
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    for i in range(0, a.shape[0], chunk):
        x = torch.bitwise_xor(a[i:i + chunk, None, :], b[None, :, :])
        out[i:i + chunk] = k - 2 * POPCOUNT_LUT[x.long()].sum(-1, dtype=torch.int32)
    return out


def _gemm_kernel(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """The compiled XNOR-popcount kernel (engine/kernels.cpp), on the path ``engine.kernels.isa()`` names."""
    from engine import kernels

    if kernels.ext() is None:
        raise RuntimeError("binary_gemm: the 'kernel' backend is not built here (LOWBIT_KERNELS=0 or no compiler)")
    return kernels.binary_gemm(a, b, k)


BACKENDS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "unpack": _gemm_unpack, "popcount": _gemm_popcount, "kernel": _gemm_kernel}
DEFAULT_BACKEND = "auto"  # "kernel" where it builds, else "unpack"


def available_backends() -> list[str]:
    """The backends that run here (``"kernel"`` only where it was built)."""
    from engine import kernels

    return [name for name in BACKENDS if name != "kernel" or kernels.ext() is not None]


def default_backend() -> str:
    """The backend ``binary_gemm`` uses without one named: ``DEFAULT_BACKEND``, "auto" resolved."""
    if DEFAULT_BACKEND != "auto":
        return DEFAULT_BACKEND
    from engine import kernels

    return "kernel" if kernels.ext() is not None else "unpack"


def binary_gemm(a: torch.Tensor, b: torch.Tensor, k: int, backend: str | None = None) -> torch.Tensor:
    """Dot products of +-1 vectors held as packed bits: ``a`` uint8 (M, B), ``b`` uint8 (N, B), both rows of ``k``
    bits padded to B = padded_bytes(k) bytes -> int32 (M, N), out[i, j] = sum_t a_it * b_jt, exactly.

    ``backend``: a name from ``BACKENDS``; None: ``default_backend()`` (the compiled kernel where it builds)."""
    if a.dtype != torch.uint8 or b.dtype != torch.uint8 or a.shape[1] != b.shape[1] or a.shape[1] != padded_bytes(k):
        raise ValueError(f"binary_gemm: need uint8 (M, {padded_bytes(k)}) and (N, {padded_bytes(k)}) packed rows, "
                         f"got {tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}")
    if k >= 2**24:
        raise ValueError(f"binary_gemm: K = {k} >= 2**24 is past exact float32 accumulation")
    return BACKENDS[backend or default_backend()](a.contiguous(), b.contiguous(), k)


def im2col_pack(bits: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The packed im2col rows of a binary image: bool (N, C, H, W) -> uint8 (N * L, padded_bytes(C kh kw)), row
    (n, oy, ox) holding ``F.unfold``'s column (c, dy, dx order) of bits, zero padding packed as bit 0 (-1). The
    compiled kernel where it is built (same bytes, tests/test_engine_kernels.py), else unfold + ``pack_bits``."""
    from engine import kernels

    if kernels.ext() is not None and kernel[1] <= 56:
        return kernels.im2col_pack(bits, kernel, stride, padding)
    n = bits.shape[0]
    cols = torch.nn.functional.unfold(bits.to(torch.float32), kernel, padding=padding, stride=stride)  # (N, K, L)
    return pack_bits(cols.transpose(1, 2).reshape(n * cols.shape[2], cols.shape[1]) > 0.5)


def numpy_pack_bits(bits: np.ndarray) -> np.ndarray:
    """The same layout as ``pack_bits`` with numpy (for checking it and for other readers of the file)."""
    k = bits.shape[-1]
    padded = np.zeros(bits.shape[:-1] + (padded_bytes(k) * 8,), dtype=bool)
    padded[..., :k] = bits
    return np.packbits(padded, axis=-1, bitorder="little")


def or_pool2d(bits: torch.Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> torch.Tensor:
    """Max pooling of a binary activation (+-H): bool (N, C, H, W) -> bool, the OR of each window's bits (torch's
    max pooling pads with -inf, so padding never counts). The compiled kernel where it is built (dilation 1), else
    torch's float max pooling of the bits."""
    from engine import kernels

    k, s, p, d = pair(kernel_size), pair(stride if stride else kernel_size), pair(padding), pair(dilation)
    if kernels.ext() is not None and d == (1, 1) and bits.dim() == 4:
        return kernels.or_pool2d(bits, k, s, p, _pool_out(bits.shape[2:], k, s, p, ceil_mode))
    return torch.nn.functional.max_pool2d(bits.to(torch.float32), k, s, p, d, ceil_mode) > 0.5


def pair(v) -> tuple[int, int]:
    """An int or a pair of them (torch's convention for kernel, stride, padding) as a pair."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pool_out(hw, k, s, p, ceil_mode: bool) -> tuple[int, int]:
    """torch's max pooling output size (dilation 1), ceil_mode's rule included."""
    def out(size, k, s, p):
        n = (size + 2 * p - k + ((s - 1) if ceil_mode else 0)) // s + 1
        return n - 1 if ceil_mode and (n - 1) * s >= size + p else n
    return out(hw[0], k[0], s[0], p[0]), out(hw[1], k[1], s[1], p[1])


def threshold_bits(k: torch.Tensor, corr: torch.Tensor | None, t_ge: torch.Tensor, down: torch.Tensor,
                   pool: dict | None = None) -> torch.Tensor:
    """A binary layer's output bits from its integer accumulators, channels last: k int32 (N, H, W, O), corr int32
    (H, W, O) or None (added to every image), per channel t_ge int32 and down bool -> bool (N, O, Ho, Wo), a
    channels-last view: ``(k + corr >= t_ge) XOR down``, with ``pool`` (torch's max pooling arguments) the OR over
    each window taken before the XOR. The compiled kernel in one pass where it is built (dilation 1), else torch."""
    from engine import kernels

    if pool is None:
        geom = dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0), out_hw=tuple(k.shape[1:3]))
    else:
        kk, ss, pp = pair(pool["kernel_size"]), pair(pool["stride"] or pool["kernel_size"]), pair(pool["padding"])
        geom = dict(kernel=kk, stride=ss, padding=pp, out_hw=_pool_out(k.shape[1:3], kk, ss, pp, pool["ceil_mode"]))
    if kernels.ext() is not None and (pool is None or pair(pool["dilation"]) == (1, 1)):
        return kernels.threshold_pool(k, corr, t_ge, down, **geom).permute(0, 3, 1, 2)
    bits = ((k if corr is None else k + corr) >= t_ge).permute(0, 3, 1, 2)
    if pool is not None:
        bits = or_pool2d(bits, **pool)
    return (bits.permute(0, 2, 3, 1) ^ down).permute(0, 3, 1, 2)


def hwc_available() -> bool:
    """Whether ``im2col_pack_hwc`` runs here (the compiled kernel)."""
    from engine import kernels

    return kernels.ext() is not None


def im2col_pack_hwc(bits: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """``im2col_pack``'s rows in (dy, dx, c) order, for C a multiple of 8 (the compiled kernel only)."""
    from engine import kernels

    return kernels.im2col_pack_hwc(bits, kernel, stride, padding)


def threshold_real(y: torch.Tensor, t_ge: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The bits of BN + sign of real values folded into thresholds: y float32 (N, C, ...), per channel t_ge float32
    and down bool -> bool, ``(y >= t_ge) XOR down``. The compiled kernel in one pass where it is built, else torch."""
    from engine import kernels

    if kernels.ext() is not None and y.dtype == torch.float32:
        return kernels.threshold_real(y, t_ge, down)
    shape = [1, -1] + [1] * (y.dim() - 2)
    return (y >= t_ge.view(shape)) ^ down.view(shape)


# ------------------------------------------------------------------------------------------------ int8 GEMM

def int8_gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer product of int8 matrices: a (M, K) x b (K, N) -> int32 (M, N), by torch's int8 matrix
    multiply (``torch._int_mm``, the kernel its quantized CPU paths use; exact: int32 accumulation, |sum| <= K 2^14
    < 2^31 for any K below 131,072, checked); where that is missing or refuses the shapes, the same integers in
    float64 (exact below 2^53)."""
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"int8_gemm: need int8 (M, K) and (K, N), got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    if a.shape[1] >= 2**17:
        raise ValueError(f"int8_gemm: K = {a.shape[1]} could overflow the int32 accumulator")
    mm = getattr(torch, "_int_mm", None)
    if mm is not None and a.shape[0] > 0:
        try:
            return mm(a.contiguous(), b)
        except RuntimeError:
            pass
    return (a.double() @ b.double()).to(torch.int32)


def im2col_int8(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """The im2col rows of an int8 image for ``int8_gemm``: x int8 (N, C, H, W) -> int8 (N Ho Wo, kh kw C), each row
    in (dy, dx, c) order, zero padding. The compiled kernel where it is built, else unfold (in float32, exact for
    int8 values) and a reorder."""
    from engine import kernels

    if kernels.ext() is not None:
        return kernels.im2col_int8_hwc(x, kernel, stride, padding)
    n, c = x.shape[:2]
    cols = torch.nn.functional.unfold(x.float(), kernel, padding=padding, stride=stride)  # (N, C kh kw, L)
    cols = cols.view(n, c, -1, cols.shape[-1]).transpose(1, 2).reshape(n, -1, cols.shape[-1])  # (dy, dx, c) order
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).to(torch.int8)
