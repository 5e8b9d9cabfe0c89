"""Export a trained quantized network of this suite to a packed file, and read it back.

``export(model, path, meta)`` takes a ``common.module.Classifier`` (or its ``nn.Sequential`` network) and writes the
file described in ``engine.fileformat``. The network is walked in order; supported modules (in eval mode):

- ``Conv2d`` / ``QConv2d`` (groups 1, dilation 1, zero padding) and ``Linear`` / ``QLinear``, papers.xnor's
  ``XnorConv2d`` / ``XnorLinear`` (their activation scale K included). The layer's weight is taken as the simulated
  network uses it (its weight quantizer applied in eval mode), decomposed, and the decomposition checked to give
  the same float32 tensor bit for bit:

  ========================  ===============================================  ==========================================
  weight quantizer          stored as                                        arrays
  ========================  ===============================================  ==========================================
  none / ``float``          float32                                          ``weight`` (float32, torch's shape)
  ``sign`` (H)              1 bit a weight, the O x K bits in one row (one    ``weight`` (uint8, (padded_bytes(O K),)),
                            64-bit padding a layer); H as a per-layer alpha   ``alpha`` (float32, (1,))
                            when H != 1
  ``scaled_sign`` (BWN)     1 bit a weight + alpha = mean|W| per filter/layer  ``weight``, ``alpha`` ((O,) or (1,))
  ``ternary`` (TWN)         2 bit-planes (+1 plane, -1 plane), each one row,   ``plus``, ``minus``, ``alpha``
                            + alpha
  ``fixed`` (wl, fl)        int8 / int16 / int32 integers q, w = q 2^-fl      ``weight`` (intN, torch's shape);
                            (wl <= 4: ``packed: codes``, ``width`` 2 or 4     (uint8, (ceil(n * width / 8),))
                            bits a code, q + 2^(width-1))
  ``uniform`` (Sung: bits,  integers q as for ``fixed``, w = q * step         ``weight`` as for ``fixed``, ``step``
  step)                     (the step a float32, not a power of two)         (float32, (1,))
  ========================  ===============================================  ==========================================

  ``sign_stochastic`` is stored as what it is at test time: the real weights (``eval: real``) or ``sign``;
  ``dorefa_weight`` of 1 bit as ``scaled_sign`` per layer (E|W| sign(W)).
  A layer's ``input`` quantizer may be ``sign`` (binary input), ``sign_stochastic`` (as at test time), ``fixed``, or
  one of ``LEVELS`` (QNN's ``linear_quant``, DoReFa's ``dorefa_act``: input kind ``quantized``, the quantizer stored
  by name and arguments, ``check_levels``); ``dynamic_fixed`` (weights or input) is packed as the static format of
  its current integer length, which is what it computes at test time (``fl = wl - 1 - il``, symmetric range).
- ``BatchNorm1d`` / ``BatchNorm2d`` with running statistics: float32 mean, var, gamma, beta (kept as torch computes
  it, not folded into float weights, which would change the rounding).
- activations: ``sign`` quantizers (and ``sign_stochastic`` with ``eval: sign``) -> binary; a ``LEVELS`` quantizer
  -> a ``quantize`` op (the next layers' input kind ``levels`` until a real-valued op); ``ReLU``, ``Hardtanh``,
  ``MaxPool2d``, ``Flatten``; ``Identity``, ``Dropout``, the ``float`` quantizer and ``sign_stochastic`` with
  ``eval: real`` are nothing at test time.

**Folding** (``engine.fold``): a layer with binary inputs and binary weights (any alpha) followed by [BatchNorm]
and a sign activation is stored as one op whose output is bits: per output channel an int32 threshold T and a
direction, computed by evaluating the float32 BN on every possible integer accumulator. A ``MaxPool2d`` between a
binary convolution and its [BatchNorm +] sign (VGG-small's conv -> pool -> BN -> sign) is folded in too, as the
op's ``pool``: k -> k * alpha * H + bias is non-decreasing (alpha >= 0, checked), so it commutes with the max, and
the pooled decision is the OR of the window's threshold bits (direction +1: max k >= T) or their AND (direction
-1: max k <= T, i.e. not any k >= T + 1), with the padded taps left out as torch's -inf padding leaves them.
A BatchNorm + sign on real values (after a first layer, whose output is real) is one ``threshold`` op: per channel
a float32 threshold and a direction, found by bisection over the float32 values with the same evaluation of
torch's BN (``fold.float_sign_thresholds``). Anything else is an error naming the module (``UserError``), never a
silently different network.

Layer ops in the header (``layers``), each with ``covers`` (the module names it replaces) and ``arrays`` (field ->
array name): ``conv`` / ``linear`` (``input``: {kind: real|bits|sign|fixed|quantized|levels, H, wl, fl, span,
quantizer}, ``weight``: {kind: float|binary|ternary|fixed|uniform, scale: none|layer|filter, wl, fl, bits, packed:
codes, width}, ``bias``, ``bias_inside`` (torch adds it inside the GEMM), ``act_scale`` (XNOR's K), ``output``:
real|bits, ``out_H``, ``pool`` (a folded max pooling, as ``maxpool``'s fields), shapes), ``batchnorm``,
``threshold`` (BN + sign of real values: H; arrays ``threshold`` float32, ``direction``), ``quantize``
(``quantizer``), ``sign`` (H), ``maxpool``, ``relu``, ``hardtanh``, ``flatten``.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from engine import fold, ops
from engine.fileformat import Packed, read, write


LEVELS = ("linear_quant", "dorefa_act")  # multi-bit activation quantizers the engine runs as themselves


def level_grid(spec: dict) -> tuple[float, bool, int]:
    """(step, signed, bits) of a ``LEVELS`` quantizer's outputs, value = code * step: QNN's LinearQuant, codes in
    [-2^(b-1), 2^(b-1) - 1] (two's complement), step max / 2^(b-1); DoReFa's activations, codes in [0, 2^b - 1],
    step 1 / (2^b - 1)."""
    if spec["name"] == "linear_quant":
        return spec["max"] / 2 ** (spec["bits"] - 1), True, spec["bits"]
    return 1.0 / (2 ** spec["bits"] - 1), False, spec["bits"]


class ExportSizes(NamedTuple):
    packed_bytes: int  # the packed file's size
    float32_bytes: int  # the network's state_dict (parameters and buffers) held as float32


def load(path) -> Packed:
    """Read a packed file (``engine.fileformat.read``): ``UserError`` with one line for a bad file."""
    return read(Path(path))


def float32_bytes(model: nn.Module) -> int:
    """Bytes of the network's state_dict at 4 bytes a value (parameters and batch-norm statistics; integer counters
    such as ``num_batches_tracked`` and quantizer state left out)."""
    return sum(4 * t.numel() for t in model.state_dict().values() if t.is_floating_point())


def _modules(net: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The network's modules in the order they run: a plain ``nn.Sequential`` (nested ones flattened)."""
    if type(net) is not nn.Sequential:
        raise UserError(f"engine export: {prefix or 'the network'} is a {type(net).__name__}; the engine runs plain "
                        "nn.Sequential networks (no residual blocks yet)")
    out = []
    for name, m in net.named_children():
        full = f"{prefix}.{name}" if prefix else name
        out += _modules(m, full) if type(m) is nn.Sequential else [(full, m)]
    return out


def _quantizer_name(q) -> str | None:
    """The quantizer's registered name; a paper's variant of the static fixed-point format (Ristretto's, whose
    switch only acts while training) is that format at test time."""
    from common.quant.fixed import Fixed

    if q is None:
        return None
    return "fixed" if isinstance(q, Fixed) else getattr(q, "registered_name", type(q).__name__)


def _activation_kind(m: nn.Module) -> tuple[str, float] | None:
    """('sign', H) for a binary activation, ('identity', 0) for a quantizer that is nothing at test time, None if
    ``m`` is not a quantizer."""
    from common.quant.base import Quantizer

    if not isinstance(m, Quantizer):
        return None
    name = _quantizer_name(m)
    if name == "sign" or (name == "sign_stochastic" and m.eval_mode == "sign"):
        return "sign", float(m.H)
    if name == "float" or (name == "sign_stochastic" and m.eval_mode == "real"):
        return "identity", 0.0
    if name in LEVELS:
        return "levels", 0.0
    raise UserError(f"engine export: activation quantizer {name!r} is not supported by the engine yet")


def _levels_spec(q, where: str) -> dict:
    """A multi-bit activation quantizer (QNN's LinearQuant, DoReFa's activations) as the engine runs it: its name and
    constructor arguments; only its deterministic test-time form (nearest rounding, no per-tensor scaling)."""
    params = [p for p in inspect.signature(type(q).__init__).parameters if p != "self"]
    spec = {"name": _quantizer_name(q), **{p: getattr(q, p) for p in params}}
    check_levels(spec, f"engine export: {where}")
    return spec


def check_levels(spec, where: str) -> dict:
    """The one check of a multi-bit activation quantizer's spec, at export and when the engine reads a file: one of
    ``LEVELS``, its arguments valid as a config's, and its deterministic test-time form (nearest rounding, no
    per-tensor scaling), whose outputs are on the grid ``level_grid`` gives. Returns the checked spec."""
    from common.quant import check_quantizer_spec

    if not isinstance(spec, dict) or spec.get("name") not in LEVELS:
        raise UserError(f"{where}: quantizer {spec!r} is not one the engine runs ({', '.join(LEVELS)})")
    spec = check_quantizer_spec(dict(spec), f"{where}: quantizer")
    if spec.get("rounding", "nearest") != "nearest" or spec.get("scale", "none") != "none":
        raise UserError(f"{where}: {spec['name']} with stochastic rounding or per-tensor scaling is not supported by "
                        "the engine")
    return spec


class _Writer:
    def __init__(self):
        self.layers: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, op: dict, **arrays) -> dict:
        i = len(self.layers)
        op["arrays"] = {}
        for key, a in arrays.items():
            if a is None:
                continue
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().contiguous().numpy()
            name = f"{i}.{key}"
            self.arrays[name] = a
            op["arrays"][key] = name
        self.layers.append(op)
        return op


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float32)


def _passes_through(q, qname: str | None) -> bool:
    """Whether the quantizer leaves its tensor as it is at test time: none, float, stochastic sign tested with real
    values, dynamic fixed point not yet initialised."""
    return qname in (None, "float") or (qname == "sign_stochastic" and q.eval_mode == "real") \
        or (qname == "dynamic_fixed" and not bool(q.initialised))


def _pack_small_codes(spec: dict, arrays: dict, bits: int) -> None:
    """Integer codes of 4 bits or fewer packed 2 or 4 bits each (``packed: codes``, ``width``), not a byte each."""
    width = ops.code_width(bits)
    if width is not None:
        spec.update(packed="codes", width=width)
        arrays["weight"] = ops.pack_codes(torch.from_numpy(arrays["weight"]), width)


def _decompose_weight(name: str, m: nn.Module) -> tuple[dict, dict]:
    """The layer's weight as the simulated network uses it -> (spec, arrays), checked to reconstruct it exactly."""
    wq_mod = getattr(m, "weight_quantizer", None)
    qname = _quantizer_name(wq_mod)
    w = m.weight.detach()
    wq = m.quantized_weight().detach() if qname is not None else w
    o = wq.shape[0]
    flat = wq.reshape(o, -1)
    k = flat.shape[1]
    upd = getattr(m, "update_quantizer", None)
    if qname is None and _quantizer_name(upd) == "fixed":
        qname, wq_mod = "fixed", upd  # stored-value quantization: the weight itself is on the fixed grid
    if _passes_through(wq_mod, qname):
        spec, arrays, rec = {"kind": "float", "scale": "none"}, {"weight": _f32(wq)}, wq
    elif qname in ("sign", "sign_stochastic", "scaled_sign") or (qname == "dorefa_weight" and wq_mod.bits == 1):
        if qname in ("scaled_sign", "dorefa_weight"):  # (DoReFa's 1-bit weights: E|W| sign(W), one alpha a layer)
            per = getattr(wq_mod, "per", "layer")
            alpha = flat.abs().amax(1) if per == "filter" else flat.abs().amax().view(1)
            scale = "filter" if per == "filter" else "layer"
        else:
            H = float(wq_mod.H)
            alpha = torch.tensor([H], dtype=torch.float32)
            scale = "none" if H == 1.0 else "layer"
        bits = ~torch.signbit(flat)  # alpha * (+-1): the sign bit is the binary value (also for alpha = 0)
        pm = ops.pm1(bits, flat.dtype)
        rec = (pm * alpha.view(-1, 1) if scale != "none" else pm).view_as(wq)
        spec = {"kind": "binary", "scale": scale}
        arrays = {"weight": ops.pack_bits(bits.reshape(-1)), "alpha": alpha.float() if scale != "none" else None}
    elif qname == "ternary":
        per = wq_mod.per
        alpha = flat.abs().amax(1) if per == "filter" else flat.abs().amax().view(1)
        t = torch.sign(flat).to(torch.int8)
        plus, minus = ops.pack_ternary(t.reshape(-1))
        rec = (t.to(flat.dtype) * alpha.view(-1, 1)).view_as(wq)
        spec = {"kind": "ternary", "scale": "filter" if per == "filter" else "layer"}
        arrays = {"plus": plus, "minus": minus, "alpha": alpha.float()}
    elif qname in ("fixed", "dynamic_fixed"):
        wl, fl = int(wq_mod.wl), int(wq_mod.fl) if qname == "fixed" else int(wq_mod.fl())
        q = wq.double() * 2.0**fl
        dtype = np.int8 if wl <= 8 else np.int16 if wl <= 16 else np.int32
        info = np.iinfo(dtype)
        if not bool((q == q.round()).all()) or q.min() < info.min or q.max() > info.max:
            raise UserError(f"engine export: {name}: weights are not on the fixed-point grid <wl={wl}, fl={fl}>")
        qi = q.round().to(torch.int64).numpy().astype(dtype)
        rec = (torch.from_numpy(qi.astype(np.float64)) * 2.0**-fl).to(wq.dtype)
        spec, arrays = {"kind": "fixed", "scale": "none", "wl": wl, "fl": fl}, {"weight": qi}
        _pack_small_codes(spec, arrays, wl)
    elif qname == "uniform":  # Sung et al.: q * step, |q| <= 2^(bits-1) - 1, a float32 step (not a power of two)
        bits, step = int(wq_mod.bits), torch.tensor([wq_mod.step], dtype=torch.float32)
        q = (wq / step).round()
        dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32
        qi = q.to(torch.int64).numpy().astype(dtype)
        rec = torch.from_numpy(qi).to(wq.dtype) * step
        spec, arrays = {"kind": "uniform", "scale": "none", "bits": bits}, {"weight": qi, "step": step}
        _pack_small_codes(spec, arrays, bits)
    else:
        raise UserError(f"engine export: {name}: weight quantizer {qname!r} is not supported by the engine yet")
    if not torch.equal(rec, wq):
        raise UserError(f"engine export: {name}: the {qname} weights do not decompose exactly into the packed form")
    spec["fan_in"] = k
    return spec, arrays


def _input_spec(name: str, m: nn.Module, state: dict) -> dict:
    """How the layer sees its input: real, bits (already binary), sign (its own binary input quantizer), fixed."""
    q = getattr(m, "input_quantizer", None)
    qname = _quantizer_name(q)
    if _passes_through(q, qname):
        return dict(state)
    if qname in ("sign", "sign_stochastic"):
        return {"kind": "sign", "H": float(q.H)}
    if qname in LEVELS:
        return {"kind": "quantized", "quantizer": _levels_spec(q, name)}
    if qname in ("fixed", "dynamic_fixed"):
        if state["kind"] != "real":
            raise UserError(f"engine export: {name}: a fixed-point input quantizer on binary activations")
        if qname == "dynamic_fixed":  # at test time: the static format of its current integer length
            return {"kind": "fixed", "wl": int(q.wl), "fl": int(q.fl()), "rounding": q.rounding, "span": "symmetric"}
        return {"kind": "fixed", "wl": int(q.wl), "fl": int(q.fl), "rounding": q.rounding, "span": q.span}
    raise UserError(f"engine export: {name}: input quantizer {qname!r} is not supported by the engine yet")


def _layer(name: str, m: nn.Module, state: dict) -> tuple[dict, dict]:
    conv = isinstance(m, nn.Conv2d)
    if conv:
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str) \
                or any(p > k for p, k in zip(m.padding, m.kernel_size)):
            raise UserError(f"engine export: {name}: only groups=1, dilation=1 convolutions with numeric zero padding "
                            "of at most the kernel")
        spec = {"op": "conv", "in_ch": m.in_channels, "out_ch": m.out_channels, "kernel": list(m.kernel_size),
                "stride": list(m.stride), "padding": list(m.padding)}
    else:
        spec = {"op": "linear", "in_ch": m.in_features, "out_ch": m.out_features}
    wspec, arrays = _decompose_weight(name, m)
    spec.update(name=name, covers=[name], input=_input_spec(name, m, state), weight=wspec,
                bias=m.bias is not None, act_scale=bool(getattr(m, "act_scale", False)),
                bias_inside=not hasattr(m, "act_scale"), output="real", weight_shape=list(m.weight.shape))
    arrays["bias"] = _f32(m.bias)
    return spec, arrays


def binary_path(spec: dict) -> bool:
    """Binary input (bits, or its own sign) and binary weights: the XNOR / popcount product."""
    return spec["input"]["kind"] in ("bits", "sign") and spec["weight"]["kind"] == "binary"


def _pool_spec(m: nn.MaxPool2d) -> dict:
    return {"kernel": list(ops.pair(m.kernel_size)), "stride": list(ops.pair(m.stride)),
            "padding": list(ops.pair(m.padding)), "dilation": list(ops.pair(m.dilation)),
            "ceil_mode": bool(m.ceil_mode)}


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is not None


def build(net: nn.Module) -> Packed:
    """Walk the network (eval mode, no gradient) and build the packed form in memory."""
    mods = _modules(net)
    w = _Writer()
    state = {"kind": "real"}
    i = 0
    while i < len(mods):
        name, m = mods[i]
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            spec, arrays = _layer(name, m, state)
            j, bn = i + 1, None
            if binary_path(spec) and not spec["act_scale"]:
                scale = fold.int_scale(arrays.get("alpha"), spec["input"]["H"])  # (alpha: None when scale is none)
                pool = None
                if (spec["op"] == "conv" and j < len(mods) and isinstance(mods[j][1], nn.MaxPool2d)
                        and (scale is None or bool((scale >= 0).all()))):
                    pool, j = _pool_spec(mods[j][1]), j + 1  # (max commutes with k -> k * scale + bias)
                if j < len(mods) and _is_bn(mods[j][1]):
                    bn, j = mods[j][1], j + 1
                act = _activation_kind(mods[j][1]) if j < len(mods) else None
                if act is not None and act[0] == "sign":
                    T, d = fold.sign_thresholds(spec["weight"]["fan_in"], spec["out_ch"], scale, arrays["bias"], bn,
                                                spec["op"] == "conv", f"engine export: {name}")
                    spec.update(output="bits", out_H=act[1], covers=[n for n, _ in mods[i:j + 1]],
                                folded_bn=bn is not None)
                    if pool is not None:
                        spec["pool"] = pool
                    arrays.update(threshold=T, direction=d)
                    w.add(spec, **arrays)
                    state = {"kind": "bits", "H": act[1]}
                    i = j + 1
                    continue
            w.add(spec, **arrays)
            state = {"kind": "real"}
        elif _is_bn(m) and i + 1 < len(mods) and (_activation_kind(mods[i + 1][1]) or ("",))[0] == "sign":
            H = _activation_kind(mods[i + 1][1])[1]  # BN + sign of real values: float32 thresholds
            t, d = fold.float_sign_thresholds(m, isinstance(m, nn.BatchNorm2d), f"engine export: {name}")
            w.add({"op": "threshold", "name": name, "covers": [name, mods[i + 1][0]], "H": H}, threshold=t, direction=d)
            state = {"kind": "bits", "H": H}
            i += 1
        elif _is_bn(m):
            w.add({"op": "batchnorm", "name": name, "covers": [name], "eps": float(m.eps), "affine": m.affine},
                  mean=_f32(m.running_mean), var=_f32(m.running_var), weight=_f32(m.weight), bias=_f32(m.bias))
            state = {"kind": "real"}
        elif _activation_kind(m) is not None:
            kind, H = _activation_kind(m)
            if kind == "sign":
                w.add({"op": "sign", "name": name, "covers": [name], "H": H})
                state = {"kind": "bits", "H": H}
            elif kind == "levels":
                spec = _levels_spec(m, name)
                w.add({"op": "quantize", "name": name, "covers": [name], "quantizer": spec})
                state = {"kind": "levels", "quantizer": spec}  # (on its grid until the next real-valued op)
        elif isinstance(m, nn.MaxPool2d):
            w.add({"op": "maxpool", "name": name, "covers": [name], **_pool_spec(m)})
        elif isinstance(m, nn.Flatten):
            w.add({"op": "flatten", "name": name, "covers": [name], "start": m.start_dim, "end": m.end_dim})
        elif isinstance(m, nn.ReLU):
            w.add({"op": "relu", "name": name, "covers": [name]})
            state = {"kind": "real"}
        elif isinstance(m, nn.Hardtanh):
            w.add({"op": "hardtanh", "name": name, "covers": [name], "min": float(m.min_val), "max": float(m.max_val)})
            state = {"kind": "real"}
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            pass
        else:
            raise UserError(f"engine export: {name}: {type(m).__name__} is not supported by the engine yet")
        i += 1
    return Packed(layers=w.layers, arrays=w.arrays)


def export(model: nn.Module, path, meta: dict | None = None) -> int:
    """Write ``model`` (a ``Classifier`` or its network) as a packed file at ``path``; returns the file's size in
    bytes. ``meta`` (JSON-serialisable: the config name, ...) is stored in the header, with ``in_shape`` and
    ``num_classes`` when the model knows them and the float32 size of its state_dict."""
    net = getattr(model, "model", model)
    info = dict(meta or {})
    hp = getattr(model, "hparams", None)
    if hp is not None and "in_shape" in hp:
        info.setdefault("in_shape", list(hp["in_shape"]))
        info.setdefault("num_classes", int(hp["num_classes"]))
    info.setdefault("float32_bytes", float32_bytes(net))
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            packed = build(net)
    finally:
        for m, t in modes.items():
            m.train(t)
    packed.meta = info
    return write(packed, Path(path))


def model_from_checkpoint(ckpt_path) -> tuple[nn.Module, dict]:
    """Rebuild the ``Classifier`` of a checkpoint written by this suite (read as data only) with its weights;
    returns (module in eval mode, its config dict)."""
    from common.checkpoint import read_checkpoint
    from common.data import DATASETS
    from common.module import Classifier
    from common.papers import import_all

    ckpt = read_checkpoint(Path(ckpt_path), "checkpoint")
    cfg = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(cfg, dict):
        raise UserError(f"checkpoint {ckpt_path}: not a checkpoint of this suite's train command (no config)")
    import_all()  # (every paper's models and quantizers registered)
    data = DATASETS.get((cfg.get("data") or {}).get("name"))
    if data is None:
        raise UserError(f"checkpoint {ckpt_path}: unknown dataset in its config")
    module = Classifier(cfg, data.shape, data.num_classes)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {ckpt_path}: its weights do not fit its config's network "
                        f"({str(e).splitlines()[0]})") from None
    return module.eval(), cfg


def export_checkpoint(ckpt_path, out_path, meta: dict | None = None) -> ExportSizes:
    """Rebuild the network of a suite checkpoint and write its packed file; returns (packed bytes, float32 bytes
    of the state_dict)."""
    module, cfg = model_from_checkpoint(ckpt_path)
    info = {"checkpoint": str(ckpt_path), "description": cfg.get("description", ""), "data": cfg.get("data"),
            **(meta or {})}
    size = export(module, out_path, info)
    return ExportSizes(size, float32_bytes(module.model))
