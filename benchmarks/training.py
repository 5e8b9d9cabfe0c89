"""Speed benchmark: the training-step time of every paper's quantization over float, next to Brevitas; Lightning's
overhead over a plain PyTorch loop; the README's "Performance" section.

    .venv/bin/python ci/bench.py                  # everything (steps on MLP, LeNet-5, VGG-small; Lightning epochs)
    .venv/bin/python ci/bench.py --quick          # a fast check: fewer repeats, LeNet-5 and the MLP only (its JSON
                                                  # goes to results/bench/quick/, not over the reference numbers)
    .venv/bin/python ci/bench.py --readme         # only rewrite README's Performance section from results/bench/*.json

Steps (``results/bench/steps.json``). The networks are built through the suite's own path -- a method config of the
shared setting (``common/configs/mnist_lenet5.yaml`` with one paper's rules), ``Classifier`` and the conversion
pass -- with the config's network swapped for the benchmarked one (its ``act``, e.g. BNN's sign, is kept). A step
is what the trainer does per batch: forward, loss, backward, optimizer step, then the module's after-step pass
(latent clip, stored-value quantization). Batch 100 of fixed in-memory tensors, CPU, ``--threads`` threads.
Every variant (float included) runs ``--steps`` steps per block; the order of the blocks is shuffled in each of
``--repeats`` rounds after a warm-up, each round's time is divided by the float time of the same round, and the
median over rounds is reported (drift and background load cancel in the ratio).

Brevitas columns: the same network with Brevitas' nearest quantizers (``pip install -e .[bench]``), layer for
layer where the suite's rule quantizes; what Brevitas has no counterpart for (gradient quantizers, stored-value
quantizers) is left out and said in the row's note. Without Brevitas the columns say "not installed".

Lightning (``results/bench/lightning.json``): the second epoch (``--epoch-steps`` batches, the validation pass, the
epoch-end checkpoints and logs) of a CPU config trained with the suite's Trainer as ``common.training.train`` sets it up
(CSV logger, best and last checkpoints, epoch curve, no progress bar) against a plain loop over the same in-memory
data doing the same work (shuffled batches, forward, loss, backward, step, after-step pass, validation, the two
checkpoints written the same atomic way), alternated, median of ``--epoch-repeats``. The second epoch, so that
neither side's one-off setup is counted.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "results/bench"
README = ROOT / "README.md"
START, END = "<!-- PERFORMANCE:START -->", "<!-- PERFORMANCE:END -->"

# target of the step-time ratio by what a method quantizes (the issue: weight-only <= 1.15, W+A(+G) <= 1.30)
TARGETS = {"W": 1.15, "W+A": 1.30, "W+A+G": 1.30}


@dataclass(frozen=True)
class Network:
    title: str
    model: dict  # model spec without ``act`` (the method config's act is kept)
    in_shape: tuple[int, int, int]


NETWORKS = {
    "mlp": Network("MNIST MLP 784-1024x3-10 (BN)", {"name": "mlp", "widths": [1024, 1024, 1024], "batch_norm": True},
                   (1, 28, 28)),
    "lenet5": Network("MNIST LeNet-5 20-50-500 (BN)", {"name": "lenet5", "channels": [20, 50], "fc": [500],
                                                       "padding": 0, "batch_norm": True}, (1, 28, 28)),
    "vgg_small": Network("CIFAR-10 VGG-small 2x128C3-2x256C3-2x512C3-2x1024FC (BN)", {"name": "vgg_small"},
                         (3, 32, 32)),
}


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    config: str  # paper/config_name (a config of the shared setting)
    kind: str  # what is quantized: W, W+A or W+A+G (picks the target)


METHODS = [
    Method("float", "float", "float/mnist_lenet5", "-"),
    Method("bc", "binary W (BinaryConnect, sign)", "binaryconnect/mnist_lenet5_det", "W"),
    Method("twn", "ternary W (TWN)", "twn/mnist_lenet5", "W"),
    Method("bnn", "binary W+A (BNN, sign + htanh STE)", "bnn/mnist_lenet5", "W+A"),
    Method("dorefa", "DoReFa W1 A2 G4", "dorefa/mnist_lenet5_w1a2g4", "W+A+G"),
    Method("fixed16", "fixed <2,14> stochastic A+G+stored W (Gupta)", "gupta/mnist_lenet5_fl14_sr", "W+A+G"),
    Method("dfxp", "dynamic fixed 10/12 W+A+G (Courbariaux)", "lowprec/mnist_lenet5_dfxp", "W+A+G"),
]
# why a ratio stays above its target, where it does (shown under the README's table)
SPEED_NOTES = {
    "twn": "the step's two sums over |W| stay torch's own reductions, so that Delta and alpha keep every bit of the "
           "published TWN numbers; that leaves about 32 bytes of memory traffic per weight, which the 2.9 M-weight "
           "MLP feels (papers/twn/README.md, Speed)",
}
EXTRA_METHODS = [  # --extra: methods beyond the list, reported without a target
    Method("bc_stoch", "binary W stochastic (BinaryConnect)", "binaryconnect/mnist_lenet5_stoch", "W"),
    Method("xnor", "XNOR-Net W+A (scaled sign)", "xnor/mnist_lenet5_xnor", "W+A"),
]


# ---------------------------------------------------------------- building the variants

def method_config(method: Method, net: Network) -> dict:
    """The method's config (suite loader and validator) with the benchmarked network; its ``act`` is kept."""
    from common.config import load_config

    paper, name = method.config.split("/")
    _, cfg = load_config(name, ROOT / "papers" / paper / "configs")
    data = cfg.to_dict()
    act = data["model"].get("act", "relu")
    data["model"] = {**net.model, "act": act}
    return data


def suite_module(method: Method, net: Network):
    from common.module import Classifier

    return Classifier(method_config(method, net), net.in_shape, 10).train()


def make_step(module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step as the trainer runs it: forward, loss, backward, optimizer step, then
    ``Classifier.after_optimizer_step`` (max-norm where configured, the after-step pass)."""
    from common.quant import after_step

    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model, loss_fn = module.model, module.loss_fn

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        module.after_optimizer_step()

    settle_ranges(model, step)
    after_step(model)  # on_train_start: stored values start on their grid
    return step


def settle_ranges(model, step: Callable[[], None]) -> None:
    """Dynamic fixed point as after its range calibration (``quant.calibrate_epochs``): each integer length set from
    the first tensor its quantizer sees, values passing unquantized for two steps. Without it every gradient rounds
    to 0 at the configs' starting integer length, which is not what a calibrated run computes (and Adam's sqrt is
    several times slower on all-zero second moments)."""
    from common.quant.fixed import DynamicFixed

    qs = [m for m in model.modules() if isinstance(m, DynamicFixed)]
    if not qs:
        return
    for q in qs:
        q.initialised.fill_(False)
        q.calibrating = True
    step()
    step()
    for q in qs:
        q.calibrating = False


def brevitas_version() -> str | None:
    try:
        import brevitas
    except ImportError:
        return None
    return brevitas.__version__


def brevitas_module(method: Method, net: Network):
    """(model, note): the network with Brevitas' nearest quantizers where the suite's rules quantize, or
    (None, reason) where Brevitas has none of the method's quantizers."""
    import warnings

    from brevitas.core.function_wrapper import TensorClampSte
    from brevitas.inject.enum import FloatToIntImplType, RestrictValueType, ScalingImplType, StatsOp
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                                SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst,
                                SignedTernaryWeightPerTensorConst, Uint8ActPerTensorFloat)
    from torch import nn

    from common.models import build_model
    from common.quant import Quantizer, convertible_layers, select
    from common.quant.convert import take_parameters

    cfg = method_config(method, net)
    missing: set[str] = set()

    def weight_kw(spec: dict | None) -> dict:
        if spec is None:
            return {}
        n = spec["name"]
        if n == "sign":
            return dict(weight_quant=SignedBinaryWeightPerTensorConst, weight_scaling_const=spec.get("H", 1.0))
        if n == "dorefa_weight" and spec.get("bits", 1) == 1:  # E|W| sign(W): binary with a mean-|W| scale
            return dict(weight_quant=SignedBinaryWeightPerTensorConst, weight_scaling_impl_type=ScalingImplType.STATS,
                        weight_scaling_stats_op=StatsOp.AVE, weight_tensor_clamp_impl=TensorClampSte)
        if n == "ternary":  # per-tensor ternary with a statistics-driven scale (TWN: threshold and alpha from mean|W|)
            return dict(weight_quant=SignedTernaryWeightPerTensorConst, weight_scaling_impl_type=ScalingImplType.STATS,
                        weight_scaling_stats_op=StatsOp.AVE)
        if n == "fixed":
            return dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=spec["wl"],
                        weight_float_to_int_impl_type=FloatToIntImplType.STOCHASTIC_ROUND
                        if spec.get("rounding") == "stochastic" else FloatToIntImplType.ROUND)
        if n == "dynamic_fixed":  # power-of-two scale from the tensor's max: a per-tensor dynamic radix point
            return dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=spec["wl"])
        missing.add(f"W {n}")
        return {}

    def input_kw(spec: dict | None) -> dict:
        if spec is None:
            return {}
        n = spec["name"]
        if n == "dorefa_act":  # quantize_k(clip(x, 0, 1)): unsigned k bits, constant scale 1/(2^k - 1)
            return dict(input_quant=Uint8ActPerTensorFloat, input_bit_width=spec["bits"],
                        input_scaling_impl_type=ScalingImplType.CONST, input_max_val=1.0)
        if n == "fixed":
            top = 2.0 ** (spec["wl"] - 1 - spec["fl"])
            return dict(input_quant=Int8ActPerTensorFloat, input_bit_width=spec["wl"],
                        input_scaling_impl_type=ScalingImplType.CONST, input_max_val=top, input_min_val=-top,
                        input_restrict_scaling_type=RestrictValueType.POWER_OF_TWO,
                        input_float_to_int_impl_type=FloatToIntImplType.STOCHASTIC_ROUND
                        if spec.get("rounding") == "stochastic" else FloatToIntImplType.ROUND)
        if n == "dynamic_fixed":
            return dict(input_quant=Int8ActPerTensorFixedPoint, input_bit_width=spec["wl"])
        missing.add(f"A {n}")
        return {}

    torch.manual_seed(0)
    model = build_model(cfg["model"], net.in_shape, 10)
    names = convertible_layers(model)
    plan: dict[str, dict] = {}
    for rule in cfg["quant"]["rules"]:
        for n in select(rule.get("layers", "all"), names):
            plan[n] = rule
    for name, rule in plan.items():
        # Brevitas has no stored-value (update) quantizer: a weight quantizer at use is the same work per step
        kw = {**weight_kw(rule.get("weight") or rule.get("update")), **input_kw(rule.get("input"))}
        if rule.get("grad") is not None:
            missing.add("G")
        if rule.get("update") is not None:  # (no stored-value quantizer in Brevitas)
            missing.add("stored W" + (" (quantized at use instead)" if rule.get("weight") is None else ""))
        if not kw:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(old, nn.Linear):
                new = QuantLinear(old.in_features, old.out_features, old.bias is not None, **kw)
            else:
                new = QuantConv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                  padding=old.padding, dilation=old.dilation, groups=old.groups,
                                  bias=old.bias is not None, **kw)
        take_parameters(new, old, rule)
        setattr(parent, attr, new)
    for name, m in list(model.named_modules()):  # activation quantizers placed in the model (BNN's sign)
        if isinstance(m, Quantizer) and name:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if m.registered_name == "sign" and getattr(m, "H", 1.0) == 1.0:
                setattr(parent, attr, QuantIdentity(act_quant=SignedBinaryActPerTensorConst))
            else:
                missing.add(f"act {m.registered_name}")
    if method.key != "float" and not any(type(m).__module__.startswith("brevitas") for m in model.modules()):
        return None, "no equivalent"
    note = ("no " + ", ".join(sorted(missing))) if missing else ""
    return model.train(), note


def brevitas_step(model, module_like_cfg: dict, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The same step for a Brevitas network (same loss and optimizer as the suite's config)."""
    from common.module import LOSSES
    from common.optim import build_optimizer

    o = module_like_cfg["optim"]
    opt = build_optimizer(o["name"], [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}],
                          lr=o["lr_start"], momentum=o["momentum"], nesterov=o["nesterov"],
                          weight_decay=o["weight_decay"], eps=o["eps"])
    loss_fn = LOSSES[module_like_cfg["loss"]]

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


# ---------------------------------------------------------------- timing

def interleaved(steps: dict[str, Callable[[], None]], *, base: str, repeats: int, block: int, warmup: int,
                seed: int = 0, log: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
    """Median ms/step and median ratio to ``base`` (per round), over ``repeats`` rounds of shuffled blocks."""
    for name, step in steps.items():
        for _ in range(warmup):
            step()
    rng = random.Random(seed)
    times: dict[str, list[float]] = {n: [] for n in steps}
    order = list(steps)
    for r in range(repeats):
        rng.shuffle(order)
        for name in order:
            step = steps[name]
            t0 = time.perf_counter()
            for _ in range(block):
                step()
            times[name].append((time.perf_counter() - t0) / block)
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {1000 * times[n][-1]:.1f}" for n in steps))
    out = {}
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times[base])]
        out[name] = {"ms": 1000 * statistics.median(ts), "ratio": statistics.median(ratios),
                     "ratio_spread": [min(ratios), max(ratios)]}
    return out


def bench_steps(args, log) -> dict:
    nets = [n for n in args.nets.split(",") if n]
    methods = METHODS + (EXTRA_METHODS if args.extra else [])
    if args.methods:
        keep = set(args.methods.split(",")) | {"float"}
        methods = [m for m in methods if m.key in keep]
    brev = brevitas_version() if not args.no_brevitas else None
    rows = []
    for net_key in nets:
        net = NETWORKS[net_key]
        big = net_key == "vgg_small"
        repeats = args.repeats if not big else max(3, args.repeats // 2)
        block = args.steps if not big else max(1, args.steps // 10)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, *net.in_shape, generator=g)
        y = torch.randint(0, 10, (args.batch,), generator=g)
        steps: dict[str, Callable[[], None]] = {}
        notes: dict[str, str] = {}
        for m in methods:
            torch.manual_seed(0)
            steps[m.key] = make_step(suite_module(m, net), x, y)
            if brev:
                model, note = brevitas_module(m, net)
                notes[m.key] = note
                if model is not None and m.key != "float":
                    steps["brevitas:" + m.key] = brevitas_step(model, method_config(m, net), x, y)
        log(f"{net.title}: {len(steps)} variants, warm-up {args.warmup}, {repeats} rounds x {block} steps")
        res = interleaved(steps, base="float", repeats=repeats, block=block, warmup=args.warmup if not big else
                          min(args.warmup, 2), log=log)
        for m in methods:
            r = res[m.key]
            b = res.get("brevitas:" + m.key)
            target = TARGETS.get(m.kind)
            rows.append({
                "network": net_key, "method": m.key, "label": m.label, "config": m.config, "kind": m.kind,
                "ms": round(r["ms"], 3), "ratio": round(r["ratio"], 4),
                "ratio_spread": [round(v, 4) for v in r["ratio_spread"]],
                "target": target, "meets_target": None if target is None or m in EXTRA_METHODS else r["ratio"] <= target,
                "brevitas_ms": round(b["ms"], 3) if b else None, "brevitas_ratio": round(b["ratio"], 4) if b else None,
                "brevitas_note": (("skipped" if args.no_brevitas else "not installed") if not brev
                                  else notes.get(m.key, "")) if m.key != "float" else "",
                "ahead_of_brevitas": (r["ratio"] < b["ratio"]) if b else None,
            })
        del steps
        gc.collect()
    return {"benchmark": "train_step_ratio", "networks": {k: NETWORKS[k].title for k in nets}, "batch": args.batch,
            "rounds": args.repeats, "steps_per_round": args.steps, "warmup": args.warmup,
            "vgg_small_rounds_steps": [max(3, args.repeats // 2), max(1, args.steps // 10)],
            "brevitas": brev, "rows": rows, **environment(args)}


# ---------------------------------------------------------------- Lightning vs a plain loop

def _second_epoch_start():
    """A Trainer callback noting (as ``.t0``) when the second training epoch starts."""
    from lightning.pytorch.callbacks import Callback

    class SecondEpochStart(Callback):
        t0 = None

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                self.t0 = time.perf_counter()

    return SecondEpochStart()

def bench_lightning(args, log, trainer_extra: dict | None = None) -> dict:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    import common.training as training
    from common.config import load_config
    from common.data import ClassificationData, data_root
    from common.errors import UserError
    from common.module import Classifier, topk_errors

    trainer_extra = trainer_extra or {}
    rows = []
    for spec in args.lightning_configs.split(","):
        paper, name = spec.split("/")
        _, cfg = load_config(name, ROOT / "papers" / paper / "configs")
        roots = [data_root(args.data_dir)] + ([] if args.data_dir else [ROOT.parent / "shared/datasets"])  # (CI's)
        root = next((r for r in roots if (r / "MNIST/raw").is_dir() and any((r / "MNIST/raw").iterdir())), roots[0])
        data = ClassificationData(cfg.data, root)
        synthetic = False
        try:
            with _quiet():
                data.setup()
        except UserError as e:  # no dataset here: synthetic data of the same shape and size
            log(f"  {spec}: {e}; using synthetic data")
            cfg.data.name, cfg.data.shape, cfg.data.synthetic_size = "synthetic", list(data.shape), 50000
            data, synthetic = ClassificationData(cfg.data, Path(".")), True
            data.setup()
        nb = min(args.epoch_steps, len(data.train_dataloader()))
        nval = len(data.val_dataloader()) if cfg.data.val_size else 0

        def lightning_epoch(nb: int = nb) -> float:
            """The second epoch of a 2-epoch fit with the Trainer as common.training.train builds it (no progress bar,
            no wandb): its training batches, validation, checkpoints and logs (the run's setup is not timed)."""
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            module = Classifier(cfg.to_dict(), data.shape, data.num_classes)
            mark = _second_epoch_start()
            with tempfile.TemporaryDirectory() as d:
                with _quiet():
                    trainer = training.build_trainer(cfg, Path(d), [CSVLogger(d, name="csv", version="")], progress=False,
                                                checkpoint_every=training.CHECKPOINT_EVERY, max_epochs=2,
                                                limit_train_batches=nb)[0]
                    trainer.callbacks.append(mark)
                    trainer.fit(module, datamodule=data)
                    return time.perf_counter() - mark.t0

        def plain_epoch(nb: int = nb) -> float:
            """The same work in a plain loop, timed on its second epoch too: shuffled in-memory batches, forward,
            loss, the module's per-step metrics (top-1 error, epoch sums, the divergence check), backward, step,
            after-step pass; validation; the best and last checkpoints a run writes at an epoch's end."""
            from common.checkpoint import AtomicCheckpointIO
            from common.quant import after_step

            L.seed_everything(cfg.seed, workers=True, verbose=False)
            module = Classifier(cfg.to_dict(), data.shape, data.num_classes)
            torch.use_deterministic_algorithms(cfg.trainer.deterministic)  # as the Trainer sets it
            opt = module.configure_optimizers()
            opt = opt["optimizer"] if isinstance(opt, dict) else opt
            model, loss_fn = module.model, module.loss_fn
            after_step(model)
            writer, best = AtomicCheckpointIO(), math.inf
            with tempfile.TemporaryDirectory() as d:
                for epoch in range(2):
                    t0 = time.perf_counter()
                    model.train()
                    sums = [torch.zeros(()), torch.zeros(()), 0]
                    for i, (x, y) in enumerate(data.train_dataloader()):
                        if i == nb:
                            break
                        out = model(x)
                        loss = loss_fn(out, y)
                        err = topk_errors(out.detach(), y, (1,))[1]
                        sums = [sums[0] + loss.detach() * len(y), sums[1] + err * len(y), sums[2] + len(y)]
                        if not bool(torch.isfinite(loss.detach())):
                            raise RuntimeError("diverged")
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        module.after_optimizer_step()
                    model.eval()
                    val = [torch.zeros(()), torch.zeros(()), 0]
                    with torch.no_grad():
                        for x, y in (data.val_dataloader() if nval else []):
                            out = model(x)
                            val = [val[0] + loss_fn(out, y) * len(y), val[1] + topk_errors(out, y, (1,))[1] * len(y),
                                   val[2] + len(y)]
                    err = float(val[1] / max(val[2], 1))
                    float(sums[0] / max(sums[2], 1))
                    state = {"epoch": epoch, "state_dict": module.state_dict(), "optimizer_states": [opt.state_dict()]}
                    for name in ("best.ckpt", "last.ckpt") if err < best else ("last.ckpt",):  # as the Trainer's
                        writer.save_checkpoint(state, Path(d) / name)
                    best = min(best, err)
            return time.perf_counter() - t0

        log(f"{spec}: {nb} training batches + {nval} validation batches per epoch, {args.epoch_repeats} rounds"
            + (" (synthetic data)" if synthetic else ""))
        lightning_epoch(min(nb, 10)), plain_epoch(min(nb, 10))  # warm-up
        lt, pt = [], []
        for r in range(args.epoch_repeats):
            pair = ((lightning_epoch, lt), (plain_epoch, pt))
            for f, ts in (pair if r % 2 == 0 else pair[::-1]):
                ts.append(f())
            log(f"  round {r + 1}: lightning {lt[-1]:.2f} s, plain {pt[-1]:.2f} s")
        ratios = [a / b for a, b in zip(lt, pt)]
        rows.append({"config": spec, "train_batches": nb, "val_batches": nval, "synthetic_data": synthetic,
                     "lightning_s": round(statistics.median(lt), 3), "plain_s": round(statistics.median(pt), 3),
                     "ratio": round(statistics.median(ratios), 4),
                     "ratio_spread": [round(min(ratios), 4), round(max(ratios), 4)],
                     "meets_target": statistics.median(ratios) <= 1.05})
    return {"benchmark": "lightning_epoch_overhead", "target": 1.05, "rounds": args.epoch_repeats, "rows": rows,
            **environment(args)}


@contextlib.contextmanager
def _quiet():
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric",
                                              "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def environment(args) -> dict:
    """What a result file records of its machine and software (``common.results.environment``), and the bench's own."""
    import os

    from common.results import environment as run_environment

    return {**run_environment("cpu"), "cores": os.cpu_count(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "quick": bool(args.quick), **({"note": args.note} if getattr(args, "note", None) else {})}


# ---------------------------------------------------------------- report

def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def steps_table(res: dict, markdown: bool = False) -> list[str]:
    lines = []
    head = ["network", "method", "quantized", "ms/step", "ratio", "target", "Brevitas ratio", "note"]
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(f"{'network':10s} {'method':44s} {'quant':6s} {'ms/step':>8s} {'ratio':>6s} {'target':>6s} "
                     f"{'ok':>3s} {'Brevitas':>8s}  note")
    for r in res["rows"]:
        ok = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        brev = r["brevitas_ratio"]
        btxt = _fmt_ratio(brev) if brev is not None else ("-" if r["method"] == "float" else r["brevitas_note"] or "-")
        note = r["brevitas_note"] if brev is not None else ""
        if brev is not None and r["ahead_of_brevitas"] is False:
            note = ("BEHIND Brevitas; " + note).strip("; ")
        target = "-" if r["target"] is None else f"<= {r['target']:.2f}"
        if markdown:
            ratio = f"**{r['ratio']:.2f}**" if r["meets_target"] is False else f"{r['ratio']:.2f}"
            lines.append(f"| {r['network']} | {r['label']} | {r['kind']} | {r['ms']:.1f} | {ratio} | {target} | "
                         f"{btxt} | {note} |")
        else:
            lines.append(f"{r['network']:10s} {r['label']:44s} {r['kind']:6s} {r['ms']:8.2f} {r['ratio']:6.3f} "
                         f"{'' if r['target'] is None else r['target']:>6} {ok:>3s} {btxt:>8s}  {note}")
    return lines


def lightning_table(res: dict, markdown: bool = False) -> list[str]:
    lines = []
    if markdown:
        lines += ["| config | batches (train + val) | Lightning s/epoch | plain loop s/epoch | ratio |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        if markdown:
            lines.append(f"| {r['config']} | {r['train_batches']} + {r['val_batches']} | {r['lightning_s']:.2f} | "
                         f"{r['plain_s']:.2f} | {r['ratio']:.3f} |")
        else:
            lines.append(f"{r['config']:36s} {r['train_batches']:4d}+{r['val_batches']:<4d} lightning {r['lightning_s']:7.2f} s "
                         f"plain {r['plain_s']:7.2f} s  ratio {r['ratio']:.3f} (target <= 1.05: "
                         f"{'yes' if r['meets_target'] else 'NO'})")
    return lines


def steps_pivot(res: dict) -> list[str]:
    """Markdown: one row per method, the ratio on each network, then Brevitas' on each network."""
    nets = list(res["networks"])
    short = {"mlp": "MLP", "lenet5": "LeNet-5", "vgg_small": "VGG-small"}
    by = {(r["method"], r["network"]): r for r in res["rows"]}
    methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
    head = ["method", "quantized", "target"] + [short.get(n, n) for n in nets] + [f"Brevitas {short.get(n, n)}" for n in nets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, str] = {}
    for m in methods:
        rows = [by.get((m, n)) for n in nets]
        first = next(r for r in rows if r)
        if m == "float":
            ms = ", ".join(f"{short.get(n, n)} {r['ms']:.1f} ms" for n, r in zip(nets, rows) if r)
            lines.append(f"| float (step time: {ms}) | - | - | " + " | ".join("1.00" for _ in nets) + " | "
                         + " | ".join("-" for _ in nets) + " |")
            continue
        cells = []
        for r in rows:
            if r is None:
                cells.append("")
            else:
                cells.append(f"**{r['ratio']:.2f}**" if r["meets_target"] is False else f"{r['ratio']:.2f}")
        bcells = []
        for r in rows:
            if r is None:
                bcells.append("")
            elif r["brevitas_ratio"] is None:
                bcells.append(r["brevitas_note"] or "-")
            else:
                bcells.append(f"{r['brevitas_ratio']:.2f}" + (" (faster)" if r["ahead_of_brevitas"] is False else ""))
                if r["brevitas_note"]:
                    notes[first["label"]] = r["brevitas_note"]
        target = "-" if first["target"] is None else f"<= {first['target']:.2f}"
        lines.append(f"| {first['label']} | {first['kind']} | {target} | " + " | ".join(cells) + " | "
                     + " | ".join(bcells) + " |")
    lines += ["", "Ratio = step time / float step time on the same network (bold: above its target; \"(faster)\": Brevitas "
                  "ahead of the suite). Brevitas columns: its nearest quantizers on the same layers"
              + ("; what it has no counterpart for is left out of its step: "
                 + "; ".join(f"{k}: {v}" for k, v in notes.items()) if notes else "") + "."]
    slow = [m for m in methods if any(r["method"] == m and r["meets_target"] is False for r in res["rows"])]
    if slow:
        lines += ["", "Above target: " + "; ".join(f"{by_key(m).label}: {SPEED_NOTES.get(m, 'not yet explained')}"
                                                  for m in slow) + "."]
    return lines


def by_key(key: str) -> Method:
    return next(m for m in METHODS + EXTRA_METHODS if m.key == key)


def readme_section(out_dir: Path = OUT_DIR) -> str:
    steps = _load(out_dir / "steps.json")
    light = _load(out_dir / "lightning.json")
    env = steps or light
    lines = [START, "## Performance", "",
             "`python ci/bench.py` (about 15 minutes on 2 cores; `--quick` for a fast check) measures the training "
             "step of every paper's quantization against float on the same network -- forward, backward, optimizer "
             "step and the after-step pass (latent clip, stored-value quantization), batch 100, CPU, median over "
             "interleaved rounds after a warm-up -- next to Brevitas (`pip install -e .[bench]`), and Lightning's "
             "epoch against a plain PyTorch loop. It writes `results/bench/steps.json` and `results/bench/lightning.json` "
             "and regenerates this section (`python ci/bench.py --readme` regenerates it from those files alone). "
             "Targets: weight-only <= 1.15, with activations or gradients <= 1.30, Lightning <= 1.05.", "",
             "On contiguous float32 CPU tensors the hot quantizers (fixed-point rounding, nearest and stochastic; "
             "dynamic fixed point's overflow counts with its rounding; TWN's threshold and scale; the scaled sign; "
             "the uniform draws of every stochastic quantizer) run as fused C++ kernels, `common/quant/kernels.cpp`, "
             "compiled on first use (a C++ compiler and ninja; about 20 s once per machine). Each performs the "
             "same IEEE operations in the same order as the torch expression it replaces, and the stochastic ones "
             "draw exactly the numbers `torch.rand_like` draws, so results are bit-identical with or without them "
             "(`tests/test_kernels.py`; training runs compared weight for weight). `LOWBIT_KERNELS=0` turns them "
             "off; without a compiler they are off with one warning; `python ci/bench.py --no-kernels` times the "
             "torch path."]
    if env:
        lines += ["", f"Last run: {env['cpu']}, {env['cores']} cores, torch threads: {env['threads']}; torch {env['torch']}, "
                      f"Lightning {env['lightning']}, Python {env['python']}"
                      + (f", Brevitas {steps['brevitas']}" if steps and steps.get("brevitas") else
                         ", Brevitas not installed" if steps else "")
                      + f"; {env['date']}" + (" (`--quick`)" if env.get("quick") else "") + "."
                      + (f" Note: {env['note']}" if env.get("note") else "")]
    if steps:
        lines += ["", *steps_pivot(steps)]
    if light:
        lines += ["", "Lightning: the second epoch of a run with the suite's Trainer (as `train` sets it up, without a "
                      "progress bar or wandb) against a plain loop doing the same work on the same in-memory batches "
                      "(validation and the best and last checkpoints included).", "",
                  *lightning_table(light, markdown=True)]
    if not env:
        lines += ["", "No benchmark results yet: run `python ci/bench.py`."]
    lines.append(END)
    return "\n".join(lines)


def write_readme(path: Path = README, out_dir: Path = OUT_DIR) -> None:
    """Replace the text between the markers (or, the first time, the old "## Performance" section; else append)."""
    text = path.read_text()
    section = readme_section(out_dir)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    elif "\n## Performance\n" in text:
        head, rest = text.split("\n## Performance\n", 1)
        nxt = rest.find("\n## ")
        text = head + "\n" + section + ("\n" + rest[nxt:] if nxt >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, LeNet-5 and the MLP only, short epochs")
    ap.add_argument("--readme", action="store_true", help="only rewrite README's Performance section")
    ap.add_argument("--only", choices=["steps", "lightning"], help="run one part (default: both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", default=None, help=f"comma-separated, of {', '.join(NETWORKS)} (default: all)")
    ap.add_argument("--methods", default=None, help=f"comma-separated keys of {', '.join(m.key for m in METHODS + EXTRA_METHODS)}")
    ap.add_argument("--extra", action="store_true", help="also the methods beyond the issue's list (no target)")
    ap.add_argument("--no-brevitas", action="store_true")
    ap.add_argument("--no-kernels", action="store_true", help="time the suite's torch path (LOWBIT_KERNELS=0): the "
                    "fused CPU kernels off")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 15, quick 3; VGG-small half, >= 3)")
    ap.add_argument("--steps", type=int, default=None, help="steps per block (default 10, quick 3; VGG-small /10)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per variant (default 5, quick 2)")
    ap.add_argument("--lightning-configs", default="float/mnist_lenet5,binaryconnect/mnist_cpu_det")
    ap.add_argument("--epoch-steps", type=int, default=None, help="training batches per epoch (default all, quick 100)")
    ap.add_argument("--epoch-repeats", type=int, default=None, help="(default 5, quick 2)")
    ap.add_argument("--note", default=None, help="a remark stored with the results and shown in the README "
                    "(e.g. about the machine's load)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out-dir", default=None, help="where the JSON files go (default: results/bench; "
                    "results/bench/quick or results/bench/no_kernels for those runs, which never replace the reference "
                    "numbers)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README's Performance section (a full run "
                    "of both parts rewrites it; --quick and --only never do)")
    args = ap.parse_args(argv)
    out_dir = (Path(args.out_dir) if args.out_dir else OUT_DIR / "quick" if args.quick
               else OUT_DIR / "no_kernels" if args.no_kernels else OUT_DIR)
    if args.readme:
        write_readme(README, out_dir)
        print(f"written: {README} (Performance section)")
        return 0
    q = args.quick
    args.nets = args.nets or ("mlp,lenet5" if q else ",".join(NETWORKS))
    args.repeats = args.repeats or (3 if q else 15)
    args.steps = args.steps or (3 if q else 10)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 5)
    args.epoch_steps = args.epoch_steps or (100 if q else 10 ** 9)
    args.epoch_repeats = args.epoch_repeats or (2 if q else 5)
    from common.training import process_settings

    torch.set_num_threads(args.threads)
    process_settings()  # as training runs

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    if args.no_kernels:
        from common.quant import kernels

        with kernels.disabled():
            return _run(args, out_dir, log)
    return _run(args, out_dir, log)


def _run(args, out_dir: Path, log) -> int:
    if args.only in (None, "steps"):
        res = bench_steps(args, log)
        (out_dir / "steps.json").write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nTraining step / float, batch {args.batch}, torch threads: {res['threads']}, {res['cpu']}, torch {res['torch']}, "
              f"Brevitas {res['brevitas'] or 'not installed'}")
        print("\n".join(steps_table(res)))
        print(f"written: {out_dir / 'steps.json'}")
    if args.only in (None, "lightning"):
        res = bench_lightning(args, log)
        (out_dir / "lightning.json").write_text(json.dumps(res, indent=2) + "\n")
        print("\nLightning epoch / plain loop epoch")
        print("\n".join(lightning_table(res)))
        print(f"written: {out_dir / 'lightning.json'}")
    if not (args.quick or args.no_readme or args.only or args.no_kernels) and out_dir.resolve() == OUT_DIR.resolve():
        write_readme(README, out_dir)
        print(f"written: {README} (Performance section)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
