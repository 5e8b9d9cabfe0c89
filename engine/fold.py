"""Batch norm and sign folded into integer thresholds, exactly.

A binary layer (+-1 inputs, +-1 weights) produces an integer accumulator k = sum_i x_i w_i in [-F, F] (F its fan-in).
The simulated network then computes, in float32, v = k * scale + bias (scale = alpha * H_in, skipped when it is 1),
BN(v) in evaluation mode, and sign(BN(v)) (+1 where BN(v) >= 0, -0.0 included). Rather than re-deriving torch's
floating-point operation order (on this machine torch's CPU batch norm computes fma(x, a, fma(-mean, a, beta)) with
a = rsqrt(var + eps) * gamma, which no textbook formula reproduces bit for bit), the fold *evaluates the float32
function itself*, with torch's own ``batch_norm`` kernel, on every integer k in [-F, F] and records where the sign
flips. Every step is monotone in k (a float multiply by a fixed factor, a float add, BN's multiply-add), so the sign
flips at most once per channel:

- gamma * rsqrt(var + eps) > 0: +1 exactly where k >= T (direction +1);
- < 0: +1 exactly where k <= T (direction -1);
- == 0 (or a flip outside [-F, F]): the output is constant, stored as direction +1 with T = -(F+1) (always +1) or
  T = F+1 (always -1).

Because the thresholds come from the very float32 evaluation, the engine's bits equal sign(BN(k * scale + bias)) for
every reachable k, bit for bit. (What remains, see ``engine.run``: the *simulated* network adds its bias inside
the BLAS accumulation, so its pre-BN value is k + bias rounded in a blocking-dependent way and can differ from
fl(k + bias) by an ulp; the two decisions can differ only if BN's zero crossing lies within an ulp of k + bias.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError


def int_scale(alpha: torch.Tensor | None, h_in: float) -> torch.Tensor | None:
    """The float factor of a binary layer's integer accumulator: alpha * H_in (None when it is exactly 1), for
    ``int_to_real``: the exporter's folding and the engine's run take it from here alike."""
    if h_in != 1.0:
        return torch.tensor([h_in], dtype=torch.float32) if alpha is None else alpha * h_in
    return alpha


def int_to_real(k: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
                K: torch.Tensor | None = None) -> torch.Tensor:
    """The float32 value the engine gives an integer accumulator: ((k * scale) * K) + bias, each step skipped when
    absent, channel-wise tensors broadcast on dimension 1. Used both at run time and to fold thresholds, so that
    the two see the same float operations."""
    shape = [1, -1] + [1] * (k.dim() - 2)
    y = k.to(torch.float32)
    if scale is not None:
        y = y * scale.view(shape)
    if K is not None:
        y = y * K
    if bias is not None:
        y = y + bias.view(shape)
    return y


def sign_thresholds(fan_in: int, out_ch: int, scale: torch.Tensor | None, bias: torch.Tensor | None,
                    bn: nn.Module | None, spatial: bool, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (threshold int32, direction int8) with sign(BN(int_to_real(k))) == +1 exactly where
    (k >= T if direction == +1 else k <= T), for every integer k in [-fan_in, fan_in]."""
    ks = torch.arange(-fan_in, fan_in + 1, dtype=torch.int32)
    k = ks.view(-1, 1, 1, 1) if spatial else ks.view(-1, 1)
    k = k.expand(-1, out_ch, *([1, 1] if spatial else []))
    v = int_to_real(k, scale, bias)
    if bn is not None:
        v = F.batch_norm(v, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    v = v.reshape(len(ks), out_ch)
    if bool(torch.isnan(v).any()):
        raise UserError(f"{where}: batch norm gives NaN on some integer input (non-finite running statistics?)")
    pos = v >= 0  # (2F+1, C): +1 where BN(v) >= 0 (sign maps -0.0 to +1 too)
    step_up = (pos[1:] & ~pos[:-1]).sum(0)
    step_down = (~pos[1:] & pos[:-1]).sum(0)
    if bool(((step_up > 0) & (step_down > 0)).any()) or bool((step_up > 1).any()) or bool((step_down > 1).any()):
        raise UserError(f"{where}: sign(batch norm) is not monotone in the integer input (cannot fold)")
    T = torch.empty(out_ch, dtype=torch.int32)
    d = torch.ones(out_ch, dtype=torch.int8)
    all_pos, none_pos = pos.all(0), ~pos.any(0)
    first_pos = pos.to(torch.int8).argmax(0)  # first True (for increasing channels)
    last_pos = len(ks) - 1 - pos.flip(0).to(torch.int8).argmax(0)  # last True (for decreasing channels)
    for c in range(out_ch):
        if bool(all_pos[c]):
            T[c] = -fan_in - 1
        elif bool(none_pos[c]):
            T[c] = fan_in + 1
        elif bool(step_up[c] > 0):
            T[c] = ks[first_pos[c]]
        else:
            T[c], d[c] = ks[last_pos[c]], -1
    return T, d


def threshold_ge(T: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_ge int32, down bool) for one comparison per channel: the bit of an integer k is (k >= T_ge) XOR down, where
    direction -1 compares with T + 1 (k <= T is not k >= T + 1; T + 1 kept within int32: no int32 k reaches it)."""
    down = d < 0
    return torch.where(down, T.long() + 1, T.long()).clamp(max=2**31 - 1).int(), down


# ------------------------------------------------------------------------------------------------ real inputs

_INF_KEY = 0x7F800000  # the order key of +inf (float32 bits); -inf is -_INF_KEY


def _from_key(key: torch.Tensor) -> torch.Tensor:
    """int64 order keys -> float32: key >= 0 is the bit pattern of a non-negative float, -key that of its negative
    (so keys are in the order of the floats; +-0 share key 0)."""
    bits = torch.where(key >= 0, key, (-key) | 0x80000000)
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def float_sign_thresholds(bn: nn.Module, spatial: bool, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (threshold float32, direction int8) with sign(BN(y)) == +1 exactly where (y >= t if direction
    == +1 else y <= t), for every finite float32 y: BN and sign after a layer whose output is real (a first layer).

    As for the integer thresholds, torch's own float32 batch norm is evaluated (on (1, C, 1, 1) or (1, C) tensors:
    its result for a value does not depend on where in the tensor the value sits, ``tests/test_engine.py``), and
    y -> BN(y) is monotone per channel (a multiply by a fixed factor and an add, each correctly rounded), so the
    sign flips once: found by bisection over the 2**32 float32 values in their order, at most 35 evaluations for
    all channels at once. Constant channels (gamma = 0, or a flip beyond the finite floats) are direction +1 with
    t = -inf (always +1) or direction -1 with t = -inf (always -1)."""
    c = bn.num_features

    def pos(key: torch.Tensor) -> torch.Tensor:
        y = _from_key(key).view(1, c, 1, 1) if spatial else _from_key(key).view(1, c)
        v = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        if bool(torch.isnan(v).any()):
            raise UserError(f"{where}: batch norm gives NaN (non-finite running statistics?)")
        return (v >= 0).view(c)

    lo = torch.full((c,), -_INF_KEY + 1, dtype=torch.int64)  # -max float32
    hi = torch.full((c,), _INF_KEY - 1, dtype=torch.int64)  # +max float32
    at_lo, at_hi = pos(lo), pos(hi)
    down = at_lo & ~at_hi
    const = at_lo == at_hi
    # bisection for the first key of the upper region, u(key) = pos(key) XOR down: u(lo) false, u(hi) true
    lo, hi = lo - 1, hi.clone()
    while bool((hi - lo > 1).any()):  # (at most 33 rounds; a converged channel re-evaluates a finite key)
        mid = torch.div(lo + hi, 2, rounding_mode="floor").clamp(-_INF_KEY + 1, _INF_KEY - 1)
        u = pos(mid) ^ down
        hi, lo = torch.where(u, mid, hi), torch.where(u, lo, mid)
    # increasing: +1 from hi on (y >= f(hi)); decreasing: +1 up to lo (y <= f(lo)); constant: t = -inf
    t = torch.where(down, _from_key(lo), _from_key(hi))
    d = torch.where(down, -1, 1).to(torch.int8)
    t = torch.where(const, torch.tensor(float("-inf")), t)
    d = torch.where(const, torch.where(at_lo, 1, -1).to(torch.int8), d)
    return t, d


def float_threshold_ge(t: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_ge, down) for one comparison: the bit is (y >= t_ge) XOR down (y <= t is not y >= the next float)."""
    down = d < 0
    return torch.where(down, torch.nextafter(t, torch.tensor(float("inf"))), t), down
