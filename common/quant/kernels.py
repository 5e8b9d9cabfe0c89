"""Fused CPU kernels (``kernels.cpp``) for the quantizers whose torch expressions make several passes over large
weight tensors: fixed-point rounding (nearest and stochastic), dynamic fixed point's overflow counts (with its
rounding in the same pass between range updates), TWN's threshold-and-scale, the scaled sign, and the uniform draws
of ``torch.rand_like``.

Each kernel performs, value by value, the same IEEE operations in the same order as the torch expression next to
its call site, which stays the definition and the fallback; the results are bit-identical, and the stochastic
kernel draws the same uniforms from torch's default generator as ``torch.rand_like``, leaving it in the same
state (``tests/test_kernels.py``). So a seed gives the same run with or without the kernels.

They are compiled on first use with torch's extension builder (a C++ compiler and ninja; about 20 s once per
machine, cached under ``~/.cache/torch_extensions``). ``LOWBIT_KERNELS=0`` turns them off; where the build fails,
a warning says so once and the torch path runs (slower, same numbers). Used for contiguous float32 CPU tensors
only (the torch path serves GPUs, other dtypes and views). Compiler flags: ``-ffp-contract=off`` (no multiply-add
contraction, which would round differently) and ``-fno-trapping-math`` (lets comparisons vectorise; no value
changes). At load, a draw is checked against ``torch.rand_like``: a torch whose generator draws differently turns
the kernels off with a warning rather than change what a seed gives.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]

_ext = None
_loaded = False


def _cpu() -> str:
    """The processor's model and instruction sets (-march=native builds for them)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "|".join(dict.fromkeys(ln for ln in lines if ln.startswith(("model name", "flags"))))


def _name() -> str:
    """A module name that changes with the source, the flags, torch, Python and the machine."""
    key = "|".join([SOURCE.read_text(), *FLAGS, torch.__version__, sys.version, platform.machine(), platform.node(),
                    _cpu()])
    return "lowbit_kernels_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _build():
    return build_extension(_name(), SOURCE, FLAGS)


def build_extension(name: str, source: Path, flags: list[str]):
    """Compile (once) and import the C++ extension ``name`` from ``source``, cached under
    ``$TORCH_EXTENSIONS_DIR`` (~/.cache/torch_extensions); the suite's kernels and the engine's use it."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache/torch_extensions"))
    build = root / name
    so = build / f"{name}.so"
    if so.is_file() and not (build / "lock").exists():  # built, not being written: import it directly (the
        # builder's own up-to-date check costs about a second per process)
        spec = importlib.util.spec_from_file_location(name, so)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU machines
    from torch.utils.cpp_extension import load

    build.mkdir(parents=True, exist_ok=True)
    return load(name=name, sources=[str(source)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                build_directory=str(build), verbose=False)


def ext():
    """The compiled module, or None (turned off, or the build failed)."""
    global _ext, _loaded
    if not _loaded:
        _loaded = True
        _ext = load_or_warn(_checked_build, "fused CPU kernels", "the torch path")
    return _ext


def _checked_build():
    module = _build()
    if not _draws_like_torch(module):
        raise RuntimeError("this torch draws uniforms differently from the kernels")
    return module


def load_or_warn(build, what: str, fallback: str):
    """``build()``, or None where ``LOWBIT_KERNELS=0`` or the build fails (no compiler, no ninja, no headers: one
    warning; ``fallback`` gives the same numbers, slower). The suite's kernels and the engine's load this way."""
    if os.environ.get("LOWBIT_KERNELS", "1") == "0":
        return None
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - any build failure means the plain path, which is always there
        warnings.warn(f"lowbit-repro: {what} unavailable ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); using {fallback} "
                      "(same results, slower). Set LOWBIT_KERNELS=0 to silence.", stacklevel=3)
        return None


def _draws_like_torch(module) -> bool:
    """The kernels' uniforms equal torch.rand_like's, with the generator left in the same state (which is restored)."""
    state = torch.get_rng_state()
    try:
        x = torch.empty(1500)  # more than one twist of the Mersenne twister
        a = module.rand_like(x)
        sa = torch.get_rng_state()
        torch.set_rng_state(state)
        b = torch.rand_like(x)
        return torch.equal(a, b) and torch.equal(sa, torch.get_rng_state())
    finally:
        torch.set_rng_state(state)


def fits(*tensors: torch.Tensor) -> bool:
    """True where the kernels apply: contiguous float32 CPU tensors, and the kernels built."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors) \
        and ext() is not None


# ---------------------------------------------------------------- the fused operations, by name
# Each returns None where the kernels do not apply; the caller then runs its torch expression, which is the definition.

def rand_like(x: torch.Tensor) -> torch.Tensor:
    """torch.rand_like(x): the same values and generator state, several times faster on the CPU."""
    return ext().rand_like(x) if fits(x) else torch.rand_like(x)


def scaled_sign(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor | None:
    """copysign(alpha, x + 0.0): +alpha where x >= 0 (-0.0 included), else -alpha (``alpha``: a one-value tensor of
    x's dtype, read only here, on the CPU path)."""
    return ext().scaled_sign(x, float(alpha)) if fits(x) else None


def fixed(x: torch.Tensor, fl: int, lo: float, hi: float, rounding: str, out: torch.Tensor | None) -> torch.Tensor | None:
    """clamp(floor(x 2^fl + noise), lo 2^fl, hi 2^fl) 2^-fl (noise: 1/2 for nearest, U[0, 1) for stochastic),
    into ``out`` (or a new tensor)."""
    if not (fits(x) and (out is None or fits(out))):
        return None
    eps = 2.0 ** -fl
    y = torch.empty_like(x) if out is None else out
    (ext().fixed_nearest if rounding == "nearest" else ext().fixed_stochastic)(x, y, 2.0 ** fl, lo / eps, hi / eps, eps)
    return y


def count_abs_at_least(x: torch.Tensor, low: float, high: float) -> tuple[int, int] | None:
    """(#|x| >= low, #|x| >= high) in one pass."""
    return tuple(ext().abs_count2(x, low, high)) if fits(x) else None


def ternary(w: torch.Tensor, dims: tuple[int, ...], t: float, group: int) -> torch.Tensor | None:
    """TWN's alpha W~ with the approximate threshold delta = t E|W| over ``dims`` (groups of ``group`` values): the
    mask |W| > delta, alpha = sum(|W| mask) / max(sum(mask), 1), in fewer passes. Groups below 2^24 values only,
    where the torch path's float sum of the 0/1 mask is the exact count the kernel takes."""
    if not (fits(w) and 0 < group < 2**24):
        return None
    a = w.abs()
    delta = t * a.mean(dim=dims, keepdim=True)
    count = ext().keep_above_(a, delta)  # a * mask in place, and the mask's sums
    alpha = a.sum(dim=dims, keepdim=True) / count.view(delta.shape).to(w.dtype).clamp_min(1)
    return ext().ternary_out(w, delta, alpha)


def dynamic_fixed_step(x: torch.Tensor, out: torch.Tensor | None, wl: int, fl: int, rates: torch.Tensor,
                       calls: torch.Tensor) -> torch.Tensor | None:
    """Dynamic fixed point at a training call where the integer length cannot move: the overflow rates at il and
    il - 1 added to ``rates``, ``calls`` + 1, and x rounded to nearest on the symmetric wl-bit grid 2^-fl, in one
    pass (``DynamicFixed._observe`` then ``to_fixed``: the same counts, rates and values)."""
    if not (x.numel() > 0 and fits(x) and (out is None or fits(out)) and rates.device.type == "cpu"):
        return None
    most = 2 ** (wl - 1) - 1
    top, eps = most * 2.0 ** -fl, 2.0 ** -fl
    y = torch.empty_like(x) if out is None else out
    # the bounds as to_fixed's symmetric range passes them: -(2^(wl-1) - 1) eps / eps, ...
    ext().dynamic_fixed_step(x, y, top / 2, top, 2.0 ** fl, -most * eps / eps, most * eps / eps, eps, rates, calls)
    return y


@contextlib.contextmanager
def disabled():
    """Run the torch path inside the block (tests compare the two paths; benchmarks time both)."""
    global _ext
    ext()
    saved = _ext
    _ext = None
    try:
        yield
    finally:
        _ext = saved
