"""Reading this suite's checkpoints, in one place: for ``test --ckpt`` and for fine-tuning (``init_from``).

``init_from`` names the float (or any) network a run starts from, instead of a random initialisation:
a checkpoint (``.ckpt``), a result file (``.json``, whose ``checkpoint`` it uses), or the name of a config of the
same paper, or ``paper/config`` of another (its result for the same seed). Only the network's weights and batch-norm statistics are loaded; the
optimizer, schedule and epoch counter start fresh, as in the papers' fine-tuning experiments.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from common.errors import UserError
from common.results import result_path

READ_ERRORS = (RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError, pickle.UnpicklingError)


def read_checkpoint(path: Path, what: str) -> dict:
    """The checkpoint's contents; a missing or unreadable file is a ``UserError`` naming ``what`` (the option)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except READ_ERRORS as e:
        raise UserError(f"{what} {path}: not a readable checkpoint of this suite ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{what} {path}: not a checkpoint of this suite (no state_dict)")
    return ckpt


def resolve_init(init_from: str, paper: str, seed: int, results_dir: Path) -> Path:
    """The checkpoint ``init_from`` refers to (see the module docstring)."""
    p = Path(init_from)
    if p.suffix == ".ckpt":
        source = None
    elif p.suffix == ".json":
        source = p
    else:
        source = result_path(results_dir, paper, init_from, seed)
        if not source.is_file():
            owner, _, config = init_from.rpartition("/")
            raise UserError(f"init_from: {init_from!r}: no result {source} (neither a .ckpt nor a .json path: train "
                            f"it first with python -m papers.{owner or paper} train --config {config} --seed {seed})")
    if source is not None:
        try:
            p = Path(json.loads(source.read_text())["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"init_from: {source}: not a result file of this suite (no 'checkpoint')") from None
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
