"""One JSON result file per run, written atomically (temp file in the same folder, fsync, rename: ``atomic_write``,
which checkpoints use too), never silently replaced (``Replacing``), by one run at a time (``run_lock``)."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Literal, Optional

from common.errors import UserError
from common.validate import check_dataclass, key_path, nonempty, rng

SCHEMA = 1
STATUSES = ("ok", "diverged")


@dataclass(frozen=True)
class Bits:
    """W/A/G bits: the lowest over the network's quantized weights, activations and gradients (32 = float)."""
    w: int = field(metadata=rng(lo=1, hi=32))
    a: int = field(metadata=rng(lo=1, hi=32))
    g: int = field(metadata=rng(lo=1, hi=32))


@dataclass(frozen=True)
class ResultHead:
    """What every result file has (``make_result`` writes it; the leaderboard and the sweep read result files by it);
    the file's other keys are free-form detail."""
    schema: int
    status: Literal[STATUSES]
    paper: str = field(metadata=nonempty())
    config_name: str = field(metadata=nonempty())
    seed: int = field(metadata=rng(lo=0))
    scale: str
    dataset: str
    model: str
    bits: Bits
    metrics: Optional[dict]
    config: dict

    def check(self, path: str) -> None:
        if self.schema != SCHEMA:
            raise UserError(f"{key_path(path, 'schema')}: expected {SCHEMA}, got {self.schema}")
        err = (self.metrics or {}).get("test_top1_err")
        if self.status == "ok" and (not isinstance(err, (int, float)) or isinstance(err, bool)
                                    or not math.isfinite(err) or not 0 <= err <= 100):
            raise UserError(f"{key_path(path, 'metrics.test_top1_err')}: expected an error in percent, got {err!r}")


def check_head(data: object, where: str) -> ResultHead:
    """A result file's content checked against ``ResultHead`` (UserError naming the file and the key otherwise)."""
    return check_dataclass(ResultHead, data, where, extra=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file atomically, the one way every result and checkpoint is written: ``write(f)`` fills a temporary
    file in the same folder, which is flushed, fsynced and renamed over ``path`` (``os.replace``). A reader (or a
    run killed at any moment) sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the mode an ordinary new file gets (mkstemp's is 0600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable(folder: Path) -> bool:
    """Whether this process may write in the existing ``folder``. A folder without any write bit is read-only by
    intent, even to root (whom ``os.access`` lets write anywhere)."""
    folder = Path(folder)
    return os.access(folder, os.W_OK | os.X_OK) and bool(folder.stat().st_mode & 0o222)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def result_path(results_dir: Path, paper: str, config: str, seed: int) -> Path:
    """results/<paper>/<config>/seed<N>.json; ``config`` may name another paper's config as ``paper/config``
    (post-training papers share one float network)."""
    other, _, name = config.rpartition("/")
    return Path(results_dir) / (other or paper) / name / f"seed{seed}.json"


def first_difference(a, b, path: str = "") -> str | None:
    """The first key path where two nested dicts differ, as ``key: A there, B now`` (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if a == b:
        return None
    there, now = repr(a), repr(b)
    return f"{path or 'config'}: {there[:60] + '...' if len(there) > 60 else there} there, " \
           f"{now[:60] + '...' if len(now) > 60 else now} now"


def comparable(config: dict) -> dict:
    """The part of a (validated) config that says what was asked for: without a post-training method's chosen
    rules and resolved source checkpoint."""
    out = dict(config)
    if out.get("ptq"):
        out.pop("init_from", None)
        out["quant"] = {k: v for k, v in (out.get("quant") or {}).items() if k != "rules"}
    return out


def config_difference(stored: dict, cfg) -> str | None:
    """Where a result's stored config differs from ``cfg`` (a ``Config``) in what was asked for, or None when it is
    the same run (validated by today's schema, so a field added since with its default is no difference)."""
    if stored == cfg.to_dict():
        return None
    try:
        old = stored_config(stored).to_dict()
    except UserError as err:
        return f"{NO_LONGER_VALID} ({err})"
    return first_difference(comparable(old), comparable(cfg.to_dict()))


NO_LONGER_VALID = "its config is no longer valid"


def upgrade_config(stored: dict) -> dict:
    """A config stored by an earlier version of the suite (in a result file or a checkpoint), with the renames made
    since applied; a config of today's is returned as it is:
    - Ristretto's training-time switch moved out of the core ``fixed`` quantizer into Ristretto's own
      ``ristretto_fixed`` (``papers/ristretto``): a stored ``{name: fixed, training: ...}`` is a ``ristretto_fixed``
      (today's ``fixed`` has no ``training``, so nothing else is renamed)."""
    def upgrade(node):
        if isinstance(node, list):
            return [upgrade(v) for v in node]
        if not isinstance(node, dict):
            return node
        node = {k: upgrade(v) for k, v in node.items()}
        if node.get("name") == "fixed" and "training" in node:
            node["name"] = "ristretto_fixed"
        return node

    return upgrade(stored)


def stored_config(stored: dict):
    """A result's stored config as today's ``Config`` (``upgrade_config``, then validated: UserError where today's
    schema refuses it)."""
    from common.config import validate

    return validate(upgrade_config(stored))


def stored_config_valid(stored: dict) -> bool:
    """Whether a result's stored config still passes today's validation."""
    try:
        stored_config(stored)
    except UserError:
        return False
    return True


def read_result(path: Path) -> dict | None:
    """A result file's content, or None when there is none or it is not a readable JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


class Replacing:
    """The finished result a run is about to replace, checked before the run starts: a result of another config
    (a ``--set`` override of a committed config, say) is never replaced without ``overwrite``, and a diverged run
    never replaces a finished one. A rerun of the same config and seed may replace its result, and then
    ``compare`` says whether it reproduced it bit for bit, and if not, by how much and what differs."""

    HOST_KEYS = ("device", "cpu", "cpu_capability", "threads", "fused_kernels", "torch", "lightning", "python",
                 "git_commit")

    def __init__(self, path: Path, cfg, overwrite: bool = False):
        self.path, self.previous = Path(path), None
        old = read_result(self.path)
        if old is None or old.get("status") != "ok":
            return  # nothing finished to keep: a diverged or unreadable result is replaced
        diff = config_difference(old.get("config") or {}, cfg) if isinstance(old.get("config"), dict) else "no config"
        if diff and not overwrite:

            raise UserError(f"{self.path} holds a finished result of another configuration ({diff}): this run would "
                            "replace it; give --overwrite to replace it, or --results-dir to write elsewhere")
        self.previous = old if not diff else None

    def may_write_diverged(self) -> bool:
        return (read_result(self.path) or {}).get("status") != "ok"

    def reproduced_by(self, new: dict) -> bool:
        """Whether ``new`` has the previous result's metrics, curve and post-training choices exactly."""
        old = self.previous
        return old is not None and all(old.get(k) == new.get(k) for k in ("metrics", "curve", "ptq"))

    def compare(self, new: dict) -> str | None:
        """One line on how the new result compares with the one it replaced (same config and seed), or None."""
        old = self.previous
        if old is None:
            return None
        same = self.reproduced_by(new)
        e_old = (old.get("metrics") or {}).get("test_top1_err")
        e_new = (new.get("metrics") or {}).get("test_top1_err")
        if same:
            return f"reproduced the previous result of this config and seed bit for bit (test error {e_new} %)"
        delta = f"{e_new - e_old:+.4f} points" if isinstance(e_old, (int, float)) and isinstance(e_new, (int, float)) else "?"
        m_old, m_new = old.get("metrics") or {}, new.get("metrics") or {}
        what = [f"metrics.{k} {v!r} -> {m_new.get(k)!r}" for k, v in m_old.items() if v != m_new.get(k)]
        what += [k for k in ("curve", "ptq") if old.get(k) != new.get(k)]
        where = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in self.HOST_KEYS if old.get(k) != new.get(k)]
        return (f"did not reproduce the previous result of this config and seed bit for bit: test error {e_new} % vs "
                f"{e_old} % ({delta}); the result differs in: {'; '.join(what) or 'metrics'}; the runs differ in: "
                f"{'; '.join(where) or 'nothing recorded (same machine, versions and commit)'}")


@contextlib.contextmanager
def run_lock(folder: Path, what: str):
    """Hold ``folder/.lock`` for the duration of a run: a second run of the same config and seed (same folder) at
    the same time is refused with one line. The lock is the kernel's (``flock``): a killed run leaves none behind."""

    folder = Path(folder)
    if any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK")):
        yield  # a DDP worker of a run whose first process holds the lock
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"{folder}: cannot write the run's folder ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what}: another run of this config and seed is running (it holds {folder / '.lock'}); "
                            "wait for it to end, or stop it") from None
        yield
    finally:
        os.close(fd)


def make_result(paper: str, name: str, cfg, model, metrics: dict | None, results_dir: Path, init_ckpt: Path | None,
            wall: float, status: str = "ok", **rest) -> dict:
    """The result file's content (one schema for trained and post-training-quantized networks). ``status``: "ok", or
    "diverged" (then ``metrics`` is null and ``diverged_at`` says where: 0-based epoch, global step, the loss)."""
    from common.module import bits_summary, parameter_bits

    bits, per_layer = bits_summary(model)
    result = {
        "schema": SCHEMA,
        "status": status,
        "paper": paper,
        "config_name": name,
        "seed": cfg.seed,
        "description": cfg.description,
        "claims": cfg.claims,
        "scale": cfg.scale,
        "dataset": cfg.data.name,
        "model": cfg.model["name"],
        "bits": bits,
        "layers": per_layer,
        "metrics": metrics,
        "errors_in": "percent",
        "init_from": str(init_ckpt) if init_ckpt else None,
        "baseline": ({"config": cfg.baseline, "result": str(result_path(results_dir, paper, cfg.baseline, cfg.seed))}
                     if cfg.baseline else None),
        "param_count": sum(p.numel() for p in model.parameters()),
        "param_bits": parameter_bits(model),
        "wall_time_s": round(wall, 1),
        **environment(cfg.trainer.accelerator),
        "git_commit": git_commit(),
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        **rest,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # the writer keeps the schema the readers check (a file the leaderboard would skip is a failed run, not a result)
    check_head(result, f"result of {paper}/{name} seed {cfg.seed}: ")
    return result


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """HEAD commit of the checkout ('+dirty' when tracked files differ), or 'unknown'; read once per process, at the
    first call (the CLI makes it as a run starts: the commit its code was loaded from, not one made meanwhile)."""
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        head = proc.stdout.strip() if proc.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if head and dirty else "")


def environment(accelerator: str) -> dict:
    import lightning
    import torch
    import torchvision

    if accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available()):
        device = f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cuda"
    else:
        device = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    from common.quant import kernels

    # what "the same CPU" means for a seed's promise of the same numbers: the processor, the instruction set
    # torch's kernels dispatch to, the thread count and whether the fused quantizer kernels ran
    return {"device": device, "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "fused_kernels": kernels.ext() is not None,
            "python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightning": lightning.__version__,
            "platform": platform.platform()}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
