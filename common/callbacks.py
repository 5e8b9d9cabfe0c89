"""The training callbacks: the epoch curve a result file holds, and ``last.ckpt`` for resuming."""
from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback, Checkpoint

from common.evaluation import pct


class EpochCurve(Callback):
    """Per-epoch training curve (train loss and error, validation error, learning rate) for the result file; saved in
    checkpoints, so a resumed run's curve is the whole run's. With ``say`` (no progress bar: a log, CI), each epoch
    is also printed as one line."""

    def __init__(self, say: bool = False):
        self.rows: list[dict] = []
        self._lr = None
        self._fitting = False
        self.say, self._started, self._since_resume = say, 0.0, False

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._fitting = stage == "fit"

    def state_dict(self) -> dict:
        return {"rows": self.rows, "lr": self._lr}

    def load_state_dict(self, state: dict) -> None:
        if self._fitting:  # resuming (testing a checkpoint leaves the curve alone)
            self.rows, self._lr = list(state["rows"]), state["lr"]

    def on_train_start(self, trainer, pl_module):  # (a run resumed inside an epoch gets no epoch start for it)
        self._started, self._since_resume = time.time(), True

    def on_train_epoch_start(self, trainer, pl_module):
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._started, self._since_resume = time.time(), False

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch, "lr": self._lr}
        for key, value in pl_module.train_epoch_metrics().items():
            row[key] = round(value * (100 if key.endswith("err") else 1), 4)
        if "val_err" in trainer.callback_metrics:
            row["val_err"] = pct(trainer.callback_metrics["val_err"])
        self.rows.append(row)
        if self.say and trainer.is_global_zero:
            parts = [f"epoch {row['epoch'] + 1}/{trainer.max_epochs}"]
            parts += [f"{k.replace('_', ' ')} {v:.4g}{' %' if k.endswith('err') else ''}" for k, v in row.items()
                      if k not in ("epoch", "lr")]
            took = f"{time.time() - self._started:.0f} s" + (" since the resume" if self._since_resume else "")
            print("  ".join(parts + [f"lr {self._lr:.3g}", took]), flush=True)


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: at every epoch's end (after its validation and the epoch's other hooks), and with
    ``every_n_train_steps`` also every that many steps inside an epoch, for resuming a long epoch; written by
    ``trainer.save_checkpoint`` (so through the run's atomic checkpoint IO). Not after an epoch's last batch: a
    checkpoint taken there, before the validation, would resume past it. (Lightning's own ``save_last`` skips an
    epoch whose monitored metric did not improve, which would leave ``last.ckpt`` behind.) A ``Checkpoint``, so that
    Lightning runs it after the ``ModelCheckpoint`` given before it (it moves checkpoint callbacks last, in their
    order): an epoch's ``last.ckpt`` then holds that epoch's best-checkpoint bookkeeping, and a run resumed from it
    does not forget that the epoch was the best so far."""

    def __init__(self, dirpath: Path, every_n_train_steps: int = 0):
        self.path = Path(dirpath) / "last.ckpt"
        self.every = every_n_train_steps
        self.last_model_path = ""
        self._saved_at = -1  # the global step of the last save (never twice at one step)

    def _save(self, trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self._saved_at == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: a run resumes from it
        self._saved_at, self.last_model_path = trainer.global_step, str(self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and batch_idx + 1 < trainer.num_training_batches and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
