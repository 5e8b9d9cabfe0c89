"""``python -m papers.<name> train|quantize|finetune|test|export|configs``: the command line, written once for
every paper. It parses and checks the arguments, then calls the verb (``common.training``, ``common.posttrain``,
``common.evaluation``, ``engine.export``) and turns its outcome into an exit status.

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
import json
import signal
import sys
from pathlib import Path

from common.checkpoint import last_checkpoint
from common.checks import check_processes, check_trainer, check_wandb_key, check_writable
from common.config import list_configs, load_config
from common.errors import Diverged, UserError
from common.papers import configs_dir
from common.papers import package as paper_package
from common.results import git_commit
from common.training import CHECKPOINT_EVERY

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def _parser(paper: str, configs_dir: Path, default_config: str) -> argparse.ArgumentParser:
    configs = list_configs(configs_dir)
    width = max(map(len, configs), default=0)
    listing = "\n".join(f"  {n:<{width}}  {d}" for n, d in configs.items())
    p = argparse.ArgumentParser(prog=f"python -m papers.{paper}", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=(paper_package(paper).__doc__ or "").strip(),
                                epilog=f"configs (papers/{paper}/configs/):\n{listing}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, test on the test set and write results/<paper>/<config>/seed<N>.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=f"configs:\n{listing}")
    _run_arguments(t, default_config)
    t.add_argument("--init-from", default=None, metavar="CKPT|RESULT|CONFIG",
                   help="fine-tune: start from this checkpoint, result file's checkpoint, or config's result "
                        "for the same seed (sets the config key init_from)")
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
        _run_arguments(q, default_config)
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


def _run_arguments(p: argparse.ArgumentParser, default_config: str) -> None:
    """The arguments of every command that runs a config (train, quantize, finetune)."""
    p.add_argument("--config", default=default_config, help=f"config name or YAML path (default: {default_config})")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set trainer.max_epochs=5 optim.lr_start=0.01")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 1)")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $LOWBIT_DATA, else ./data)")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline",
                   help="Weights & Biases logging (default offline: 'wandb sync' the run folder later)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show the progress bar (default: when the output is a terminal)")
    p.add_argument("--results-dir", default="results", help="where result files go (default: results)")
    p.add_argument("--runs-dir", default="runs", help="where checkpoints and logs go (default: runs)")


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


def main(paper: str, default_config: str, argv: list[str] | None = None) -> int:
    try:
        package = paper_package(paper)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    folder = configs_dir(paper)
    args = _parser(paper, folder, default_config).parse_args(argv)
    try:
        if args.command == "configs":
            for name, desc in list_configs(folder).items():
                print(f"{name}: {desc}")
            return 0
        if args.command == "test":
            from common.evaluation import evaluate

            print(json.dumps(evaluate(args.ckpt, args.data_dir), indent=2))
            return 0
        if args.command == "export":
            return export(paper, args)
        init = getattr(args, "init_from", None)
        overrides = args.overrides + ([f"init_from={json.dumps(init)}"] if init else [])
        name, cfg = load_config(args.config, folder, overrides, args.seed)
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
        git_commit()  # the result names the commit the run started from
        with _interrupts() as stopped:
            try:
                if args.command in ("quantize", "finetune"):
                    from common.posttrain import post_train

                    path = post_train(paper, name, cfg, args.source, finetune=args.command == "finetune",
                                      data_dir=args.data_dir, wandb=args.wandb, progress=progress, **dirs, **run)
                else:
                    from common.training import train

                    path = train(paper, name, cfg, data_dir=args.data_dir, wandb=args.wandb, progress=progress,
                                 **dirs, **run)
            except BaseException:  # a fit that got a signal: Lightning's way out (SystemExit, KeyboardInterrupt), or
                if not stopped:  # whatever the interrupted operation raised (a checkpoint write cut short: the
                    raise  # atomic write keeps the previous file)
                last = last_checkpoint(Path(args.runs_dir), paper,
                                       f"{name}_finetuned" if args.command == "finetune" else name, cfg.seed)
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
