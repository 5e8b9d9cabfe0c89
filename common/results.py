"""One JSON result file per run, written atomically (temp file in the same folder, fsync, rename: ``atomic_write``,
which checkpoints use too)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

SCHEMA = 1


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


def git_commit() -> str:
    """HEAD commit of the checkout ('+dirty' when tracked files differ), or 'unknown'."""
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
    return {"device": device, "python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightning": lightning.__version__,
            "platform": platform.platform()}
