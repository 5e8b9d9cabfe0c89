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


def apply_thresholds(k: torch.Tensor, T: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """bool bits (True = +1) of an integer accumulator (N, C, ...) against per-channel thresholds."""
    shape = [1, -1] + [1] * (k.dim() - 2)
    T, up = T.view(shape), (d > 0).view(shape)
    return torch.where(up, k >= T, k <= T)
