"""Training-step time of the binarized MLP over the float MLP (784-1024x3-10, batch 100), printed as ratios.

    .venv/bin/python ci/bench_overhead.py [--repeats 15] [--steps 20] [--out results/bench/overhead.json]

A step is what the trainer does per batch: forward, squared hinge loss, backward, Adam step (with BinaryConnect's
per-layer learning-rate groups where the config has them) and the latent-weight clip. Variants are interleaved
within one process after a warm-up; the median over repeats is reported. Not a test: timings are for reading.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from common.config import load_config
from common.module import Classifier
from common.quant import after_step

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"float": "mnist_cpu_float", "binary det (sign)": "mnist_cpu_det",
            "binary stoch (sign_stochastic)": "mnist_cpu_stoch"}


def make_step(config: str, x: torch.Tensor, y: torch.Tensor):
    _, cfg = load_config(config, ROOT / "papers/binaryconnect/configs")
    module = Classifier(cfg.to_dict(), (1, 28, 28), 10).train()
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt

    def step():
        loss = module.loss_fn(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        after_step(module.model)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "results/bench/overhead.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
    steps = {name: make_step(cfg, x, y) for name, cfg in VARIANTS.items()}
    for step in steps.values():  # warm-up
        for _ in range(10):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median["float"]
    print(f"MLP 784-1024x3-10, batch 100, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'variant':32s} {'ms/step':>8s} {'ratio':>6s}")
    rows = []
    for name, t in median.items():
        print(f"{name:32s} {1000 * t:8.2f} {t / base:6.3f}")
        rows.append({"variant": name, "config": VARIANTS[name], "ms_per_step": round(1000 * t, 3),
                     "ratio_vs_float": round(t / base, 4)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bc_mlp_step_overhead", "batch": 100, "repeats": args.repeats,
                               "steps_per_repeat": args.steps, "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "machine": platform.machine(), "rows": rows}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
