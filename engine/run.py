"""Run a packed network in the arithmetic its paper promises.

``Engine(path)`` loads a file written by ``engine.export`` and ``engine(x)`` maps a float32 batch (N, C, H, W), as
the data module gives it, to float32 logits. Activations travel between ops either as real float32 tensors or as
*bits* (bool, True = +H, False = -H). Per layer:

- **binary input x binary weights** (BNN, XNOR-Net's inner layers): im2col of the input bits packed 64 bits a word
  (``engine.ops.im2col_pack``; with the compiled kernel and a multiple of 8 input channels, each pixel's channels
  are packed once and the rows copied as whole bytes, the weights packed in the same (dy, dx, c) order), and the
  integer dot products from ``engine.ops.binary_gemm`` (XNOR + popcount; exact). Then either the folded BN + sign
  thresholds (integer comparisons, bits out, see ``engine.fold``), with a folded max pooling the OR / AND of the
  window's threshold bits (``engine.ops.threshold_bits``), or the real value k * alpha * H_in (* K) + bias in
  float32.
- **real input x binary / ternary weights** (BinaryConnect, BWN, TWN; the first layer of BNN): a float GEMM with the
  +-1 (or -1/0/+1) weights, times alpha afterwards when there is one (one multiply per output, the papers'
  promise); without alpha (BinaryConnect, BNN: H = 1) it is the very conv/linear the simulated network runs.
- **k-bit activations x binary weights** (QNN's and DoReFa's layers, codes of 4 bits or fewer, after their own
  activation quantizer): one XNOR-popcount GEMM per bit-plane of the codes (``_Layer._planes``), exact integers
  times step * alpha once.
- **fixed-point weights**: with a fixed-point input, an exact integer GEMM scaled by 2^-(fl_x + fl_w), a power of
  two: int8 x int8 -> int32 (``engine.ops.int8_gemm``) when both formats have 8 bits or fewer, else in float64
  (|sum| < 2**53 checked); with a real input, the float GEMM with the decoded weights q 2^-fl (exact: a
  power-of-two scale commutes with every rounding). Sung's uniform weights: the float GEMM with q * step.
- **float weights** (first/last layers left real): the float GEMM, with +-H inputs where the input is bits.
- batch norm, ReLU, hard tanh: torch's own float32 ops; batch norm + sign of real values as float32 thresholds
  (``engine.fold.float_sign_thresholds``); max pooling of bits is an OR (max of +-1).

**Zero padding of a bit-packed input.** The simulated network pads a +-1 activation with 0, a value a bit cannot
hold. The engine pads the bits with 0, i.e. with -1, so the popcount dot product counts every padded tap i as
(-1) * w_i. The exact dot product with 0-padding is then k_true = k_packed + sum over the padded taps of w_i. That
correction depends only on the output position (which taps fall in the padding) and the filter, not on the image,
so it is computed once per input size as a convolution of a 0/1 "padding indicator" image with the +-1 filters
(``Engine._pad_correction``) and added to every image's accumulators.

**Exactness** (tests/test_engine.py): for layers whose simulated float32 computation is itself exact (+-1 x +-1
products without a bias term, every partial sum an integer below 2**24) the engine's integers are the simulated
values bit for bit, and the folded thresholds reproduce sign(BN(.)) bit for bit (engine.fold). Where the simulated
network rounds differently from the paper's arithmetic, the two agree to float32 rounding, not bit for bit:
torch adds a layer's bias inside its blocked GEMM (so its pre-activation is k + b rounded in an order that depends
on the BLAS blocking), and BWN / XNOR / TWN multiply alpha into the weights before summing while the engine
multiplies the exact integer (or float) sum by alpha once. Those differences are ulps of the pre-activation; a
binary activation can differ only where BN's zero crossing falls within such an ulp of an attainable value.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from engine import ops
from engine.fileformat import Packed, read
from engine.export import binary_path, level_grid
from engine.fold import float_threshold_ge, int_scale, int_to_real, threshold_ge


class _Bits:
    """A binary activation: ``bits`` bool (True = +H), and H."""

    __slots__ = ("bits", "H")

    def __init__(self, bits: torch.Tensor, H: float):
        self.bits, self.H = bits, H

    def real(self) -> torch.Tensor:
        y = ops.pm1(self.bits)
        return y if self.H == 1.0 else y * self.H


def _real(a) -> torch.Tensor:
    return a.real() if isinstance(a, _Bits) else a


def _levels(spec: dict, where: str):
    """A multi-bit activation quantizer named in the file (``engine.export.check_levels``: only those the engine
    runs, in their deterministic form, arguments checked as a config's), built in eval mode, and its checked spec."""
    from common.quant import build_quantizer
    from engine.export import check_levels

    spec = check_levels(spec, f"packed model: {where}")
    return build_quantizer(spec).eval(), spec


def _need(ok: bool, where: str, what: str) -> None:
    """A field of a packed file checked on load: one line naming the op and what was expected."""
    if not ok:
        raise UserError(f"packed model: {where}: {what}")


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _pair(spec: dict, key: str, lo: int, where: str) -> list[int]:
    v = spec.get(key)
    _need(isinstance(v, list) and len(v) == 2 and all(type(i) is int and i >= lo for i in v), where,
          f"{key} must be two integers >= {lo}, got {v!r}")
    return v


def _pool_args(spec: dict, where: str) -> dict:
    """A max pooling's fields in the file, checked (pairs of integers: kernel, stride, dilation >= 1, 0 <= padding <=
    kernel / 2; ceil_mode a bool) -> the arguments of torch's max pooling (and ``ops.or_pool2d``)."""
    _need(isinstance(spec, dict), where, "pooling must be an object")
    where = f"{where}: pooling"
    kernel, stride, padding, dilation = (_pair(spec, k, lo, where) for k, lo in
                                         (("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1)))
    _need(all(2 * p <= k for p, k in zip(padding, kernel)) and isinstance(spec.get("ceil_mode"), bool), where,
          "padding above half the kernel, or ceil_mode not a bool")
    return dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=spec["ceil_mode"])


INPUT_KINDS = ("real", "bits", "sign", "fixed", "quantized", "levels")


def _check_layer(spec: dict, arrays: dict[str, torch.Tensor]) -> None:
    """Every field of a conv / linear op that the engine reads, checked on load, so that a crafted file is one line
    here rather than an exception (or an out-of-bounds kernel) at run time."""
    conv = spec["op"] == "conv"
    where, shape = f"layer {spec.get('name')!r}", spec.get("weight_shape")
    _need(isinstance(shape, list) and len(shape) == 2 + 2 * conv and all(type(d) is int and d >= 1 for d in shape),
          where, f"weight_shape must be {2 + 2 * conv} positive integers, got {shape!r}")
    w, inp = spec.get("weight"), spec.get("input")
    _need(isinstance(w, dict) and isinstance(inp, dict), where, "weight and input must be objects")
    _need(spec.get("out_ch") == shape[0] and spec.get("in_ch") == shape[1] and w.get("fan_in") == math.prod(shape[1:]),
          where, f"out_ch, in_ch and fan_in must match weight_shape {shape}")
    if conv:
        kernel, _, padding = (_pair(spec, k, lo, where) for k, lo in (("kernel", 1), ("stride", 1), ("padding", 0)))
        _need(kernel == shape[2:] and all(p <= k for p, k in zip(padding, kernel)), where,
              "kernel must match weight_shape, and padding be at most the kernel")
    _need(all(type(spec.get(k)) is bool for k in ("act_scale", "bias_inside", "bias")), where,
          "act_scale, bias_inside and bias must be booleans")
    _need(w.get("scale") in ("none", "filter", "layer"), where, f"unknown weight scale {w.get('scale')!r}")
    _need(inp.get("kind") in INPUT_KINDS, where, f"input kind must be one of {', '.join(INPUT_KINDS)}")
    if inp["kind"] in ("bits", "sign"):
        _need(_number(inp.get("H")), where, "a binary input needs a number H")
    if inp["kind"] == "fixed":
        _need(type(inp.get("wl")) is int and 2 <= inp["wl"] <= 32 and type(inp.get("fl")) is int
              and abs(inp["fl"]) <= 64 and inp.get("rounding") in ("nearest", "stochastic")
              and inp.get("span") in ("twos_complement", "symmetric"), where,
              "a fixed-point input needs wl 2-32, an integer fl, rounding nearest|stochastic, span "
              "twos_complement|symmetric")
    _need(spec.get("output") in ("real", "bits"), where, "output must be 'real' or 'bits'")
    if spec["output"] == "bits":
        T, d = arrays.get("threshold"), arrays.get("direction")
        _need(_number(spec.get("out_H")) and T is not None and d is not None and T.dtype == torch.int32
              and d.dtype == torch.int8 and tuple(T.shape) == tuple(d.shape) == (shape[0],), where,
              "a bits output needs a number out_H, int32 thresholds and int8 directions, one per output channel")
    for key in ("bias", "alpha"):
        a = arrays.get(key)
        _need(a is None or (a.dtype == torch.float32 and a.dim() == 1 and a.shape[0] in (1, shape[0])), where,
              f"{key} must be float32, one value or one per output channel")


def _check_op(spec: dict, arrays: dict[str, torch.Tensor]) -> None:
    """The fields every op has (covers: the simulated modules it stands for), and those of the small ops."""
    op, where = spec["op"], f"op {spec.get('name')!r} ({spec['op']})"
    _need(isinstance(spec.get("covers"), list) and len(spec["covers"]) > 0
          and all(isinstance(c, str) for c in spec["covers"]), where, "covers must be a list of module names")
    numbers = {"batchnorm": ("eps",), "threshold": ("H",), "sign": ("H",), "hardtanh": ("min", "max")}.get(op, ())
    _need(all(_number(spec.get(k)) for k in numbers), where, f"{', '.join(numbers)} must be numbers")
    if op == "flatten":
        _need(type(spec.get("start")) is int and type(spec.get("end")) is int, where, "start and end must be integers")
    if op == "batchnorm":
        _need(all(arrays.get(k) is None or (arrays[k].dtype == torch.float32 and arrays[k].dim() == 1)
                  for k in ("mean", "var", "weight", "bias")), where, "its arrays must be 1-D float32")


def _one_row(a: torch.Tensor, n: int) -> torch.Tensor:
    """A layer's weight bits as the file holds them: one uint8 row of ``ops.padded_bytes(n)`` bytes."""
    if a.dtype != torch.uint8 or tuple(a.shape) != (ops.padded_bytes(n),):
        raise ValueError(f"weight bits: expected one uint8 row of {ops.padded_bytes(n)} bytes, got "
                         f"{a.dtype} {tuple(a.shape)}")
    return a


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.array(a))  # a writable copy, native byte order


class _Layer:
    """A conv / linear op with its arrays decoded once."""

    def __init__(self, spec: dict, arrays: dict[str, torch.Tensor]):
        _check_layer(spec, arrays)
        self.spec, self.conv = spec, spec["op"] == "conv"
        w = spec["weight"]
        self.kind, self.k = w["kind"], w["fan_in"]
        self.o = spec["out_ch"]
        self.shape = tuple(spec["weight_shape"])
        self.bias = arrays.get("bias")
        self.alpha = arrays.get("alpha") if w["scale"] != "none" else None
        self.packed = None
        self.w_int8 = None
        inp = spec["input"]
        self.levels = self.grid = None  # k-bit activations: the quantizer to apply ("quantized"), their codes' grid
        if inp["kind"] in ("quantized", "levels"):
            q, checked = _levels(inp.get("quantizer"), spec.get("name"))
            self.levels = q if inp["kind"] == "quantized" else None
            grid = level_grid(checked)
            self.grid = grid if self.kind == "binary" and grid[2] <= 4 else None
        self.pool = _pool_args(spec["pool"], f"layer {spec.get('name')!r}") if spec.get("pool") is not None else None
        if spec["output"] == "bits":  # (thresholds and directions checked by _check_layer)
            self._T_ge, self._down = threshold_ge(arrays["threshold"], arrays["direction"])
        if self.kind == "float":
            self.w_real = arrays["weight"]
        elif self.kind in ("binary", "ternary"):  # the file's one row of O x K bits -> rows padded to 64 bits
            n = self.o * self.k
            try:
                if self.kind == "binary":
                    bits = ops.unpack_bits(_one_row(arrays["weight"], n), n).view(self.o, self.k)
                    self.packed, self.w_real = ops.pack_bits(bits), ops.pm1(bits).view(self.shape)
                else:
                    t = ops.unpack_ternary(_one_row(arrays["plus"], n), _one_row(arrays["minus"], n), n)
                    self.w_real = t.to(torch.float32).view(self.shape)
            except ValueError as e:
                raise UserError(f"packed model: layer {spec.get('name')}: {e}") from None
        elif self.kind in ("fixed", "uniform"):
            self.w_int = arrays["weight"]
            if w.get("packed") == "codes":  # (weights of 4 bits or fewer)
                try:
                    self.w_int = ops.unpack_codes(self.w_int, math.prod(self.shape), w.get("width")).view(self.shape)
                except ValueError as e:
                    raise UserError(f"packed model: layer {spec.get('name')}: {e}") from None
            elif "packed" in w:
                raise UserError(f"packed model: layer {spec.get('name')}: unknown packing {w['packed']!r}")
            if self.kind == "fixed":
                self.w_real = (self.w_int.double() * 2.0 ** -w["fl"]).float()  # exact: q 2^-fl
                if type(w["wl"]) is not int or tuple(self.w_int.shape) != self.shape:
                    raise ValueError(f"fixed-point weights: wl {w['wl']!r} and shape {tuple(self.w_int.shape)} against "
                                     f"weight_shape {self.shape}")
                if w["wl"] <= 8:  # (K, O) int8 in (dy, dx, c) order, for the int8 GEMM (inputs of <= 8 bits)
                    w8 = self.w_int.permute(0, 2, 3, 1) if self.conv else self.w_int
                    self.w_int8 = w8.reshape(self.o, -1).t().to(torch.int8).contiguous()
            else:  # as the simulated network computes it: float32 q times the float32 step
                self.w_real = self.w_int.to(torch.float32) * arrays["step"]
        else:
            raise UserError(f"packed model: layer {spec.get('name')}: unknown weight kind {self.kind!r}")
        self._corr: dict[tuple[int, int], torch.Tensor] = {}
        if self.grid is not None:  # sum_i w_i of each filter (the bit-planes' offset)
            self._rowsum = self.w_real.reshape(self.o, -1).sum(1).to(torch.int32)
        # channels packed per pixel (C a multiple of 8, the compiled kernel built): the im2col rows are whole bytes
        # copied from the packed image, and the weights are packed once more in the same (dy, dx, c) order
        self.packed_hwc = None
        if self.kind == "binary" and self.conv and self.shape[1] % 8 == 0 and ops.hwc_available():
            o, c, kh, kw = self.shape
            bits = ops.unpack_bits(self.packed, self.k).view(o, c, kh, kw).permute(0, 2, 3, 1).reshape(o, self.k)
            self.packed_hwc = ops.pack_bits(bits)
        self.path = self._path()

    def _path(self) -> str:
        """Which arithmetic the layer runs in, decided once from its spec (``__call__`` dispatches on it,
        ``Engine.describe`` names it)."""
        inp = self.spec["input"]
        if binary_path(self.spec):
            return "binary"
        if self.grid is not None:
            return "planes"
        if inp["kind"] == "fixed" and self.kind == "fixed" and not self.spec["act_scale"]:
            return "int8" if self.w_int8 is not None and inp["wl"] <= 8 else "int_f64"
        return "float"

    # -------------------------------------------------------------------------------------------- helpers

    def _gemm(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.conv:
            s = self.spec
            return F.conv2d(x, w, bias, s["stride"], s["padding"])
        return F.linear(x, w, bias)

    def _thresholds_last(self, k: torch.Tensor, hw: tuple[int, int] | None = None,
                         corr: torch.Tensor | None = None) -> torch.Tensor:
        """The folded BN + sign with the channels last (``ops.threshold_bits``), on k (N, H W, O) of a convolution
        (``hw`` its output size, ``corr`` its padding correction) or (N, O) of a linear layer: (k >= T_ge) XOR
        down (``engine.fold.threshold_ge``: a direction -1 channel compares with T + 1). A folded max
        pooling pools the comparison's bits before the XOR: an OR (max k >= T) for direction +1, an AND (max k <= T:
        not any k >= T + 1) for -1. Returns bool (N, O, Ho, Wo) (a channels-last view), or (N, O)."""
        if hw is None:
            return ops.threshold_bits(k.view(-1, 1, 1, self.o), None, self._T_ge, self._down).reshape(-1, self.o)
        return ops.threshold_bits(k.view(-1, hw[0], hw[1], self.o),
                                  None if corr is None else corr.view(hw[0], hw[1], self.o), self._T_ge, self._down,
                                  self.pool)

    def _pad_correction(self, hw: tuple[int, int]) -> torch.Tensor | None:
        """sum of w_i over the padded taps of each output position, (Ho Wo, O) int32, channels last as the GEMM's
        output (None without padding):
        the engine's bit padding counts those taps as -1 where the simulated network's zeros count 0."""
        ph, pw = self.spec["padding"]
        if not (ph or pw):
            return None
        if hw not in self._corr:
            ind = torch.ones(1, self.shape[1], hw[0] + 2 * ph, hw[1] + 2 * pw)
            ind[:, :, ph:ph + hw[0], pw:pw + hw[1]] = 0
            c = F.conv2d(ind, self.w_real, None, self.spec["stride"])  # small integers: exact in float32
            self._corr[hw] = c.round().to(torch.int32)[0].permute(1, 2, 0).reshape(-1, self.o).contiguous()
        return self._corr[hw]

    def _scale_K(self, x_real: torch.Tensor | None) -> torch.Tensor | None:
        """XNOR-Net's activation scale K (Eq. 11) from the layer's real input, as papers.xnor computes it."""
        if not self.spec["act_scale"]:
            return None
        if self.conv:
            a = x_real.abs().mean(1, keepdim=True)
            s = self.spec
            return F.avg_pool2d(a, s["kernel"], s["stride"], s["padding"], count_include_pad=True)
        return x_real.abs().mean(1, keepdim=True)

    # -------------------------------------------------------------------------------------------- paths

    def _popcount_dot(self, bits: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """The +-1 dot products of binary inputs (bool, True = +1; padding packed as -1) with the binary weights,
        packed XNOR-popcount GEMM, exact: int32 (N, Ho Wo, O) channels last and (Ho, Wo) for a convolution, (N, O)
        and None for a linear layer."""
        n = bits.shape[0]
        if not self.conv:
            return ops.binary_gemm(ops.pack_bits(bits.reshape(n, self.k)), self.packed, self.k), None
        s = self.spec
        ho, wo = self._out_hw(bits)
        if self.packed_hwc is not None:  # (N L, bytes): rows of K packed bits, (dy, dx, c) order
            a, wp = ops.im2col_pack_hwc(bits, s["kernel"], s["stride"], s["padding"]), self.packed_hwc
        else:  # (c, dy, dx) order
            a, wp = ops.im2col_pack(bits, s["kernel"], s["stride"], s["padding"]), self.packed
        return ops.binary_gemm(a, wp, self.k).view(n, ho * wo, self.o), (ho, wo)

    def _out_hw(self, x: torch.Tensor) -> tuple[int, int]:
        """The convolution's output size on an input (N, C, H, W)."""
        s = self.spec
        return tuple((x.shape[2 + i] + 2 * s["padding"][i] - s["kernel"][i]) // s["stride"][i] + 1 for i in (0, 1))

    def _channels_first(self, k: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return k if hw is None else k.view(k.shape[0], hw[0], hw[1], self.o).permute(0, 3, 1, 2)

    def _binary(self, b: _Bits, K: torch.Tensor | None):
        """Binary input x binary weights: packed XNOR-popcount GEMM, exact integers."""
        k, hw = self._popcount_dot(b.bits)
        corr = self._pad_correction(tuple(b.bits.shape[2:])) if self.conv else None
        if self.spec["output"] == "bits":  # threshold (and pool) channels-last, an NCHW view of the bits
            return _Bits(self._thresholds_last(k, hw, corr), self.spec["out_H"])
        if corr is not None:
            k += corr
        k = self._channels_first(k, hw)
        return int_to_real(k, int_scale(self.alpha, b.H), self.bias, K)

    def _planes(self, x: torch.Tensor) -> torch.Tensor:
        """k-bit activations x binary weights (QNN, DoReFa), in bit operations: with the activation codes c = sum_j
        coef_j b_j (coef_j = 2^j; -2^(k-1) for the top bit of a signed code), sum_i w_i c_i = sum_j coef_j
        sum_i w_i b_ij, and sum_i w_i b_ij = (sum_i w_i + xnor_dot(2 b_j - 1, w)) / 2: one XNOR-popcount GEMM a
        bit-plane, exact. A padded tap (code 0) has b = 0 in every plane and drops out. Then acc * step * alpha."""
        step, signed, nbits = self.grid
        # the codes (|c| < 2^4): x * (1 / step) is within float32 rounding of c (1/step = 2^(b-1) / max or 2^b - 1)
        codes = torch.round(x * (1.0 / step)).to(torch.int8).view(torch.uint8) & ((1 << nbits) - 1)
        acc, hw = None, None
        for j in range(nbits):
            dot, hw = self._popcount_dot(((codes >> j) & 1).bool())
            dot += self._rowsum
            dot >>= 1  # (even: sum_i w_i (1 + s_i))
            if j:
                dot <<= j
            if signed and j == nbits - 1:
                dot.neg_()
            acc = dot if acc is None else acc.add_(dot)
        scale = torch.tensor([step], dtype=torch.float32)
        return int_to_real(self._channels_first(acc, hw), scale if self.alpha is None else scale * self.alpha,
                           self.bias)

    def _fixed_int(self, x: torch.Tensor) -> torch.Tensor:
        """Fixed-point input x fixed-point weights: an exact integer GEMM, scaled once by 2^-(fl_x + fl_w). Both of
        8 bits or fewer: int8 x int8 -> int32 (``ops.int8_gemm``: torch's int8 matrix multiply; im2col of the
        integer input for a convolution); wider: in float64, which holds every integer below 2**53 (checked)."""
        inp, s = self.spec["input"], self.spec
        scale = 2.0 ** -(inp["fl"] + s["weight"]["fl"])
        if self.w_int8 is not None and inp["wl"] <= 8:
            q = torch.round(x * 2.0 ** inp["fl"]).to(torch.int8)  # exact: x is on the grid, a power-of-two scale
            if self.conv:
                ho, wo = self._out_hw(x)
                acc = ops.int8_gemm(ops.im2col_int8(q, s["kernel"], s["stride"], s["padding"]), self.w_int8)
                acc = acc.view(x.shape[0], ho, wo, self.o).permute(0, 3, 1, 2)
            else:
                acc = ops.int8_gemm(q, self.w_int8)
            y = (acc.double() * scale).float()
        else:
            xi = torch.round(x.double() * 2.0 ** inp["fl"])
            wi = self.w_int.double()
            bound = xi.abs().amax().item() * wi.abs().sum(dim=tuple(range(1, wi.dim()))).amax().item()
            if bound >= 2**53:
                raise UserError(f"layer {s['name']}: integer accumulator may exceed 2**53")
            y = (self._gemm(xi, wi) * scale).float()
        return y if self.bias is None else y + self.bias.view([1, -1] + [1] * (y.dim() - 2))

    def __call__(self, a):
        t, dims = (a.bits if isinstance(a, _Bits) else a), 4 if self.conv else 2
        if t.dim() != dims or t.shape[1] != self.shape[1]:
            raise ValueError(f"expects {dims}-D input of {self.shape[1]} channels, got {tuple(t.shape)}")
        inp = self.spec["input"]
        if inp["kind"] == "sign":
            x_real = _real(a)
            K = self._scale_K(x_real)
            a = _Bits(x_real >= 0, inp["H"]) if not isinstance(a, _Bits) else _Bits(a.bits, inp["H"])
        else:
            K = self._scale_K(_real(a)) if self.spec["act_scale"] else None
        if self.path == "binary":
            if not isinstance(a, _Bits):
                raise ValueError("a binary-input layer received real values")
            return self._binary(a, K)
        x = _real(a)
        if self.levels is not None:  # (QNN's and DoReFa's multi-bit activations)
            x = self.levels(x)
        if self.path == "planes":
            return self._planes(x)
        if inp["kind"] == "fixed":
            from common.quant.fixed import to_fixed

            x = to_fixed(x, inp["wl"], inp["fl"], inp["rounding"], inp["span"])
            if self.path in ("int8", "int_f64"):
                return self._fixed_int(x)
        post_scale = self.alpha is not None
        if self.spec["bias_inside"] and not post_scale and K is None:
            return self._gemm(x, self.w_real, self.bias)  # the simulated network's own op
        y = self._gemm(x, self.w_real)
        if post_scale:
            y = y * self.alpha.view([1, -1] + [1] * (y.dim() - 2))
        if K is not None:
            y = y * K
        if self.bias is not None:
            y = y + self.bias.view([1, -1] + [1] * (y.dim() - 2))
        return y


class Engine:
    """A packed network, ready to run. ``Engine(path)`` or ``Engine(packed)``; ``engine(x)`` -> logits;
    ``engine.predict(x)`` -> class indices; ``engine.run(x, trace=True)`` also returns every op's output (bits as
    +-H float32) with the name of the last module it covers, for comparing with the simulated network."""

    def __init__(self, source):
        self.path = None if isinstance(source, Packed) else Path(source)
        self.packed = source if isinstance(source, Packed) else read(self.path)
        self.meta = self.packed.meta
        self.ops: list[tuple[dict, object]] = []
        for i, spec in enumerate(self.packed.layers):
            arrays = {k: _t(self.packed.arrays[v]) for k, v in spec.get("arrays", {}).items()}
            try:
                _check_op(spec, arrays)
                self.ops.append((spec, self._op(spec, arrays)))
            except KeyError as e:
                raise UserError(f"packed model {self.path}: layer {i} ({spec.get('op')}) lacks {e}") from None
            except (TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:  # (a crafted file)
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise UserError(f"packed model {self.path}: layer {i} ({spec.get('op')}) is malformed: {msg}") from None

    def _op(self, spec: dict, arr: dict):
        op = spec["op"]
        if op in ("conv", "linear"):
            return _Layer(spec, arr)
        if op == "batchnorm":
            mean, var, w, b, eps = arr["mean"], arr["var"], arr.get("weight"), arr.get("bias"), spec["eps"]
            return lambda a: F.batch_norm(_real(a), mean, var, w, b, False, 0.0, eps)
        if op == "threshold":  # BN + sign of real values: (y >= t_ge) XOR down per channel
            t, d = arr["threshold"], arr["direction"]
            if t.dtype != torch.float32 or t.dim() != 1 or d.shape != t.shape:
                raise ValueError("threshold and direction must be float32 and int8 arrays of one length")
            t_ge, down, H = *float_threshold_ge(t, d), spec["H"]

            return lambda a: _Bits(ops.threshold_real(_real(a), t_ge, down), H)
        if op == "sign":
            H = spec["H"]
            return lambda a: _Bits(a.bits, H) if isinstance(a, _Bits) else _Bits(a >= 0, H)
        if op == "maxpool":
            kw = _pool_args(spec, f"op {spec.get('name')!r} (maxpool)")

            def pool(a):
                if isinstance(a, _Bits):  # max of +-H values: the OR of the bits (padding never counts)
                    return _Bits(ops.or_pool2d(a.bits, **kw), a.H)
                return F.max_pool2d(a, **kw)
            return pool
        if op == "flatten":
            s, e = spec["start"], spec["end"]
            return lambda a: _Bits(a.bits.flatten(s, e), a.H) if isinstance(a, _Bits) else a.flatten(s, e)
        if op == "quantize":
            q = _levels(spec.get("quantizer"), spec.get("name"))[0]
            return lambda a: q(_real(a))
        if op == "relu":
            return lambda a: F.relu(_real(a))
        if op == "hardtanh":
            lo, hi = spec["min"], spec["max"]
            return lambda a: F.hardtanh(_real(a), lo, hi)
        raise UserError(f"packed model {self.path}: unknown op {op!r} (a newer format?)")

    @torch.no_grad()
    def run(self, x: torch.Tensor, trace: bool = False):
        """Logits of a float32 batch; with ``trace``, (logits, [(module name, output as float32, is_bits), ...]):
        each op's output under the name of the last simulated module it covers (bits as +-H)."""
        a = x.to(torch.float32)
        seen = []
        for i, (spec, fn) in enumerate(self.ops):
            try:
                a = fn(a)
            except (RuntimeError, ValueError, TypeError, IndexError) as e:  # (shapes that do not chain)
                raise UserError(f"packed model {self.path}: layer {i} ({spec.get('op')}) cannot run on its input: "
                                f"{str(e).splitlines()[0]}") from None
            if trace:
                seen.append((spec["covers"][-1], _real(a), isinstance(a, _Bits)))
        out = _real(a)
        return (out, seen) if trace else out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x).argmax(1)

    def describe(self) -> list[str]:
        """One line per op: what it computes and in which arithmetic."""
        lines = []
        for spec, op in self.ops:
            if spec["op"] in ("conv", "linear"):
                w, i = spec["weight"], spec["input"]["kind"]
                out = " + folded BN/sign thresholds" if spec["output"] == "bits" else " -> float32"
                if spec.get("pool"):
                    out += " + max pooling of the threshold bits (OR / AND)"
                how = {"binary": "xnor-popcount integer GEMM" + out,
                       "planes": f"xnor-popcount integer GEMM per bit-plane of the {op.grid[2] if op.grid else 0}-bit "
                                 "codes -> float32",
                       "int8": "integer GEMM (fixed x fixed, int8 x int8 -> int32)",
                       "int_f64": "integer GEMM (fixed x fixed, in float64)",
                       "float": f"float GEMM ({w['kind']} weights{', x alpha' if w['scale'] != 'none' else ''})",
                       }[op.path]
                lines.append(f"{'+'.join(spec['covers'])}: {spec['op']} {spec['in_ch']}->{spec['out_ch']}, "
                             f"input {i}, weights {w['kind']}/{w['scale']}: {how}")
            elif spec["op"] == "threshold":
                lines.append(f"{'+'.join(spec['covers'])}: batch norm + sign folded into float32 thresholds")
            else:
                lines.append(f"{'+'.join(spec['covers'])}: {spec['op']}")
        return lines
