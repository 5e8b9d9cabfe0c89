"""This suite's checkpoints, in one place: writing them (atomically; ``last.ckpt`` also every N steps inside an
epoch), resuming a run from its ``last.ckpt`` (``train --resume``), and reading them for ``test --ckpt`` and for
fine-tuning (``init_from``).

A checkpoint holds all a run needs to go on exactly as if it had not stopped: weights with the quantizers' state
(dynamic fixed point's integer lengths and overflow counts) and batch-norm statistics, optimizer and learning-rate
schedule, Lightning's loop position, the callbacks' state (best validation error, the per-epoch curve) and the data
module's (position in the epoch, shuffle seed, random generators: ``common.data``).

``init_from`` names the float (or any) network a run starts from, instead of a random initialisation:
a checkpoint (``.ckpt``), a result file (``.json``, whose ``checkpoint`` it uses), or the name of a config of the
same paper, or ``paper/config`` of another (its result for the same seed). Only the network's weights and batch-norm statistics are loaded; the
optimizer, schedule and epoch counter start fresh, as in the papers' fine-tuning experiments.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from common.errors import UserError
from common.results import atomic_write, first_difference, read_result, result_path, upgrade_config

READ_ERRORS = (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError)


def load_data(path) -> dict:
    """``torch.load`` as every checkpoint of this suite is read: data only (``weights_only=True``: tensors, numbers,
    strings and the containers of them). A file that holds anything else, code included, is refused by torch's
    restricted unpickler before any of it runs (``pickle.UnpicklingError``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path, what: str) -> dict:
    """The checkpoint's contents (data only: ``load_data``); a missing or unreadable file, or one that holds more
    than data, is a ``UserError`` naming ``what`` (the option)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        ckpt = load_data(path)
    except pickle.UnpicklingError:
        raise UserError(f"{what} {path}: not a checkpoint of this suite: it is not made of tensors and plain values "
                        "only (refused unread; nothing in it was run)") from None
    except READ_ERRORS as e:
        raise UserError(f"{what} {path}: not a readable checkpoint of this suite ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{what} {path}: not a checkpoint of this suite (no state_dict)")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through ``common.results.atomic_write``: a run killed while saving leaves the
    previous checkpoint intact (Lightning's own goes through a temporary file elsewhere and a copy). Its reader
    (``--resume``) reads data only, whatever the caller asks (``load_data``)."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_data(path)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def run_dir(runs_dir: Path, paper: str, name: str, seed: int) -> Path:
    """runs/<paper>/<config>/seed<N>: checkpoints (``checkpoints/best.ckpt``, ``checkpoints/last.ckpt``) and logs."""
    return Path(runs_dir) / paper / name / f"seed{seed}"


def last_checkpoint(runs_dir: Path, paper: str, name: str, seed: int) -> Path:
    """The run's ``last.ckpt`` (what ``--resume`` goes on from)."""
    return run_dir(runs_dir, paper, name, seed) / "checkpoints" / "last.ckpt"


def resume_checkpoint(runs_dir: Path, paper: str, name: str, seed: int, config: dict | None) -> tuple[Path, int]:
    """The ``last.ckpt`` of this run and its global step, checked: it exists, is readable (a truncated file is a
    ``UserError``), and was written with this same resolved config (unless ``config`` is None). Temporary files left
    by a run killed while saving are removed."""
    path = last_checkpoint(runs_dir, paper, name, seed)
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint {path} to resume from (run without --resume to start this run)")
    ckpt = read_checkpoint(path, "--resume")
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(saved, dict):
        raise UserError(f"--resume {path}: not a checkpoint of this suite's train command (no config)")
    diff = config is not None and first_difference(upgrade_config(saved), config)
    if diff:
        raise UserError(f"--resume {path}: written with another config ({diff}); resume with the same --config, "
                        f"--set and --seed")
    for partial in path.parent.glob(".*.tmp"):  # (common.results.atomic_write's, of a write that was cut short)
        partial.unlink(missing_ok=True)
    return path, int(ckpt.get("global_step", 0))


def resolve_init(init_from: str, paper: str, seed: int, results_dir: Path, runs_dir: Path = Path("runs")) -> Path:
    """The checkpoint ``init_from`` refers to (see the module docstring). A result file's ``checkpoint`` must lie
    under the runs folder or the results folder (a result file from elsewhere cannot point a run at any file)."""
    p = Path(init_from)
    if p.suffix == ".ckpt":
        source = None
    elif p.suffix == ".json":
        source = p
    else:
        from common.papers import ALL

        owner, _, config = init_from.rpartition("/")
        if owner and owner not in ALL:
            raise UserError(f"init_from: {init_from!r}: no paper {owner!r} (expected a .ckpt, a .json, a config name "
                            f"or paper/config with a paper among: {', '.join(sorted(ALL))})")
        source = result_path(results_dir, paper, init_from, seed)
        if not source.is_file():
            raise UserError(f"init_from: {init_from!r}: no result {source} (neither a .ckpt nor a .json path: train "
                            f"it first with python -m papers.{owner or paper} train --config {config} --seed {seed})")
    if source is not None:
        ckpt = (read_result(source) or {}).get("checkpoint")
        if not isinstance(ckpt, str):
            raise UserError(f"init_from: {source}: not a result file of this suite (no 'checkpoint')")
        p = Path(ckpt)
        trees = [Path(runs_dir).resolve(), Path(results_dir).resolve()]
        if not any(p.resolve().is_relative_to(t) for t in trees) or p.suffix != ".ckpt":
            raise UserError(f"init_from: {source}: its checkpoint {p} is not a .ckpt under the runs folder "
                            f"({trees[0]}) or the results folder ({trees[1]}); refused (give --runs-dir, or the "
                            ".ckpt itself)")
    if not p.is_file():
        raise UserError(f"init_from: checkpoint {p} not found" + (f" (named by {source})" if source else ""))
    return p


_QUANTIZER_KEY = re.compile(r"(^|\.)\w*quantizer\.")


def is_quantizer_key(key: str) -> bool:
    """Whether a state-dict key is a quantizer's state (``...weight_quantizer.il``), not a network weight."""
    return bool(_QUANTIZER_KEY.search(key))


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy the network weights of checkpoint ``path`` into ``model``; they must fit it exactly."""
    state = {k.removeprefix("model."): v for k, v in read_checkpoint(path, "init_from").get("state_dict").items()
             if k.startswith("model.")}
    own = model.state_dict()
    # quantizer state (dynamic fixed point's ranges) is carried over where both have it, and optional otherwise:
    # a network fine-tuned in stages gains quantizers from one stage to the next
    missing = sorted(k for k in set(own) - set(state) if not is_quantizer_key(k))
    unexpected = sorted(k for k in set(state) - set(own) if not is_quantizer_key(k))
    state = {k: v for k, v in state.items() if k in own}
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                 else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise UserError(f"init_from {path}: the checkpoint's network does not fit this config's model ({first}; "
                        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape)")
    model.load_state_dict(state, strict=False)
