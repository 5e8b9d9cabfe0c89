"""Checks of a run's settings and surroundings made before any work, each a one-line ``UserError``."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from common.config import Config
from common.errors import UserError
from common.results import writable


def check_processes(cfg: Config) -> None:
    """With several processes (DDP) ``data.batch_size`` is the global batch, split evenly between them."""
    t = cfg.trainer
    if isinstance(t.devices, int) and t.devices > 0:
        world = t.devices * t.num_nodes
        if cfg.data.batch_size % world:
            raise UserError(f"data.batch_size: expected a multiple of the {world} processes (trainer.devices x "
                            f"trainer.num_nodes), got {cfg.data.batch_size}")


def check_trainer(cfg: Config) -> None:
    """The trainer settings, as Lightning itself judges them (a Trainer is made and dropped; nothing runs)."""
    import logging

    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from common.training import trainer_kwargs

    quiet = logging.getLogger("lightning.pytorch")
    level, quiet.level = quiet.level, logging.WARNING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(**trainer_kwargs(cfg), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, KeyError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"trainer: Lightning refuses these settings ({reason[:200]})") from None
    finally:
        quiet.level = level


MIN_FREE_BYTES = 256 << 20  # a run writes checkpoints of up to a few hundred MB (ImageNet networks: more)


def check_writable(folder: Path, option: str) -> None:
    """Before any work: ``folder`` can be made and written (no file in its way, write permission, free space)."""
    import shutil

    path = Path(folder).absolute()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {folder}: a file, expected a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {folder}: {existing} is a file, expected a folder")
    if not writable(existing):
        raise UserError(f"{option} {folder}: {existing} is not writable")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"{option} {folder}: only {free >> 20} MiB free on its disk (a run needs at least "
                        f"{MIN_FREE_BYTES >> 20} MiB for its checkpoints)")


def check_wandb_key() -> None:
    """``--wandb online`` needs a W&B API key: in ``WANDB_API_KEY`` or saved by ``wandb login`` (~/.netrc)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise UserError("--wandb online: no Weights & Biases API key (set WANDB_API_KEY or run 'wandb login'), or log "
                    "with --wandb offline (the default) and 'wandb sync' later")
