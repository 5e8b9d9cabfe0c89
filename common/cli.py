"""``python -m papers.<name> train|test|configs``, written once for every paper.

    train     [--config NAME|PATH] [--set key.path=value ...] [--seed N] [--init-from CKPT] [--data-dir DIR] [--wandb MODE]
              [--resume] [--checkpoint-every STEPS]
    quantize  --from CKPT|RESULT|CONFIG [--config NAME|PATH] ...   (post-training quantization, no training)
    finetune  --from CKPT|RESULT|CONFIG [--config NAME|PATH] ... [--resume]   (quantize, then fine-tune)
    test      --ckpt PATH [--data-dir DIR]
    export    --ckpt PATH | --config NAME [--seed N]  [--out FILE]   (the packed model the integer engine runs)
    configs

A user error (bad config, missing or corrupt data or checkpoint) prints one line and exits with status 2, before
anything is written. A run whose training loss becomes NaN or infinite stops, writes its result file with status
"diverged" (no metrics; never over a finished result), prints one line and exits with status 3. A run stopped by
SIGTERM or Ctrl-C (SIGINT) writes no result, keeps its last checkpoint and exits with status 143 or 130. A finished
result of another config is never replaced without ``--overwrite``; a rerun of the same config and seed replaces its
result and says whether it reproduced it bit for bit. One run of a config and seed at a time (a lock in its run
folder).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from common.config import Config, list_configs, load_config
from common.errors import Diverged, UserError
from common.results import (SCHEMA, Replacing, environment, git_commit, result_path, run_lock, writable,
                            write_json_atomic)

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
CHECKPOINT_EVERY = 1000


def _parser(paper: str, configs_dir: Path, default_config: str) -> argparse.ArgumentParser:
    configs = list_configs(configs_dir)
    width = max(map(len, configs), default=0)
    listing = "\n".join(f"  {n:<{width}}  {d}" for n, d in configs.items())
    p = argparse.ArgumentParser(prog=f"python -m papers.{paper}", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=(importlib.import_module(f"papers.{paper}").__doc__ or "").strip(),
                                epilog=f"configs (papers/{paper}/configs/):\n{listing}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, test on the test set and write results/<paper>/<config>/seed<N>.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"configs:\n{listing}")
    t.add_argument("--config", default=default_config, help=f"config name or YAML path (default: {default_config})")
    t.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set trainer.max_epochs=5 optim.lr_start=0.01")
    t.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 1)")
    t.add_argument("--init-from", default=None, metavar="CKPT|RESULT|CONFIG",
                   help="fine-tune: start from this checkpoint, result file's checkpoint, or config's result "
                        "for the same seed (sets the config key init_from)")
    t.add_argument("--data-dir", default=None, help="dataset root (default: $LOWBIT_DATA, else ./data)")
    t.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline",
                   help="Weights & Biases logging (default offline: 'wandb sync' the run folder later)")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show the progress bar (default: when the output is a terminal)")
    t.add_argument("--results-dir", default="results", help="where result files go (default: results)")
    t.add_argument("--runs-dir", default="runs", help="where checkpoints and logs go (default: runs)")
    _overwrite_argument(t)
    _resume_arguments(t)
    for cmd, what in (("quantize", "post-training quantization of a trained float network by the config's 'ptq' "
                                   "method: choose per-layer formats, test without fine-tuning, write the result"),
                      ("finetune", "quantize as 'quantize', then fine-tune the quantized network from the float "
                                   "weights and write results/<paper>/<config>_finetuned/seed<N>.json")):
        q = sub.add_parser(cmd, help=what, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"configs:\n{listing}")
        q.add_argument("--from", dest="source", default=None, metavar="CKPT|RESULT|CONFIG",
                       help="the float network: a checkpoint, a result file, or a float config's result (same seed); "
                            "default: the config's init_from")
        q.add_argument("--config", default=default_config, help=f"config name or YAML path (default: {default_config})")
        q.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
        q.add_argument("--seed", type=int, default=None)
        q.add_argument("--data-dir", default=None)
        q.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
        q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
        q.add_argument("--results-dir", default="results")
        q.add_argument("--runs-dir", default="runs")
        _overwrite_argument(q)
        if cmd == "finetune":
            _resume_arguments(q)
    e = sub.add_parser("test", help="evaluate a checkpoint on the test set and print its metrics as JSON")
    e.add_argument("--ckpt", required=True, help="checkpoint written by train (runs/<paper>/<config>/seed<N>/...)")
    e.add_argument("--data-dir", default=None, help="dataset root (default: $LOWBIT_DATA, else ./data)")
    x = sub.add_parser("export", help="write a trained network as a packed file (1-bit binary, 2-bit ternary, integer "
                                      "fixed-point weights) that `python -m engine test` runs in integer arithmetic")
    which = x.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="a checkpoint written by train")
    which.add_argument("--config", help="a config name: its result's checkpoint for --seed (the best-validation one)")
    x.add_argument("--seed", type=int, default=1, help="with --config (default 1)")
    x.add_argument("--out", default=None, help="the file to write (default: model.lowbit beside the checkpoint)")
    x.add_argument("--results-dir", default="results")
    x.add_argument("--runs-dir", default="runs")
    sub.add_parser("configs", help="list this paper's configs")
    return p


def _overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished result of another configuration (a --set override of a committed "
                        "config, say) at this config name and seed; without it such a run is refused")


def _resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="go on from runs/<paper>/<config>/seed<N>/checkpoints/last.ckpt (same config, --set and seed): "
                        "the result is the one an uninterrupted run writes")
    p.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, metavar="STEPS",
                   help=f"also write last.ckpt every STEPS training steps inside an epoch (default {CHECKPOINT_EVERY}; "
                        "0: at epoch ends only)")


def _paper_package(paper: str):
    try:
        return importlib.import_module(f"papers.{paper}")
    except ModuleNotFoundError as e:
        if e.name not in (f"papers.{paper}", "papers"):
            raise
        import papers

        known = sorted(p.name for p in Path(papers.__file__).parent.iterdir() if (p / "__main__.py").is_file())
        raise UserError(f"paper {paper!r}: no such paper (available: {', '.join(known)})") from None


def main(paper: str, default_config: str, argv: list[str] | None = None) -> int:
    try:
        package = _paper_package(paper)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    configs_dir = Path(package.__file__).parent / "configs"
    args = _parser(paper, configs_dir, default_config).parse_args(argv)
    try:
        if args.command == "configs":
            for name, desc in list_configs(configs_dir).items():
                print(f"{name}: {desc}")
            return 0
        if args.command == "test":
            print(json.dumps(evaluate(args.ckpt, args.data_dir), indent=2))
            return 0
        if args.command == "export":
            return export(paper, args)
        init = getattr(args, "init_from", None)
        overrides = args.overrides + ([f"init_from={json.dumps(init)}"] if init else [])
        name, cfg = load_config(args.config, configs_dir, overrides, args.seed)
        paper_check = getattr(package, "check", None)
        if paper_check is not None:
            paper_check(cfg)  # the paper's own constraints on a config
        check_processes(cfg)
        check_trainer(cfg)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        dirs = {"results_dir": Path(args.results_dir), "runs_dir": Path(args.runs_dir)}
        for option, folder in (("--results-dir", dirs["results_dir"]), ("--runs-dir", dirs["runs_dir"])):
            check_writable(folder, option)
        if args.wandb == "online":
            check_wandb_key()
        every = getattr(args, "checkpoint_every", CHECKPOINT_EVERY)
        if every < 0:
            raise UserError(f"--checkpoint-every: expected a number of steps >= 0, got {every}")
        run = dict(resume=getattr(args, "resume", False), checkpoint_every=every, overwrite=args.overwrite)
        with _interrupts() as stopped:
            try:
                if args.command in ("quantize", "finetune"):
                    path = post_train(paper, name, cfg, args.source, finetune=args.command == "finetune",
                                      data_dir=args.data_dir, wandb=args.wandb, progress=progress, **dirs, **run)
                else:
                    path = train(paper, name, cfg, data_dir=args.data_dir, wandb=args.wandb, progress=progress,
                                 **dirs, **run)
            except (SystemExit, KeyboardInterrupt) as stop:  # Lightning's way out of a fit that got a signal
                if not stopped:
                    raise
                last = Path(args.runs_dir) / paper / (f"{name}_finetuned" if args.command == "finetune" else name) \
                    / f"seed{cfg.seed}" / "checkpoints" / "last.ckpt"
                print(f"error: stopped by {stopped[0]}: no result written; the run's last checkpoint ({last}) is "
                      "intact: go on with --resume", file=sys.stderr)
                return EXIT_SIGTERM if stopped[0] == "SIGTERM" else EXIT_SIGINT
        if path:
            print(f"result: {path}")
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Diverged as err:
        if err.result is not None:  # the process that wrote the result (rank 0) says so, once
            print(f"error: {err}; result {err.result} has status 'diverged'", file=sys.stderr)
        elif err.kept is not None:
            print(f"error: {err}; result not written: {err.kept} keeps its finished result", file=sys.stderr)
        return EXIT_DIVERGED


class _interrupts:
    """Within it, SIGTERM and SIGINT are noted (the list it yields gets the signal's name) and then handled as
    before (Lightning stops the fit at the next step), so that the CLI can exit with 143 or 130, not 0 or 1."""

    def __enter__(self) -> list:
        import threading

        self.stopped: list[str] = []
        self.saved, self.mine = {}, {}
        if threading.current_thread() is not threading.main_thread():
            return self.stopped
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            self.saved[sig] = previous

            def note(signum, frame, previous=previous):
                self.stopped.append(signal.Signals(signum).name)
                if callable(previous):
                    previous(signum, frame)
                elif signum == signal.SIGINT:
                    raise KeyboardInterrupt
                elif signal.getsignal(signum) is self.mine[signum]:  # SIGTERM outside a fit: stop here (inside
                    raise SystemExit(EXIT_SIGTERM)  # one, Lightning's handler calls this one, then stops the fit)
            self.mine[sig] = note
            signal.signal(sig, note)
        return self.stopped

    def __exit__(self, *exc) -> None:
        for sig, previous in self.saved.items():
            signal.signal(sig, previous)


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

    quiet = logging.getLogger("lightning.pytorch")
    level, quiet.level = quiet.level, logging.WARNING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(**_trainer_kwargs(cfg), logger=False, enable_checkpointing=False, enable_progress_bar=False,
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


def _trainer_kwargs(cfg: Config) -> dict:
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


def build_trainer(cfg: Config, run_dir: Path, loggers, *, progress: bool, checkpoint_every: int, **overrides):
    """The Trainer every training run uses, and its callbacks: ``best.ckpt`` (by validation error, when there is
    validation), ``last.ckpt`` (epoch ends and every ``checkpoint_every`` steps), the epoch curve; checkpoints are
    written atomically. ``overrides``: Trainer arguments over the config's (e.g. a benchmark's epoch length)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from common.checkpoint import AtomicCheckpointIO, LastCheckpoint

    validate = cfg.data.val_size > 0 and cfg.trainer.limit_val_batches != 0
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_err" if validate else None,
                           mode="min", enable_version_counter=False)
    last = LastCheckpoint(run_dir / "checkpoints", checkpoint_every)
    curve = EpochCurve(say=not progress)
    trainer = L.Trainer(**{**_trainer_kwargs(cfg), **overrides}, logger=loggers,
                        callbacks=[ckpt, curve, last],  # (ckpt first: trainer.checkpoint_callback)
                        default_root_dir=run_dir, enable_progress_bar=progress, plugins=[AtomicCheckpointIO()])
    return trainer, ckpt, curve, last


def train(paper: str, name: str, cfg: Config, *, data_dir: str | None = None, wandb: str = "offline", progress: bool = True,
          results_dir: Path = Path("results"), runs_dir: Path = Path("runs"), extra: dict | None = None,
          resume: bool = False, checkpoint_every: int = CHECKPOINT_EVERY, overwrite: bool = False) -> Path | None:
    """Fit, test (on the best-validation checkpoint, as the papers report) and write the result file. ``resume``:
    go on from the run's ``last.ckpt`` (the same result as an uninterrupted run); ``checkpoint_every``: also write
    ``last.ckpt`` every that many training steps inside an epoch (0: at epoch ends only); ``overwrite``: replace a
    finished result of another config (``common.results.Replacing``)."""
    import lightning as L
    import torch

    from common.checkpoint import load_weights, resolve_init, resume_checkpoint
    from common.checkpoint import run_dir as run_folder
    from common.data import ClassificationData, data_root
    from common.module import Classifier

    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
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

    if cfg.quant.calibrate_epochs and resume_ckpt is None:  # a resumed run has the calibrated state in its checkpoint
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

    validate = cfg.data.val_size > 0 and cfg.trainer.limit_val_batches != 0
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
            result = _result(paper, name, cfg, module.model, None, results_dir, init_ckpt, time.time() - start,
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

    best_epoch = None
    if validate and curve.rows:
        best_epoch = min(curve.rows, key=lambda r: r.get("val_err", float("inf")))["epoch"]
    metrics = {
        **_errors(tested),
        "best_val_err": pct(ckpt.best_model_score) if validate and ckpt.best_model_score is not None else None,
        "tested_epoch": best_epoch if use_best else trainer.current_epoch - 1,
    }
    result = _result(paper, name, cfg, module.model, metrics, results_dir, init_ckpt, wall, **(extra or {}),
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


def _result(paper: str, name: str, cfg: Config, model, metrics: dict | None, results_dir: Path, init_ckpt: Path | None,
            wall: float, status: str = "ok", **rest) -> dict:
    """The result file's content (one schema for trained and post-training-quantized networks). ``status``: "ok", or
    "diverged" (then ``metrics`` is null and ``diverged_at`` says where: 0-based epoch, global step, the loss)."""
    from common.module import bits_summary, parameter_bits

    bits, per_layer = bits_summary(model)
    return {
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


def post_train(paper: str, name: str, cfg: Config, source: str | None, *, finetune: bool = False, data_dir: str | None = None,
               wandb: str = "offline", progress: bool = True, results_dir: Path = Path("results"),
               runs_dir: Path = Path("runs"), resume: bool = False, checkpoint_every: int = CHECKPOINT_EVERY,
               overwrite: bool = False) -> Path:
    """Post-training quantization of the float network in ``source`` by the config's ``ptq`` method: choose the
    per-layer formats, test without fine-tuning and write the result file; with ``finetune``, then train the
    quantized network from the float weights (the config's optim and trainer) and write ``<config>_finetuned``."""
    import itertools

    import lightning as L

    from common.checkpoint import load_weights, resolve_init
    from common.config import validate
    from common.data import ClassificationData, data_root
    from common.module import Classifier
    from common.ptq import Calibration, build_ptq

    if cfg.ptq is None:
        raise UserError(f"--config {name}: no 'ptq' section (the post-training method) in this config")
    source = source or cfg.init_from
    if not source:
        raise UserError(f"--from: which float network? (give --from, or init_from in config {name})")
    data = ClassificationData(cfg.data, data_root(data_dir))
    data.check_available()
    replacing = Replacing(result_path(results_dir, paper, name, cfg.seed), cfg, overwrite)
    if finetune:  # (the fine-tuned run's is checked again by train, with its chosen formats)
        Replacing(result_path(results_dir, paper, f"{name}_finetuned", cfg.seed), cfg, overwrite)
    src = resolve_init(source, paper, cfg.seed, results_dir, runs_dir)
    if finetune and resume:
        from common.checkpoint import resume_checkpoint

        resume_checkpoint(runs_dir, paper, f"{name}_finetuned", cfg.seed, None)  # (its config: checked by train)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    float_cfg = validate({**cfg.to_dict(), "quant": {"rules": []}, "init_from": None})
    float_net = Classifier(float_cfg.to_dict(), data.shape, data.num_classes).model
    load_weights(float_net, src)  # fails before anything is written
    process_settings()

    start = time.time()
    data.setup()
    calib = list(itertools.islice(iter(data.calibration_dataloader()), cfg.ptq_batches))
    val = data.val_dataloader() or data.test_dataloader()
    cal = Calibration(float_net, calib, val)
    rules, report = build_ptq(cfg.ptq).choose(cal)
    report = {"method": cfg.ptq, "float_val_err": round(cal.error(), 4), "calibration_batches": len(calib),
              "selected_on": "validation" if data.val_dataloader() else "test", **report}
    quant_cfg = validate({**cfg.to_dict(), "quant": {**cfg.to_dict()["quant"], "rules": rules}, "init_from": str(src)})
    quantized = cal.quantized(rules)
    metrics = {**_errors(test_metrics(quantized, data.test_dataloader())),
               "best_val_err": round(cal.error(rules), 4), "tested_epoch": None}
    result = _result(paper, name, quant_cfg, quantized, metrics, results_dir, src, time.time() - start,
                     ptq=report, epochs=0, checkpoint=None, curve=[])
    from common.checkpoint import run_dir as run_folder

    path = replacing.path
    with run_lock(run_folder(runs_dir, paper, name, cfg.seed), f"{paper}/{name} seed {cfg.seed}"):
        write_json_atomic(path, result)
    said = replacing.compare(result)
    if said:
        print(said)
    if not finetune:
        return path
    return train(paper, f"{name}_finetuned", quant_cfg, data_dir=data_dir, wandb=wandb, progress=progress,
                 results_dir=results_dir, runs_dir=runs_dir, resume=resume, checkpoint_every=checkpoint_every,
                 overwrite=overwrite,
                 extra={"ptq": report, "before_finetune": metrics, "quantized_result": str(path)})


def test_metrics(model, loader) -> dict:
    """Top-1/top-5 error (fractions) and mean cross-entropy of ``model`` over ``loader``."""
    import torch
    import torch.nn.functional as F

    from common.module import topk_errors

    model.eval()
    n, loss, e1, e5 = 0, 0.0, 0.0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            errs = topk_errors(out, y, (1, 5))
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            e1, e5, n = e1 + float(errs[1]) * len(y), e5 + float(errs[5]) * len(y), n + len(y)
    return {"test_err": e1 / n, "test_err_top5": e5 / n, "test_loss": loss / n}


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
    kw = {**_trainer_kwargs(cfg), "max_epochs": cfg.quant.calibrate_epochs, "limit_val_batches": 0}
    L.Trainer(**kw, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
              enable_model_summary=False).fit(module, datamodule=data)
    for q in quantizers:
        q.calibrating = False
    settled = {k: v for k, v in module.state_dict().items() if is_quantizer_key(k)}
    module.load_state_dict({**initial, **settled})


class EpochCurve(Callback):
    """Per-epoch training curve (train loss and error, validation error, learning rate) for the result file; saved in
    checkpoints, so a resumed run's curve is the whole run's. With ``say`` (no progress bar: a log, CI), each epoch
    is also printed as one line."""

    def __init__(self, say: bool = False):
        self.rows: list[dict] = []
        self._lr = None
        self._fitting = False
        self.say, self._started = say, 0.0

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._fitting = stage == "fit"

    def state_dict(self) -> dict:
        return {"rows": self.rows, "lr": self._lr}

    def load_state_dict(self, state: dict) -> None:
        if self._fitting:  # resuming (testing a checkpoint leaves the curve alone)
            self.rows, self._lr = list(state["rows"]), state["lr"]

    def on_train_epoch_start(self, trainer, pl_module):
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._started = time.time()

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
            print("  ".join(parts + [f"lr {self._lr:.3g}", f"{time.time() - self._started:.0f} s"]), flush=True)


def evaluate(ckpt_path: str, data_dir: str | None) -> dict:
    """Test a checkpoint written by ``train``; returns its metrics (errors in percent)."""
    import lightning as L
    import torch

    from common.checkpoint import READ_ERRORS, read_checkpoint
    from common.data import ClassificationData, data_root
    from common.module import Classifier

    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, "--ckpt")  # data only: refused before anything in it could run
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise UserError(f"--ckpt {ckpt_path}: not a checkpoint of this suite's train command (no config)")
    try:
        module = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as e:
        raise UserError(f"--ckpt {ckpt_path}: not a readable checkpoint of this suite ({type(e).__name__})") from None
    data = ClassificationData(module.cfg.data, data_root(data_dir))
    data.check_available()
    trainer = L.Trainer(accelerator=module.cfg.trainer.accelerator, devices=1, logger=False,
                        enable_progress_bar=sys.stderr.isatty())
    with torch.no_grad():
        out = trainer.test(module, datamodule=data, verbose=False)[0]
    return {"checkpoint": str(path), **_errors(out), "errors_in": "percent"}


def export(paper: str, args) -> int:
    """``export``: the packed file of a trained network (``engine.export``), with its size against float32."""
    from common.checkpoint import resolve_init
    from engine import export_checkpoint

    if args.ckpt:
        ckpt = Path(args.ckpt)
    else:
        if not 0 <= args.seed < 2**32:
            raise UserError(f"--seed: expected a value in 0..{2**32 - 1}, got {args.seed}")
        ckpt = resolve_init(args.config, paper, args.seed, Path(args.results_dir), Path(args.runs_dir))
    out = Path(args.out) if args.out else ckpt.with_name("model.lowbit")
    if out.is_dir():
        raise UserError(f"--out {out}: a folder, expected the file to write")
    check_writable(out.parent, "--out")
    sizes = export_checkpoint(ckpt, out)
    print(f"wrote {out}: {sizes.packed_bytes:,} bytes, {sizes.float32_bytes / sizes.packed_bytes:.1f}x smaller than "
          f"the float32 state_dict ({sizes.float32_bytes:,} bytes); run it with: python -m engine test --model {out}")
    return 0


def pct(err) -> float:
    """A fraction as a percentage, rounded to 4 decimals (float32 metrics carry noise below that)."""
    return round(100 * float(err), 4)


def _errors(tested: dict) -> dict:
    out = {"test_top1_err": pct(tested["test_err"])}
    if "test_err_top5" in tested:
        out["test_top5_err"] = pct(tested["test_err_top5"])
    out["test_loss"] = round(float(tested["test_loss"]), 6)
    return out
