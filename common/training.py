"""Training: the one Trainer every run uses (``build_trainer``), ``train`` (fit, test, write the result file),
range calibration before training, and the process-wide settings of every run."""
from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from common.callbacks import EpochCurve
from common.config import Config
from common.errors import Diverged
from common.evaluation import errors, pct
from common.results import Replacing, make_result, result_path, run_lock, write_json_atomic

CHECKPOINT_EVERY = 1000


def trainer_kwargs(cfg: Config) -> dict:
    t = cfg.trainer
    kw = dict(max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
              strategy=t.strategy, precision=t.precision, deterministic=t.deterministic,
              log_every_n_steps=t.log_every_n_steps,
              num_sanity_val_steps=0)  # the validation code is tested; its 2 extra batches per run are not needed
    for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if getattr(t, k) is not None:
            kw[k] = getattr(t, k)
    return kw


def process_settings() -> None:
    """The process-wide settings every training run (and the speed benchmark) uses; none changes a result."""
    import ctypes

    import torch

    # Deterministic algorithms stay on, but not their debugging fill of every new tensor with NaN: it made
    # training up to 9x slower on CPU and changes no result (kernels overwrite what they allocate).
    torch.utils.deterministic.fill_uninitialized_memory = False
    # Subnormal floats (|x| < 1.2e-38, e.g. Adam's squared tiny gradients) are ~100x slower on x86 CPUs; flushing
    # them to zero made binary-activation runs several times faster and is far below every precision studied here.
    torch.set_flush_denormal(True)
    # glibc serves every allocation above 128 KiB-32 MiB (weights, gradients, quantized copies) with fresh pages
    # and returns them on free, so each step paid ~0.1 ms of page faults per MB; keeping freed memory for reuse
    # (up to 32 MiB per block, no trimming) removes that cost. Other C libraries: left as they are.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap for reuse
    except (OSError, AttributeError):
        pass


def validates(cfg: Config) -> bool:
    """Whether the run has a validation pass (then ``best.ckpt`` and the tested checkpoint follow validation error)."""
    return cfg.data.val_size > 0 and cfg.trainer.limit_val_batches != 0


def build_trainer(cfg: Config, run_dir: Path, loggers, *, progress: bool, checkpoint_every: int, **overrides):
    """The Trainer every training run uses, and its callbacks: ``best.ckpt`` (by validation error, when there is
    validation), ``last.ckpt`` (epoch ends and every ``checkpoint_every`` steps), the epoch curve; checkpoints are
    written atomically. ``overrides``: Trainer arguments over the config's (e.g. a benchmark's epoch length)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from common.callbacks import LastCheckpoint
    from common.checkpoint import AtomicCheckpointIO

    validate = validates(cfg)
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_err" if validate else None,
                           mode="min", enable_version_counter=False)
    last = LastCheckpoint(run_dir / "checkpoints", checkpoint_every)
    curve = EpochCurve(say=not progress)
    trainer = L.Trainer(**{**trainer_kwargs(cfg), **overrides}, logger=loggers,
                        callbacks=[ckpt, curve, last],  # (ckpt first: trainer.checkpoint_callback, and before last)
                        default_root_dir=run_dir, enable_progress_bar=progress, plugins=[AtomicCheckpointIO()])
    return trainer, ckpt, curve, last


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` (None: left as it is) within, and the previous one given back."""
    import torch

    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def train(paper: str, name: str, cfg: Config, *, data_dir: str | None = None, wandb: str = "offline", progress: bool = True,
          results_dir: Path = Path("results"), runs_dir: Path = Path("runs"), extra: dict | None = None,
          resume: bool = False, checkpoint_every: int = CHECKPOINT_EVERY, overwrite: bool = False) -> Path | None:
    """Fit, test (on the best-validation checkpoint, as the papers report) and write the result file. ``resume``:
    go on from the run's ``last.ckpt`` (the same result as an uninterrupted run); ``checkpoint_every``: also write
    ``last.ckpt`` every that many training steps inside an epoch (0: at epoch ends only); ``overwrite``: replace a
    finished result of another config (``common.results.Replacing``)."""
    import lightning as L

    from common.checkpoint import load_weights, resolve_init, resume_checkpoint
    from common.checkpoint import run_dir as run_folder
    from common.data import ClassificationData, data_root
    from common.module import Classifier

    with torch_threads(cfg.trainer.num_threads):  # (given back after: a process may run more than this)
        data = ClassificationData(cfg.data, data_root(data_dir))
        data.check_available()  # fails before anything is written
        path = result_path(results_dir, paper, name, cfg.seed)
        replacing = Replacing(path, cfg, overwrite)  # ... and so does a finished result of another config
        resume_ckpt, resume_step = None, 0
        if resume:
            resume_ckpt, resume_step = resume_checkpoint(runs_dir, paper, name, cfg.seed, cfg.to_dict())
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        module = Classifier(cfg.to_dict(), data.shape, data.num_classes)  # a bad conversion rule fails here
        init_ckpt = None
        if cfg.init_from:
            init_ckpt = resolve_init(cfg.init_from, paper, cfg.seed, results_dir, runs_dir)
            if resume_ckpt is None:
                load_weights(module.model, init_ckpt)  # fails before anything is written

        if cfg.quant.calibrate_epochs and resume_ckpt is None:  # (a resumed run has it in its checkpoint)
            calibrate(module, data, cfg, progress)

        run_dir = run_folder(runs_dir, paper, name, cfg.seed)
        with run_lock(run_dir, f"{paper}/{name} seed {cfg.seed}"):
            return _fit(paper, name, cfg, module, data, run_dir, init_ckpt, resume_ckpt, resume_step, replacing,
                        wandb=wandb, progress=progress, results_dir=results_dir, extra=extra,
                        checkpoint_every=checkpoint_every)


def _fit(paper, name, cfg, module, data, run_dir, init_ckpt, resume_ckpt, resume_step, replacing, *, wandb, progress,
         results_dir, extra, checkpoint_every) -> Path | None:
    """``train``'s part that writes: fit, test, the result file (with the run's folder locked)."""
    from lightning.pytorch.loggers import CSVLogger

    from common.checkpoint import load_data

    validate = validates(cfg)
    # a resumed run logs beside the interrupted one's CSV (which Lightning would otherwise delete)
    loggers = [CSVLogger(run_dir, name="csv", version=f"resumed_at_step{resume_step}" if resume_ckpt else "")]
    if wandb != "disabled":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project="lowbit-repro", name=f"{paper}/{name}/seed{cfg.seed}", save_dir=str(run_dir),
                                   mode=wandb, config=cfg.to_dict(), tags=[paper, cfg.scale]))
    trainer, ckpt, curve, last = build_trainer(cfg, run_dir, loggers, progress=progress, checkpoint_every=checkpoint_every)
    process_settings()

    if resume_ckpt is not None:  # (the data module replays the interrupted epoch; Lightning cannot tell)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

    start = time.time()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume_ckpt, weights_only=True)
    except Diverged as err:
        _finish_wandb(loggers)
        if trainer.is_global_zero and not replacing.may_write_diverged():
            err.kept = replacing.path  # a diverged run never replaces a finished one
        elif trainer.is_global_zero:
            metrics_at = {"epoch": err.epoch, "step": err.step, "loss": str(err.loss)}
            result = make_result(paper, name, cfg, module.model, None, results_dir, init_ckpt, time.time() - start,
                             status="diverged", diverged_at=metrics_at, **(extra or {}), epochs=err.epoch,
                             checkpoint=None, curve=curve.rows)
            err.result = replacing.path
            write_json_atomic(err.result, result)
        raise
    use_best = validate and cfg.select == "best_val" and ckpt.best_model_path
    tested = trainer.test(module, datamodule=data, ckpt_path=ckpt.best_model_path if use_best else None,
                          verbose=True, weights_only=True)[0]
    wall = time.time() - start
    _finish_wandb(loggers)
    if not trainer.is_global_zero:
        return None

    metrics = {
        **errors(tested),
        "best_val_err": pct(ckpt.best_model_score) if validate and ckpt.best_model_score is not None else None,
        # the epoch of the weights tested, read from their checkpoint (epochs whose validation errors print alike
        # are told apart by the unrounded value, so the curve's first minimum need not be the one)
        "tested_epoch": load_data(ckpt.best_model_path)["epoch"] if use_best else trainer.current_epoch - 1,
    }
    result = make_result(paper, name, cfg, module.model, metrics, results_dir, init_ckpt, wall, **(extra or {}),
                     epochs=trainer.current_epoch,  # the checkpoint whose weights were tested
                     checkpoint=str(Path(ckpt.best_model_path if use_best else last.last_model_path)),
                     curve=curve.rows)
    write_json_atomic(replacing.path, result)
    said = replacing.compare(result)
    if said:
        print(said)
    return replacing.path


def _finish_wandb(loggers: list) -> None:
    if loggers[1:]:
        import wandb as wandb_lib

        wandb_lib.finish()


def calibrate(module, data, cfg: Config, progress: bool) -> None:
    """Range initialisation: ``quant.calibrate_epochs`` epochs of training with every quantizer observing but not
    quantizing, then the initial parameters are restored and only the quantizers' state (e.g. dynamic fixed
    point's integer lengths) is kept."""
    import lightning as L

    from common.checkpoint import is_quantizer_key
    from common.quant import Quantizer

    initial = {k: v.clone() for k, v in module.state_dict().items()}
    quantizers = [m for m in module.modules() if isinstance(m, Quantizer)]
    for q in quantizers:
        q.calibrating = True
    kw = {**trainer_kwargs(cfg), "max_epochs": cfg.quant.calibrate_epochs, "limit_val_batches": 0}
    L.Trainer(**kw, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
              enable_model_summary=False).fit(module, datamodule=data)
    for q in quantizers:
        q.calibrating = False
    settled = {k: v for k, v in module.state_dict().items() if is_quantizer_key(k)}
    module.load_state_dict({**initial, **settled})
