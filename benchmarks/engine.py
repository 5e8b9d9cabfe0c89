"""How fast the engine's bit arithmetic is against float32 torch on this CPU, in one process, side by side.

    python -m benchmarks.engine [--quick] [--threads 1 2] [--out PATH] [--ghz 3.7] [--readme] [--sizes-only]

(a) GEMM level: the compiled binary GEMM (``engine.kernels``, XNOR + popcount on packed bits, int32 out) against
    ``torch.mm`` in float32 on the same M x N x K, at the im2col shapes of LeNet-5 (conv2, fc1; batch 100), VGG-small
    (the paper's 128-256-512-1024 widths, batch 100), AlexNet (conv2-5, fc6-7; batch 1 and 100) and 4096^3, on each
    thread count. Both write into a preallocated C (``out=``), as BLAS benchmarks time a GEMM: a fresh output of
    64 MiB (4096^2 int32) is mapped anew by the allocator on every call, and its page faults (~40 ms here) would
    be timed as the GEMM's.
(a2) Real inputs x ternary weights (BinaryConnect, BWN, TWN): one float GEMM with the {-1, 0, +1} weights against
    the two GEMMs of their 0/1 bit-planes (the sign-add form), so that the engine runs the faster one.
(b) The machine's ideal: peak binary MAC/s (1 binary MAC = 1 bit of XOR + popcount) from the vector popcount's
    throughput against peak float32 MAC/s from the FMA units' throughput, at the clock of /proc/cpuinfo (or --ghz);
    the assumptions are printed and written with the numbers.
(c) Whole networks: ``engine.Engine`` on the exported network against the simulated network itself (float32 torch,
    eval mode, no_grad) at batch 1 and 100: the shared settings' BNN, XNOR, BWN, BinaryConnect, TWN, dynamic fixed
    point and Gupta LeNet-5, BNN, XNOR, QNN and DoReFa VGG-small, and the 8-bit-or-fewer post-training networks
    (Ristretto 8/8/8, Qiu 8/4, SQNR W4/A4; their formats from the committed seed-1 results) with random weights
    and batch-norm statistics from a few random batches; with the share of the engine's time by kind of op and the
    share spent in the popcount GEMM itself.
(d) Sizes: the packed file of every method of the shared settings against its float32 state_dict (post-training
    methods with the per-layer formats of their committed seed-1 result), and per weight kind (binary, ternary,
    fixed, uniform) the packed weights and scales against float32 weights; the methods the engine does not cover
    yet are listed with the reason.

Timing: after a warm-up, ``repeats`` rounds, each timing the two sides one after the other (interleaved, so load
changes hit both), median per side; a speed-up is the median over rounds of the two sides' ratio in that round. ``--quick`` (< 60 s): fewer shapes and repeats. The targets (binary GEMM >= 25x
float at 4096^3 on 2 threads; whole-network inference >= 5x at batch 100) are printed next to the measurements with
the size of any miss and its likely reason.

The full run writes ``results/bench/engine.json`` (the file the leaderboard's efficiency claims are judged from) and
rewrites README's engine tables (between ``<!-- ENGINE:START -->`` and ``<!-- ENGINE:END -->``) from it, with the
table of trained networks from the records of ``python -m engine test --record`` under ``results/engine/``;
``--readme`` rewrites them from those files alone, timing nothing. ``--quick`` runs and other ``--out`` files leave
both alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TARGET_GEMM = 25.0  # binary GEMM vs float32 torch.mm at 4096^3, 2 threads
TARGET_NET = 5.0  # whole XNOR / BNN network inference at batch 100
TARGET_SIZE = 30.0  # packed binary layers against their float32 weights
README = ROOT / "README.md"
REFERENCE = ROOT / "results" / "bench" / "engine.json"  # the committed measurement, README's tables and verdicts
QUICK = ROOT / "results" / "bench" / "quick" / "engine.json"
RECORDS = ROOT / "results" / "engine"  # python -m engine test --record: trained networks, engine against simulation
START, END = "<!-- ENGINE:START -->", "<!-- ENGINE:END -->"


def gemm_shapes(quick: bool) -> list[tuple[str, int, int, int]]:
    """(name, M, N, K) of the binary layers' GEMMs: M = batch x output positions, N = output channels, K = fan-in."""
    b = 100
    s = [("LeNet-5 conv2 (b100)", b * 64, 50, 500), ("LeNet-5 fc1 (b100)", b, 500, 800)]
    vgg = [("VGG-small conv2 (b100)", b * 1024, 128, 1152), ("VGG-small conv3 (b100)", b * 256, 256, 1152),
           ("VGG-small conv4 (b100)", b * 256, 256, 2304), ("VGG-small conv5 (b100)", b * 64, 512, 2304),
           ("VGG-small conv6 (b100)", b * 64, 512, 4608), ("VGG-small fc1 (b100)", b, 1024, 8192),
           ("VGG-small fc2 (b100)", b, 1024, 1024)]
    alex = []
    for bb in (1, 100):
        alex += [(f"AlexNet conv2 (b{bb})", bb * 729, 256, 2400), (f"AlexNet conv3 (b{bb})", bb * 169, 384, 2304),
                 (f"AlexNet conv4 (b{bb})", bb * 169, 384, 3456), (f"AlexNet conv5 (b{bb})", bb * 169, 256, 3456),
                 (f"AlexNet fc6 (b{bb})", bb, 4096, 9216), (f"AlexNet fc7 (b{bb})", bb, 4096, 4096)]
    if quick:
        keep = {"VGG-small conv4 (b100)", "VGG-small fc1 (b100)", "AlexNet conv3 (b1)", "AlexNet fc6 (b1)",
                "AlexNet fc6 (b100)"}
        return s + [x for x in vgg + alex if x[0] in keep] + [("square 4096^3", 4096, 4096, 4096)]
    return s + vgg + alex + [("square 4096^3", 4096, 4096, 4096)]


def side_by_side(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds after ``warmup`` rounds; with two functions, also
    ``"ratio"``: the median over rounds of the second's time over the first's, each round's pair timed back to back,
    so that a slow spell of the machine (it shares its host) slows both sides of a round and cancels."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    out = {k: statistics.median(v) for k, v in times.items()}
    if len(fns) == 2:
        first, second = times.values()
        out["ratio"] = statistics.median(b / a for a, b in zip(first, second))
    return out


# ------------------------------------------------------------------------------------------------ (b) the ideal

def cpu_info() -> dict:
    info = {"model": platform.processor(), "mhz": None, "vendor": ""}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for key, field in (("model name", "model"), ("vendor_id", "vendor")):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m:
            info[field] = m.group(1).strip()
    mhz = [float(x) for x in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    info["mhz"] = max(mhz) if mhz else None
    return info


def ideal(ghz: float | None, isa: str) -> dict:
    """Peak binary MAC/s and float32 MAC/s per core from instruction throughput, with the assumptions."""
    cpu = cpu_info()
    clock = ghz or ((cpu["mhz"] or 0) / 1000) or None
    amd = "AMD" in cpu["vendor"] or "AMD" in cpu["model"]
    if isa == "avx512_vpopcntdq" and amd:
        a = {"cpu": "AMD Zen 4 (AVX-512 executed as 2 x 256-bit)",
             "popcount": "VPOPCNTQ zmm: 1 per cycle (2 x 256-bit uops on the two popcount-capable pipes) = 512 "
                         "binary MAC/cycle/core",
             "issue": "each 512-bit word pair also needs a VPXORQ and a VPADDQ: 3 zmm ops = 6 x 256-bit uops on 4 "
                      "vector pipes = 1.5 cycles per 512 bits = 341 binary MAC/cycle/core",
             "fma": "2 x 256-bit FMA pipes: 2 x 8 = 16 float32 MAC/cycle/core (32 FLOP)"}
        bin_pc, issue_pc, fma_pc = 512.0, 512.0 * 4 / 6, 16.0
    elif isa == "avx512_vpopcntdq":
        a = {"cpu": "Intel AVX-512 VPOPCNTDQ (Ice Lake / Sapphire Rapids server)",
             "popcount": "VPOPCNTQ zmm: 1 per cycle (port 5) = 512 binary MAC/cycle/core",
             "issue": "XOR + POPCNT + ADD = 3 zmm ops on 2 512-bit pipes (p0, p5): 1.5 cycles per 512 bits = 341",
             "fma": "2 x 512-bit FMA units: 32 float32 MAC/cycle/core (1-FMA parts: 16)"}
        bin_pc, issue_pc, fma_pc = 512.0, 512.0 / 1.5, 32.0
    elif isa == "avx2":
        a = {"cpu": "AVX2 (no vector popcount)",
             "popcount": "nibble-LUT popcount: XOR, 2 AND, shift, 2 VPSHUFB, 2 ADD per 256 bits (~8 uops on 3-4 "
                         "pipes: ~2.5 cycles per 256 bits = ~100 binary MAC/cycle/core)",
             "issue": "as above",
             "fma": "2 x 256-bit FMA: 16 float32 MAC/cycle/core"}
        bin_pc, issue_pc, fma_pc = 100.0, 100.0, 16.0
    else:
        a = {"cpu": "scalar", "popcount": "POPCNT r64: 1 per cycle = 64 binary MAC/cycle/core (plus XOR, ADD)",
             "issue": "~3 scalar ops per 64 bits on 4 ALUs: ~48 binary MAC/cycle/core",
             "fma": "2 x 256-bit FMA: 16 float32 MAC/cycle/core"}
        bin_pc, issue_pc, fma_pc = 64.0, 48.0, 16.0
    a["clock"] = (f"{clock:.3f} GHz ({'--ghz' if ghz else '/proc/cpuinfo cpu MHz, the current clock: boost may be higher'})"
                  if clock else "unknown (pass --ghz)")
    a["binary MAC"] = "1 bit of XOR + popcount (the +-1 product and its share of the sum)"
    out = {"assumptions": a, "ghz": clock, "binary_mac_per_cycle_core": bin_pc,
           "binary_mac_per_cycle_core_issue_bound": issue_pc, "float32_mac_per_cycle_core": fma_pc,
           "ideal_speedup_popcount_bound": bin_pc / fma_pc, "ideal_speedup_issue_bound": issue_pc / fma_pc}
    if clock:
        out["peak_binary_gmac_s_core"] = bin_pc * clock
        out["peak_binary_gmac_s_core_issue_bound"] = issue_pc * clock
        out["peak_float32_gmac_s_core"] = fma_pc * clock
    return out


# ------------------------------------------------------------------------------------------------ (a) GEMMs

def bench_gemms(shapes, threads: list[int], repeats: int, big_repeats: int) -> list[dict]:
    from engine import kernels, ops

    rows = []
    g = torch.Generator().manual_seed(0)
    for name, m, n, k in shapes:
        nb = -(-k // 64) * 8
        a = torch.randint(0, 256, (m, nb), dtype=torch.uint8, generator=g)
        b = torch.randint(0, 256, (n, nb), dtype=torch.uint8, generator=g)
        if k % 64:  # the padding bits are 0 in both operands
            pm = ops.pack_bits(torch.ones(1, k, dtype=torch.bool)).view(-1)
            a &= pm
            b &= pm
        xf = torch.randn(m, k, generator=g)
        wf = torch.randn(n, k, generator=g)
        cb, cf = torch.empty(m, n, dtype=torch.int32), torch.empty(m, n)
        reps = big_repeats if m * n * k > 2e10 else repeats
        for t in threads:
            torch.set_num_threads(t)
            med = side_by_side({"binary": lambda: kernels.binary_gemm(a, b, k, out=cb),
                                "float": lambda: torch.mm(xf, wf.t(), out=cf)}, reps)
            macs = m * n * k
            rows.append({"layer": name, "M": m, "N": n, "K": k, "threads": t, "repeats": reps,
                         "binary_s": med["binary"], "float32_s": med["float"],
                         "speedup": med["ratio"],
                         "binary_gmac_s": macs / med["binary"] / 1e9, "float32_gmac_s": macs / med["float"] / 1e9})
            print(f"  {name:26s} {m:>7d} {n:>5d} {k:>5d}  {t}  {med['binary'] * 1e3:9.3f} {med['float'] * 1e3:10.3f}"
                  f"  {rows[-1]['speedup']:7.1f}x  {rows[-1]['binary_gmac_s']:8.0f} {rows[-1]['float32_gmac_s']:7.1f}",
                  flush=True)
        del a, b, xf, wf
    return rows


def bench_real_input(threads: list[int], repeats: int) -> list[dict]:
    """Real inputs x ternary weights, two ways: one float GEMM with the {-1, 0, +1} weights (alpha applied after the
    sum) against two GEMMs with the weights' 0/1 bit-planes (x P - x M: the sign-add form), at the shapes of LeNet-5
    conv2 and VGG-small conv4, batch 100. (Binary weights are the case without zeros: the same GEMMs.)"""
    rows = []
    g = torch.Generator().manual_seed(1)
    for name, m, n, k in (("LeNet-5 conv2 (b100)", 6400, 50, 500), ("VGG-small conv4 (b100)", 25600, 64, 576)):
        x = torch.randn(m, k, generator=g)
        t = torch.randint(-1, 2, (n, k), generator=g).to(torch.float32)
        plus, minus = (t > 0).float().t().contiguous(), (t < 0).float().t().contiguous()
        tt = t.t().contiguous()
        for th in threads:
            torch.set_num_threads(th)
            med = side_by_side({"one GEMM": lambda: x @ tt, "two bit-plane GEMMs": lambda: x @ plus - x @ minus},
                               repeats)
            rows.append({"layer": name, "M": m, "N": n, "K": k, "threads": th, "one_gemm_s": med["one GEMM"],
                         "two_planes_s": med["two bit-plane GEMMs"], "one_gemm_speedup": med["ratio"]})
            print(f"  {name:26s} {th}  one float GEMM {med['one GEMM'] * 1e3:8.3f} ms, two bit-plane GEMMs "
                  f"{med['two bit-plane GEMMs'] * 1e3:8.3f} ms: the float GEMM {med['ratio']:.2f}x faster", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ (c) networks

SETTINGS = {"mnist_lenet5": ("LeNet-5", (1, 28, 28)), "cifar10_vggsmall": ("VGG-small (1/4 width)", (3, 32, 32))}
# timed whole networks (every covered method's network is sized; these are also timed)
TIMED = ("bnn/mnist_lenet5", "xnor/mnist_lenet5_xnor", "xnor/mnist_lenet5_bwn", "binaryconnect/mnist_lenet5_det",
         "twn/mnist_lenet5", "lowprec/mnist_lenet5_dfxp", "gupta/mnist_lenet5_fl14_sr", "bnn/cifar10_vggsmall",
         "xnor/cifar10_vggsmall_xnor", "ristretto/mnist_lenet5_8_8_8", "ristretto/cifar10_vggsmall_8_8_8",
         "qiu/cifar10_vggsmall_dynamic_8_4", "sqnr/cifar10_vggsmall_w4a4", "qnn/cifar10_vggsmall_w1a2",
         "dorefa/cifar10_vggsmall_w1a2")


def sampled_net(config: dict, in_shape):
    """The config's ``Classifier`` with random weights (seed 0), stored values on their grid as training keeps them
    (Gupta's fixed-point weights), batch-norm statistics from 3 random batches, in eval mode."""
    from common.module import Classifier
    from common.quant import after_step

    torch.manual_seed(0)
    model = Classifier(config, in_shape, 10)
    after_step(model.model)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, *in_shape) * 2 - 1)
    return model.eval()


def build_net(paper: str, name: str, in_shape):
    from common.config import load_config
    from common.papers import configs_dir, package

    package(paper)
    return sampled_net(load_config(name, configs_dir(paper))[1].to_dict(), in_shape)


def shared_methods() -> list[tuple[str, str, str, tuple, bool]]:
    """(label, paper, config, input shape, is post-training) of every method config of the shared settings."""
    from common.config import list_configs, load_config
    from common.papers import ALL, configs_dir, package

    out = []
    for setting, (net, shape) in SETTINGS.items():
        for paper in ALL:
            package(paper)
            for name in list_configs(configs_dir(paper)):
                if name.startswith(setting):
                    post = load_config(name, configs_dir(paper))[1].ptq is not None
                    out.append((f"{paper}/{name}", paper, name, shape, post))
    return out


def layer_sizes(packed) -> dict:
    """Bytes of the packed weights (bits, scales) against their float32 size, by weight kind."""
    by: dict[str, dict] = {}
    for spec in packed.layers:
        if spec["op"] not in ("conv", "linear"):
            continue
        kind = spec["weight"]["kind"]
        roles = ("weight", "alpha", "plus", "minus", "step")
        stored = sum(packed.arrays[spec["arrays"][r]].nbytes for r in roles if spec.get("arrays", {}).get(r))
        f32 = 4 * spec["weight"]["fan_in"] * spec["out_ch"]
        d = by.setdefault(kind, {"layers": 0, "packed_bytes": 0, "float32_bytes": 0})
        d["layers"] += 1
        d["packed_bytes"] += stored
        d["float32_bytes"] += f32
    for d in by.values():
        d["ratio"] = d["float32_bytes"] / d["packed_bytes"]
    return by


def ptq_net(paper: str, name: str, in_shape):
    """A post-training method's network with the per-layer formats it chose, from its committed seed-1 result (the
    formats depend on the float network's weights; a packed file's size, only on the formats and the shapes), with
    random weights; None without that result."""
    from common.papers import package
    from common.results import read_result, result_path, stored_config

    package(paper)  # (its post-training method and quantizers registered)
    stored = (read_result(result_path(ROOT / "results", paper, name, 1)) or {}).get("config")
    return sampled_net(stored_config(stored).to_dict(), in_shape) if isinstance(stored, dict) else None


def bench_sizes() -> tuple[list[dict], list[dict]]:
    """The packed file of every shared-setting method the engine covers, against float32; and those it does not.
    Post-training methods: their network with the formats of their committed seed-1 result."""
    from common.errors import UserError
    from engine import export, load
    from engine.export import float32_bytes

    sizes, uncovered = [], []
    tmp = Path(tempfile.mkdtemp(prefix="engine_sizes_"))
    for label, paper, name, shape, post in shared_methods():
        model = ptq_net(paper, name, shape) if post else build_net(paper, name, shape)
        if model is None:
            uncovered.append({"config": label, "why": "no committed seed-1 result to take its formats from"})
            continue
        try:
            n = export(model, tmp / "m.lowbit")
        except UserError as e:
            uncovered.append({"config": label, "why": str(e).removeprefix("engine export: ")})
            continue
        f32 = float32_bytes(model.model)
        sizes.append({"config": label, "file_bytes": n, "float32_bytes": f32, "ratio": f32 / n,
                      "layers": layer_sizes(load(tmp / "m.lowbit"))})  # (the file written, read back: built once)
    return sizes, uncovered


# the share of time by kind of op: layers by the arithmetic the engine chose for them (``_Layer.path``), other ops
LAYER_LABELS = {"binary": "binary layers (pack + XNOR-popcount GEMM + thresholds)",
                "planes": "bit-plane popcount layers (k-bit activations)",
                "int8": "int8 fixed-point layers",
                "int_f64": "fixed-point layers in float64",
                "float": "float GEMM layers (real-valued inputs or weights)"}
OP_LABELS = {"maxpool": "pooling", "batchnorm": "batch norm", "sign": "sign",
             "threshold": "batch norm + sign (float thresholds)"}


def op_profile(eng, x: torch.Tensor, rounds: int = 3) -> dict[str, float]:
    """The share of the engine's time by kind of op (layers by arithmetic, pooling, batch norm, ...)."""
    spent: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(rounds):
            a = x
            for spec, fn in eng.ops:
                kind = LAYER_LABELS[fn.path] if spec["op"] in ("conv", "linear") else \
                    OP_LABELS.get(spec["op"], "other ops")
                t0 = time.perf_counter()
                a = fn(a)
                spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - t0
    total = sum(spent.values())
    return {k: v / total for k, v in spent.items()}


def bench_nets(threads: list[int], batches: list[int], repeats: int) -> list[dict]:
    from engine import Engine, export, ops

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="engine_bench_"))
    for label, paper, name, in_shape, post in [m for m in shared_methods() if m[0] in TIMED]:
        model = ptq_net(paper, name, in_shape) if post else build_net(paper, name, in_shape)
        if model is None:
            continue
        path = tmp / f"{paper}_{name}.lowbit"
        export(model, path)
        eng = Engine(path)
        sim = model.model
        for bsz in batches:
            x = torch.rand(bsz, *in_shape, generator=torch.Generator().manual_seed(bsz)) * 2 - 1
            with torch.no_grad():
                same = bool(torch.equal(eng(x).argmax(1), sim(x).argmax(1)))
            for t in threads:
                torch.set_num_threads(t)

                def run_sim():
                    with torch.no_grad():
                        sim(x)
                reps = repeats * (3 if bsz == 1 else 1)
                med = side_by_side({"engine": lambda: eng(x), "float": run_sim}, reps)
                # the binary GEMMs' share of the engine's time (one more run, the GEMM timed)
                spent = [0.0]
                inner = ops.binary_gemm

                def timed_gemm(*a, **kw):
                    t0 = time.perf_counter()
                    r = inner(*a, **kw)
                    spent[0] += time.perf_counter() - t0
                    return r
                ops.binary_gemm = timed_gemm
                try:
                    t0 = time.perf_counter()
                    eng(x)
                    total = time.perf_counter() - t0
                finally:
                    ops.binary_gemm = inner
                shares = op_profile(eng, x)
                rows.append({"network": label, "config": f"{paper}/{name}", "batch": bsz, "threads": t,
                             "repeats": reps, "engine_s": med["engine"], "float32_s": med["float"],
                             "speedup": med["ratio"], "gemm_share": spent[0] / total,
                             "time_shares": shares, "same_predictions": same})
                top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
                print(f"  {label:40s} b{bsz:<4d} {t}  {med['engine'] * 1e3:9.2f} {med['float'] * 1e3:10.2f}  "
                      f"{rows[-1]['speedup']:6.2f}x   {100 * rows[-1]['gemm_share']:5.1f}%  "
                      f"{'same' if same else 'DIFFERENT'}  ({top})", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ main

def keep_freed_memory() -> str:
    """Have glibc's allocator keep freed buffers for reuse (mmap and trim thresholds at 1 GiB), as a long-running
    server's allocator holds on to them: otherwise each buffer above its (adaptive) threshold is mapped anew on
    every call and its page faults are timed as the computation's, for both sides (e.g. ~40 ms for a 64 MiB GEMM
    output here, and a run-to-run spread of 2x on whole networks). Returns what was done, for the result file."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 1 << 30) == 1 and libc.mallopt(-1, 1 << 30) == 1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        ok = False
    return "glibc: freed memory kept (mmap and trim thresholds 1 GiB)" if ok else "default allocator settings"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats (< 60 s)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 2)")
    ap.add_argument("--out", default=None, help="result file (default: results/bench/engine.json; with --quick: "
                                                 "results/bench/quick/engine.json); README's tables are rewritten "
                                                 "only from the default, full run")
    ap.add_argument("--ghz", type=float, default=None, help="the clock for the ideal (default: /proc/cpuinfo)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement (default 7; quick 3)")
    ap.add_argument("--skip-nets", action="store_true", help="GEMMs and the ideal only")
    ap.add_argument("--readme", action="store_true", help="only rewrite README's engine tables from --out")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README's engine tables")
    ap.add_argument("--sizes-only", action="store_true",
                    help="re-measure only the packed sizes (exact byte counts: no quiet machine needed) and replace "
                         "them in an existing --out, keeping its timings")
    args = ap.parse_args(argv)
    args.out = args.out or str(QUICK if args.quick else REFERENCE)
    readme = not args.no_readme and Path(args.out).resolve() == REFERENCE.resolve()
    if args.readme:
        from common.results import read_result

        result = read_result(Path(args.out))
        if result is None:
            print(f"error: {args.out}: no benchmark result to write the README from", file=sys.stderr)
            return 2
        write_readme(result)
        print(f"written: {README} (the engine's tables)")
        return 0
    if args.sizes_only:
        return refresh_sizes(Path(args.out), readme=readme)

    from engine import kernels

    allocator = keep_freed_memory()
    if kernels.ext() is None:
        print("the engine's kernel is not built here (LOWBIT_KERNELS=0 or no compiler): nothing to measure")
        return 1
    threads = args.threads or [1, min(2, os.cpu_count() or 1)]
    threads = sorted(set(threads))
    repeats = args.repeats or (3 if args.quick else 7)
    big = max(2, repeats // 2) if args.quick else repeats
    saved = torch.get_num_threads()
    isa = kernels.isa()
    started = time.perf_counter()
    ide = ideal(args.ghz, isa)
    cpu = cpu_info()
    print(f"benchmarks.engine: {cpu['model']}, {os.cpu_count()} CPUs, kernel path {isa}, torch {torch.__version__}, "
          f"threads {threads}, repeats {repeats}{' (quick)' if args.quick else ''}")

    print("\n(a) binary GEMM (kernel, int32 out) vs torch.mm float32, same M x N x K; median ms")
    print(f"  {'layer':26s} {'M':>7s} {'N':>5s} {'K':>5s}  t  {'binary':>9s} {'float32':>10s}  {'ratio':>8s}  "
          f"{'Gbit-MAC/s':>8s} {'GMAC/s':>7s}")
    gemms = bench_gemms(gemm_shapes(args.quick), threads, repeats, big)
    print("\n(a2) real inputs x ternary weights: one float GEMM with {-1, 0, +1} against two bit-plane GEMMs")
    real_input = bench_real_input(threads, repeats)

    print("\n(b) the machine's ideal (assumptions):")
    for k, v in ide["assumptions"].items():
        print(f"  {k}: {v}")
    print(f"  ideal binary/float speed-up: {ide['ideal_speedup_popcount_bound']:.1f}x (popcount bound), "
          f"{ide['ideal_speedup_issue_bound']:.1f}x (XOR + POPCNT + ADD issue bound)")
    if ide.get("ghz"):
        print(f"  per core: binary {ide['peak_binary_gmac_s_core']:.0f} (issue bound "
              f"{ide['peak_binary_gmac_s_core_issue_bound']:.0f}) Gbit-MAC/s, float32 "
              f"{ide['peak_float32_gmac_s_core']:.1f} GMAC/s")
        for r in gemms:
            r["binary_of_peak"] = r["binary_gmac_s"] / (ide["peak_binary_gmac_s_core_issue_bound"] * r["threads"])
            r["float32_of_peak"] = r["float32_gmac_s"] / (ide["peak_float32_gmac_s_core"] * r["threads"])

    nets = []
    if not args.skip_nets:
        print("\n(c) whole network: engine vs the simulated network (float32 torch, eval, no_grad); median ms")
        print(f"  {'network':27s} {'batch':5s} t  {'engine':>9s} {'float32':>10s}  {'ratio':>7s}  GEMM share")
        nets = bench_nets(threads, [1, 100], repeats)
    torch.set_num_threads(saved)

    print("\n(d) sizes: the packed file of every shared-setting method against its float32 state_dict")
    sizes, uncovered = bench_sizes()
    for r in sizes:
        per = ", ".join(f"{k} layers {v['ratio']:.1f}x" for k, v in r["layers"].items() if k != "float")
        print(f"  {r['config']:40s} {r['file_bytes']:>9,d} B  {r['ratio']:5.1f}x smaller{'  (' + per + ')' if per else ''}")
    for r in uncovered:
        print(f"  {r['config']:40s} not covered: {r['why']}")

    print("\ntargets:")
    verdicts = []
    sq = [r for r in gemms if r["layer"].startswith("square") and r["threads"] == 2]
    if sq:
        r = sq[0]
        ok = r["speedup"] >= TARGET_GEMM
        why = "" if ok else (
            f"; short by {TARGET_GEMM / r['speedup']:.2f}x. Likely: the ideal on this CPU is only "
            f"{ide['ideal_speedup_issue_bound']:.1f}-{ide['ideal_speedup_popcount_bound']:.0f}x (XOR + POPCNT + ADD per "
            f"512 bits against 2 x 256-bit FMA)" + (
                f"; the kernel ran at {100 * r['binary_of_peak']:.0f}% of its issue-bound peak and float32 at "
                f"{100 * r['float32_of_peak']:.0f}% of the FMA peak" if "binary_of_peak" in r else "")
            + "; and a busy machine (other processes) makes both noisy")
        verdicts.append({"target": "binary GEMM >= 25x float32 at 4096^3, 2 threads", "measured": r["speedup"],
                         "met": ok, "why": why.removeprefix("; ")})
        print(f"  binary GEMM 4096^3, 2 threads: {r['speedup']:.1f}x (target >= {TARGET_GEMM:.0f}x): "
              f"{'met' if ok else 'MISSED'}{why}")
    else:
        print("  binary GEMM 4096^3 on 2 threads: not measured (run with --threads including 2)")
    for r in nets:
        if r["batch"] != 100 or r["threads"] != max(threads) or not r["config"].startswith(("bnn/", "xnor/")) \
                or r["config"].endswith("_bwn"):  # (the target is about binary-activation networks)
            continue
        ok = r["speedup"] >= TARGET_NET
        why = "" if ok else (
            f"; short by {TARGET_NET / r['speedup']:.2f}x. Where the engine's time goes: "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(r["time_shares"].items(), key=lambda kv: -kv[1]))
            + f" (the popcount GEMMs themselves {100 * r['gemm_share']:.0f}%). The real-input first layer is the "
            "same float convolution as in the float network, so it bounds the speed-up (Amdahl)")
        verdicts.append({"target": f"{r['network']} batch 100 >= 5x, {r['threads']} threads",
                         "measured": r["speedup"], "met": ok, "why": why.removeprefix("; ")})
        print(f"  {r['network']}, batch 100, {r['threads']} threads: {r['speedup']:.2f}x (target >= "
              f"{TARGET_NET:.0f}x): {'met' if ok else 'MISSED'}{why}")

    verdicts += size_verdicts(sizes)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"cpu": cpu, "isa": isa, "torch": torch.__version__, "threads": threads, "repeats": repeats,
              "allocator": allocator, "quick": args.quick, "gemm": gemms, "ideal": ide,
              "real_input": real_input, "networks": nets, "sizes": sizes, "not_covered": uncovered,
              "targets": verdicts,
              "seconds": time.perf_counter() - started,
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    from common.results import write_text_atomic

    write_text_atomic(out, json.dumps(result, indent=1))
    if readme:
        write_readme(result)
    print(f"\nwrote {out} ({result['seconds']:.0f} s; load average {result['load_average']})")
    return 0


# ------------------------------------------------------------------------------------------------ README



def _span(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.1f}×" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}×"


def readme_section(result: dict) -> str:
    """The README's measured efficiency tables, from a result file of this benchmark (nothing typed by hand)."""
    gemm = {}
    for r in result.get("gemm", []):
        gemm.setdefault((r["layer"], r["threads"]), r["speedup"])
    layers = [r["layer"] for r in result.get("gemm", [])]
    big = [n for n in dict.fromkeys(layers) if "(b100)" in n and n.startswith(("AlexNet conv", "VGG-small conv"))]
    threads = result.get("threads", [1, 2])
    ide = result.get("ideal", {})
    cpu = result.get("cpu", {})
    lines = [START, f"Measured by `python -m benchmarks.engine` (`results/bench/engine.json`; it rewrites this part of "
             f"the README, `--readme` from the committed files alone): {cpu.get('model', '?')}, "
             f"{result.get('isa', '?')} path, torch {result.get('torch', '?')}, "
             f"{result.get('allocator', 'default allocator settings')}, load "
             f"average {', '.join(f'{x:.2f}' for x in result.get('load_average') or [])} at the end"
             + (f"; sizes re-measured at commit {result['sizes_commit'][:10]}" if result.get("sizes_commit") else "")
             + ".", "",
             "| engine vs float32 torch | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)
             + " | target |", "|---|" + "---|" * len(threads) + "---|"]
    lines.append("| binary GEMM vs `torch.mm`, 4096³ | "
                 + " | ".join(_span([gemm[k]] if (k := ("square 4096^3", t)) in gemm else []) for t in threads)
                 + f" | ≥ {TARGET_GEMM:.0f}× |")
    lines.append(f"| binary GEMM, AlexNet conv2–5 and VGG-small conv2–6 at batch 100 ({len(big)} shapes) | "
                 + " | ".join(_span([gemm[(n, t)] for n in big if (n, t) in gemm]) for t in threads) + " | |")
    ri = {}
    for r in result.get("real_input", []):
        ri.setdefault(r["threads"], []).append(r["one_gemm_speedup"])
    if ri:
        lines.append("| real input × ternary weights: one float GEMM against two bit-plane GEMMs (sign-add form), "
                     "LeNet-5 conv2 and VGG-small conv4 | " + " | ".join(_span(ri.get(t, [])) for t in threads)
                     + " | the faster one runs |")
    if ide:
        lines.append(f"| the machine's ideal (instruction throughput, `ideal` in the file) | "
                     f"{ide['ideal_speedup_issue_bound']:.1f}× (XOR + POPCNT + ADD issue bound) – "
                     f"{ide['ideal_speedup_popcount_bound']:.0f}× (popcount bound) |" + " |" * len(threads))
    nets: dict[str, dict] = {}
    for r in result.get("networks", []):
        nets.setdefault(r["config"], {})[(r["batch"], r["threads"])] = r
    for config, by in nets.items():
        target = f"≥ {TARGET_NET:.0f}× (batch 100)" if config.startswith(("bnn/", "xnor/")) and \
            not config.endswith("_bwn") else ""
        cells = []
        for t in threads:
            cells.append(" / ".join(f"{by[(b, t)]['speedup']:.2f}×" if (b, t) in by else "-" for b in (1, 100)))
        same = all(r["same_predictions"] for r in by.values())
        lines.append(f"| whole network `{config}`, batch 1 / 100{'' if same else ' (predictions DIFFER)'} | "
                     + " | ".join(cells) + f" | {target} |")
    lines += ["", "Targets:", ""]
    for v in result.get("targets", []):
        lines.append(f"- {v['target']}: {v['measured']:.2f}× — {'met' if v['met'] else '**missed**'}"
                     + (f" ({v['why']})" if v.get("why") else ""))
    lines += ["", "| packed file | bytes | × smaller than the float32 state_dict | its packed layers by weight kind |",
              "|---|---|---|---|"]
    for r in result.get("sizes", []):
        kinds = ", ".join(f"{k} {v['ratio']:.1f}×" for k, v in r["layers"].items() if k != "float")
        lines.append(f"| `{r['config']}` | {r['file_bytes']:,} | {r['ratio']:.1f}× | {kinds or '-'} |")
    if result.get("not_covered"):
        lines += ["", "Not packed yet: " + "; ".join(f"`{r['config']}` ({r['why']})" for r in result["not_covered"])
                  + "."]
    lines += records_table(engine_records())
    lines.append(END)
    return "\n".join(lines)


def engine_records(folder: Path = RECORDS) -> list[dict]:
    """The records of ``python -m engine test --record`` under ``folder`` (``<paper>/<config>/seed<N>.json``)."""
    from common.results import read_result
    from engine.__main__ import WRITTEN_BY

    records = []
    for path in sorted(Path(folder).glob("*/*/seed*.json")):
        rec = read_result(path)
        if rec is None or rec.get("written_by") != WRITTEN_BY:
            raise SystemExit(f"error: {path}: not a record of {WRITTEN_BY}")
        records.append(rec)
    return records


def records_table(records: list[dict]) -> list[str]:
    """README's table of trained networks: the engine's test error against the simulated network's."""
    if not records:
        return []
    pct = lambda v: "-" if v is None else f"{v:.2f} %"  # noqa: E731
    lines = ["", "Trained networks, the engine against the simulated network: `python -m engine test --model FILE "
             "--record results/engine/<paper>/<config>/seed<N>.json` on the file `python -m papers.<paper> export` "
             "wrote, and the test error of the network's result (`results/<paper>/<config>/seed<N>.json`, measured "
             "on the checkpoint the file was exported from); equal: the same number of wrong test images.", "",
             "| network | engine test error | simulated test error | equal | packed bytes | test images |",
             "|---|---|---|---|---|---|"]
    for r in records:
        eq = {True: "yes", False: "**no**", None: "-"}[r.get("equal_to_simulated")]
        lines.append(f"| `{r['network']}` | {pct(r['test_top1_err'])} | {pct(r.get('simulated_test_top1_err'))} | "
                     f"{eq} | {r['packed_bytes']:,} | {r['test_images']:,} |")
    return lines


def write_readme(result: dict, path: Path = README) -> None:
    """Replace the text between the markers of ``path`` with ``readme_section(result)``."""
    from common.results import write_text_atomic

    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"error: {path}: no {START} ... {END} markers to write the engine's tables between")
    head, rest = text.split(START, 1)
    write_text_atomic(path, head + readme_section(result) + rest.split(END, 1)[1])


def size_verdicts(sizes: list[dict]) -> list[dict]:
    """The size target's verdict (printed): packed binary layers against their float32 weights."""
    binary = [r["layers"]["binary"]["ratio"] for r in sizes if "binary" in r["layers"]]
    if not binary:
        return []
    low = min(binary)
    print(f"  packed binary layers: {low:.1f}x to {max(binary):.1f}x smaller than float32 (target >= "
          f"{TARGET_SIZE:.0f}x): {'met' if low >= TARGET_SIZE else 'MISSED'} (1 bit per weight, a layer's bits in "
          "one row, plus one float32 scale per filter or layer where the method has one)")
    return [{"target": "packed binary layers >= 30x smaller than float32", "measured": low, "met": low >= TARGET_SIZE,
             "why": f"{low:.1f}x to {max(binary):.1f}x: 1 bit per weight, a layer's bits in one row, plus one float32 "
                    "scale per filter or layer where the method has one"}]


def refresh_sizes(out: Path, readme: bool = True) -> int:
    """Replace the sizes of an existing benchmark file (they depend only on the formats and shapes, not on the
    machine's load), recording the commit that measured them."""
    from common.results import git_commit, read_result, write_text_atomic

    result = read_result(out)
    if result is None or not isinstance(result.get("sizes"), list):
        print(f"error: {out}: not a benchmark file of python -m benchmarks.engine (run it whole first)", file=sys.stderr)
        return 2
    sizes, uncovered = bench_sizes()
    for r in sizes:
        print(f"  {r['config']:40s} {r['file_bytes']:>9,d} B  {r['ratio']:5.1f}x smaller")
    targets = [t for t in result.get("targets", []) if "packed binary layers" not in t.get("target", "")]
    result.update({"sizes": sizes, "not_covered": uncovered, "sizes_commit": git_commit(),
                   "targets": targets + size_verdicts(sizes)})
    write_text_atomic(out, json.dumps(result, indent=1))  # (as the whole benchmark writes it)
    if readme:
        write_readme(result)
    print(f"wrote the sizes of {out} (timings kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
