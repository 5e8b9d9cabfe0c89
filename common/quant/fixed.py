"""Fixed-point numbers: a static format (Gupta et al. 2015), a symmetric uniform grid with a given step (Sung et al.
2016), and dynamic fixed point (Courbariaux et al. 2015).

Convention, the same for every quantizer here: ``wl`` is the word length *including the sign bit*, ``fl`` the
fractional length; the step is eps = 2^-fl. ``range: twos_complement`` gives [-2^(wl-1), 2^(wl-1) - 1] * eps
(Gupta's <IL, FL> with wl = IL + FL, the sign counted in IL; Ristretto; QPyTorch). ``range: symmetric`` gives
+-(2^(wl-1) - 1) * eps (Courbariaux's fixed_point(X, NOB, NOIB), whose NOB and NOIB exclude the sign:
wl = NOB + 1, fl = NOB - NOIB). Values are saturated to the range after rounding.

Rounding: ``nearest`` is floor(x/eps + 1/2) * eps (ties up, Gupta's definition); ``stochastic`` rounds up with
probability (x - floor_eps(x)) / eps, i.e. floor(x/eps + u) * eps with u ~ U[0, 1), so E[SR(x)] = x inside the
range. The backward pass is the identity (straight through), as these papers' simulators.

Precision: float32 and float64 inputs are rounded in their own precision (float32 as every committed run);
float16 and bfloat16 inputs are rounded in float32 and the result cast back (their own 11- and 8-bit significands
would round x/eps + 1/2 and x/eps + u a second time: grid values moved, stochastic rounding biased). The cast back
is exact wherever the grid value is representable in that dtype (wl <= 11 for float16, wl <= 8 for bfloat16, inside
their exponent range); a grid value that is not is stored as the nearest value the dtype has.

``nearest`` is floor(x * 2^fl + 0.5) evaluated in the input's float precision: x * 2^fl is exact, the addition may
round, and its rounding changes the floor -- the result is then one step (eps) above Gupta's rounding -- on exactly
two sets (float32; checked exhaustively over every |x * 2^fl| in [2^-10, 2^24], and outside it the sum cannot cross
an integer): (a) x * 2^fl = 1/2 - 2^-25, the one float32 in [1/2 - 2^-25, 1/2), whose sum rounds to 1 (eps instead
of 0); (b) x * 2^fl an odd integer of magnitude in (2^23, 2^24), whose sum ties to the even x * 2^fl + 1 -- outside
the range of every wl <= 24 bits, so saturated to the same bound either way. float64: 1/2 - 2^-54 and odd integers
in (2^52, 2^53). The formula is kept as it is, because committed runs computed it: their fixed-point activations and
gradients are arbitrary float32 values (~1e9-1e10 quantized per training run), each with a chance of about 2^-23 of
being (a) where x * 2^fl falls in [1/4, 1/2), so exact rounding could not be shown to reproduce them bit for bit
(tests/test_quant_edges.py pins this behaviour).
"""
from __future__ import annotations

from typing import Literal

import torch

from common.quant import kernels
from common.quant.base import Quantizer, register, straight_through
from common.validate import Range

Rounding = Literal["nearest", "stochastic"]
Span = Literal["twos_complement", "symmetric"]


def to_fixed(x: torch.Tensor, wl: int, fl: int, rounding: Rounding = "nearest",
             span: Span = "twos_complement", out: torch.Tensor | None = None) -> torch.Tensor:
    """x on the grid eps = 2^-fl, rounded as asked, saturated to the range of a ``wl``-bit word (sign included).
    ``out``: write the result there (it may be ``x`` itself: in-place quantization of stored values). float16 and
    bfloat16 are rounded in float32 (see the module's docstring)."""
    if x.dtype in _LOW_PRECISION:  # cast in, round in float32 exactly as a float32 input, cast the result back
        y = to_fixed(x.float(), wl, fl, rounding, span)
        return y.to(x.dtype) if out is None else out.copy_(y)
    eps = 2.0 ** -fl
    top = 2 ** (wl - 1)
    lo, hi = (-(top - 1) if span == "symmetric" else -top) * eps, (top - 1) * eps
    y = kernels.fixed(x, fl, lo, hi, rounding, out)  # the same operations as below, fused in one pass
    if y is not None:
        return y
    # floor(x / eps + noise) * eps clamped to [lo, hi], computed as clamp(floor(x * 2^fl + noise), lo/eps, hi/eps) * eps
    # on one buffer: x / eps == x * 2^fl and k * eps are exact (powers of two), so the clamp commutes with the scaling
    # and every value is the same; for stochastic rounding the buffer is the uniform draw itself
    if rounding == "nearest":
        y = torch.add(_half(x), x, alpha=2.0 ** fl, out=out)
    else:
        y = torch.rand_like(x).add_(x, alpha=2.0 ** fl)
    y.floor_().clamp_(lo / eps, hi / eps)
    return y.mul_(eps) if out is None or y is out else torch.mul(y, eps, out=out)


_LOW_PRECISION = (torch.float16, torch.bfloat16)
_HALF: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _half(x: torch.Tensor) -> torch.Tensor:
    key = (x.dtype, x.device)
    if key not in _HALF:
        _HALF[key] = torch.tensor(0.5, dtype=x.dtype, device=x.device)
    return _HALF[key]


@register("fixed")
class Fixed(Quantizer):
    """A static fixed-point format: ``wl`` bits (sign included), ``fl`` fractional bits."""

    ranges = {"wl": Range(1, 32), "fl": Range(-64, 64)}

    def __init__(self, wl: int = 16, fl: int = 8, rounding: Rounding = "nearest", range: Span = "twos_complement"):
        super().__init__()
        self.bits, self.wl, self.fl, self.rounding, self.span = wl, wl, fl, rounding, range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = to_fixed(x, self.wl, self.fl, self.rounding, self.span)
        return straight_through(x, q)

    @torch.no_grad()
    def quantize_(self, x: torch.Tensor) -> None:
        to_fixed(x, self.wl, self.fl, self.rounding, self.span, out=x)

    def extra_repr(self) -> str:
        return f"wl={self.wl}, fl={self.fl}, rounding={self.rounding}, range={self.span}"


@register("uniform")
class Uniform(Quantizer):
    """Symmetric uniform quantizer with an odd number of levels M = 2^bits - 1 and a given step (Sung, Shin, Hwang
    2016; 2 bits = ternary): Q(w) = step * clip(round(w / step), -(M-1)/2, (M-1)/2). Straight-through backward."""

    ranges = {"bits": Range(2, 32), "step": Range(lo=0, lo_open=True)}

    def __init__(self, bits: int = 8, step: float = 1.0 / 128):
        super().__init__()
        self.bits, self.step = bits, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = 2 ** (self.bits - 1) - 1
        with torch.no_grad():
            q = torch.div(x, self.step).add_(0.5).floor_().clamp_(-half, half).mul_(self.step)
        return straight_through(x, q)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, step={self.step:.6g}"


def _count_at_least(a: torch.Tensor, t: float, buf: torch.Tensor | None) -> int:
    """#(a >= t): the comparison written as 0/1 floats (into ``buf``, which may be ``a``) and summed, exact while the
    count fits the float mantissa; count_nonzero beyond that."""
    if a.is_floating_point() and a.numel() < 2 / torch.finfo(a.dtype).eps:
        return int(torch.ge(a, t, out=torch.empty_like(a) if buf is None else buf).sum())
    return int(torch.count_nonzero(a >= t))


@register("dynamic_fixed")
class DynamicFixed(Quantizer):
    """Dynamic fixed point (Courbariaux, Bengio, David 2015, §3 and their code): a ``wl``-bit word (sign included,
    symmetric range) whose integer length ``il`` (bits left of the point, sign excluded: NOIB) is shared by the
    tensor and moves with its overflow rate. Overflow rate at il: the fraction of |x| >= the largest value
    (2^(wl-1) - 1) * 2^-(wl-1-il). Every ``update_every`` training calls, with the rates at il and il - 1 averaged
    over those calls: rate(il) > max_overflow -> il + 1; else rate(il - 1) > max_overflow -> keep; else il - 1.

    ``init_il``: the starting integer length (5 in the reference code); null: the smallest one whose overflow
    rate on the first non-zero tensor seen is at most ``max_overflow``. During a calibration pass
    (``quant.calibrate_epochs``: the reference code's range-init epochs at 31 bits) the range adapts while values
    pass unquantized. The integer length is a buffer, saved in checkpoints.

    Lower bound: the integer length never goes below ``il_min = wl - 126``, i.e. fl = wl - 1 - il <= 125, the largest
    fractional length at which the scale 2^fl, the step 2^-fl and both overflow thresholds ((2^(wl-1) - 1) 2^-fl and
    half of it) are normal float32 numbers, so the format computes the same whether subnormals are flushed to zero
    (as training runs do: common/training.py process_settings) or not. Without it an all-zero tensor (nothing ever
    overflows) lowers il at every update: the step and thresholds turn subnormal, 2^fl overflows to inf and every
    0 * 2^fl is NaN. Real data never reaches the bound: moving below it needs, averaged over ``update_every`` calls,
    all but a ``max_overflow`` fraction of the values below (2^(wl-1) - 1) 2^-126 < 2^(wl-127) <= 2^-95 (~2.5e-29,
    wl <= 32) in magnitude, far below any weight, activation, gradient or update these networks produce unless the
    tensor is (nearly) all exact zeros, which an unbounded run went on to turn into NaN. So every finite run keeps
    its integer lengths and values, the committed results included.
    """

    ranges = {"wl": Range(2, 32), "max_overflow": Range(0, 1), "update_every": Range(lo=1),
              "init_il": Range(-64, 64)}

    def __init__(self, wl: int = 10, rounding: Rounding = "nearest", max_overflow: float = 1e-4,
                 update_every: int = 100, init_il: int | None = 5):
        super().__init__()
        self.bits, self.wl, self.rounding = wl, wl, rounding
        self.max_overflow, self.update_every = max_overflow, update_every
        self.register_buffer("il", torch.tensor(0 if init_il is None else init_il))
        self.register_buffer("initialised", torch.tensor(init_il is not None))
        self.register_buffer("calls", torch.tensor(0))
        self.register_buffer("rates", torch.zeros(2, dtype=torch.float64))  # summed overflow rates at il, il - 1

    @property
    def il_min(self) -> int:
        """The smallest integer length: fl = wl - 1 - il <= 125, the grid's scale, step and thresholds normal floats."""
        return self.wl - 126

    def fl(self, il: int | None = None) -> int:
        return self.wl - 1 - (int(self.il) if il is None else il)

    def overflow_rate(self, x: torch.Tensor, il: int) -> float:
        top = (2 ** (self.wl - 1) - 1) * 2.0 ** -self.fl(il)
        return float((x.abs() >= top).double().mean())

    def _overflow_rates(self, x: torch.Tensor, il: int) -> tuple[float, float]:
        """(overflow_rate(x, il), overflow_rate(x, il - 1)), the same values from one |x|: the largest value at
        il - 1 is exactly half the one at il, and no count is needed above max|x| (a NaN max counts as usual)."""
        n = x.numel()
        if n == 0:
            return float("nan"), float("nan")
        top = (2 ** (self.wl - 1) - 1) * 2.0 ** -self.fl(il)
        counts = kernels.count_abs_at_least(x, top / 2, top)  # (the max below only skips counts that would be 0)
        if counts is not None:
            return counts[1] / n, counts[0] / n
        a = x.abs()
        m = float(a.max())
        below = 0 if m < top / 2 else _count_at_least(a, top / 2, None)
        now = 0 if m < top else _count_at_least(a, top, a)
        return now / n, below / n

    def _between_updates(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor | None:
        """At a training call where the integer length cannot move (all but every ``update_every``-th), _observe and
        to_fixed (nearest) fused in one pass of the kernels; None where that does not apply."""
        if self.training and self.rounding == "nearest" and not self.calibrating and bool(self.initialised) \
                and (int(self.calls) + 1) % self.update_every != 0:
            return kernels.dynamic_fixed_step(x, out, self.wl, self.fl(), self.rates, self.calls)
        return None

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        if not self.initialised:
            m = float(x.abs().max()) if x.numel() else 0.0
            if m == 0:  # nothing to measure yet (zero-initialised weights): zeros are exact in any format
                return
            il = int(torch.ceil(torch.log2(torch.tensor(m))).item()) - 1
            while self.overflow_rate(x, il) > self.max_overflow:
                il += 1
            while il > -64 and self.overflow_rate(x, il - 1) <= self.max_overflow:
                il -= 1
            self.il.fill_(max(il, self.il_min))  # (only a first tensor below ~2^(wl-126): see il_min)
            self.initialised.fill_(True)
        if not self.training:
            return
        il = int(self.il)
        # (in-place updates: ``self.rates += ..`` would also re-register the buffer through Module.__setattr__,
        # which cost more than the counting itself)
        self.rates.add_(torch.tensor(self._overflow_rates(x, il), dtype=torch.float64, device=self.rates.device))
        self.calls.add_(1)
        if int(self.calls) % self.update_every == 0:
            now, below = (self.rates / self.update_every).tolist()
            if now > self.max_overflow:
                self.il.add_(1)
            elif below <= self.max_overflow and int(self.il) > self.il_min:  # (never reached by real data)
                self.il.sub_(1)
            self.rates.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._between_updates(x.detach(), None)
        if q is not None:
            return straight_through(x, q)
        self._observe(x.detach())
        if self.calibrating or not self.initialised:
            return x
        with torch.no_grad():
            q = to_fixed(x, self.wl, self.fl(), self.rounding, "symmetric")
        return straight_through(x, q)

    @torch.no_grad()
    def quantize_(self, x: torch.Tensor) -> None:
        if self._between_updates(x, x) is not None:
            return
        self._observe(x)
        if not (self.calibrating or not self.initialised):
            to_fixed(x, self.wl, self.fl(), self.rounding, "symmetric", out=x)

    def extra_repr(self) -> str:
        return (f"wl={self.wl}, il={int(self.il)}, rounding={self.rounding}, max_overflow={self.max_overflow}, "
                f"update_every={self.update_every}")
