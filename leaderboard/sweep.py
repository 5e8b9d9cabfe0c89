"""``python -m leaderboard.sweep --scale cpu``: run every paper's configs of one scale (and the shared setting), for
the given seeds, skipping runs whose result file already matches the config.

A result matches when its stored config, validated by today's schema, equals the config as it is now (so a config
edit reruns it, a new schema field with a default does not); for post-training results the chosen per-layer
formats and the resolved checkpoint are left out of the comparison. Runs start cheapest first (estimated from the
wall time of existing results), each once what it starts from (``init_from``) is done; ``--jobs N`` runs N at a
time with one thread each. Results are written atomically, so a sweep can be stopped and restarted at any point.
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from leaderboard.claims import PAPERS, ROOT

DEFAULT_COST_S = 300.0


@dataclass
class Job:
    paper: str
    command: str  # train | quantize | finetune
    config: str
    seed: int
    needs: list[tuple[str, str]] = field(default_factory=list)  # (paper, result config name) of the same seed
    cost: float = DEFAULT_COST_S

    @property
    def output(self) -> str:
        return f"{self.config}_finetuned" if self.command == "finetune" else self.config

    @property
    def key(self) -> tuple[str, str, int]:
        return self.paper, self.output, self.seed

    def argv(self, results_dir: Path, runs_dir: Path) -> list[str]:
        return [sys.executable, "-m", f"papers.{self.paper}", self.command, "--config", self.config, "--seed",
                str(self.seed), "--no-progress", "--results-dir", str(results_dir), "--runs-dir", str(runs_dir)]


def up_to_date(result_file: Path, cfg) -> tuple[bool, str]:
    from common.results import config_difference, read_result

    if not result_file.is_file():
        return False, "no result"
    data = read_result(result_file)
    if data is None:
        return False, "unreadable result"
    if data.get("status") != "ok":
        return False, f"status {data.get('status')!r}"
    if data.get("config_hash") == cfg.hash():
        return True, "same hash"
    diff = config_difference(data.get("config") or {}, cfg)
    if diff and diff.startswith("its config is no longer valid"):
        return False, f"stored config no longer valid"
    return not diff, "same config" if not diff else "config changed"


def plan(scale: str, seeds: list[int], papers: list[str], match: str, results_dir: Path) -> list[tuple[Job, bool, str]]:
    from common.config import list_configs, load_config

    items = []
    for paper in papers:
        package = importlib.import_module(f"papers.{paper}")
        finetune = set(getattr(package, "FINETUNE", ()))
        folder = ROOT / "papers" / paper / "configs"
        for name in list_configs(folder):
            if not fnmatch.fnmatch(name, match):
                continue
            for seed in seeds:
                _, cfg = load_config(name, folder, seed=seed)
                if cfg.scale != scale:
                    continue
                needs = []
                if cfg.init_from and not cfg.init_from.endswith((".ckpt", ".json")):
                    owner, _, other = cfg.init_from.rpartition("/")
                    needs.append((owner or paper, other))
                commands = ["quantize"] + (["finetune"] if name in finetune else []) if cfg.ptq else ["train"]
                for command in commands:
                    job = Job(paper, command, name, seed, list(needs))
                    if command == "finetune":
                        job.needs.append((paper, name))
                    result = results_dir / paper / job.output / f"seed{seed}.json"
                    ok, why = up_to_date(result, cfg)
                    job.cost = estimate(results_dir / paper / job.output)
                    items.append((job, ok, why))
    return items


def estimate(folder: Path) -> float:
    """Seconds: the mean wall time of the existing results of this config, else a default."""
    times = []
    for f in folder.glob("seed*.json"):
        try:
            times.append(float(json.loads(f.read_text())["wall_time_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return sum(times) / len(times) if times else DEFAULT_COST_S


def run(jobs: list[Job], workers: int, threads: int, results_dir: Path, runs_dir: Path, log_dir: Path) -> int:
    """Run ``jobs`` cheapest first, each once its dependencies are done; returns the number of failures."""
    pending = sorted(jobs, key=lambda j: (j.cost, j.key))
    waiting_for = {j.key for j in jobs}
    running: list[tuple[Job, subprocess.Popen, float]] = []
    failed: set = set()
    done = 0
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    log_dir.mkdir(parents=True, exist_ok=True)
    total = len(pending)
    while pending or running:
        for job, proc, start in list(running):
            if proc.poll() is None:
                continue
            running.remove((job, proc, start))
            waiting_for.discard(job.key)
            done += 1
            result = results_dir / job.paper / job.output / f"seed{job.seed}.json"
            wrote = result.is_file() and result.stat().st_mtime >= start - 1
            if proc.returncode == 0 and not wrote:  # a run that ends without its result failed, whatever it says
                status = f"FAILED (exit 0 but no result {result}, log {log_dir / _log_name(job)})"
            else:
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, log {log_dir / _log_name(job)})"
            if status != "ok":
                failed.add(job.key)
            print(f"[{done}/{total}] {job.paper} {job.command} {job.config} seed {job.seed}: {status} "
                  f"in {time.time() - start:.0f}s", flush=True)
        for job in list(pending):
            if len(running) >= workers:
                break
            deps = [(p, c, job.seed) for p, c in job.needs]
            if any(d in failed for d in deps):
                pending.remove(job)
                failed.add(job.key)
                done += 1
                print(f"[{done}/{total}] {job.paper} {job.command} {job.config} seed {job.seed}: skipped "
                      "(what it starts from failed)", flush=True)
                continue
            if any(d in waiting_for for d in deps):
                continue
            pending.remove(job)
            with open(log_dir / _log_name(job), "w") as log:
                proc = subprocess.Popen(job.argv(results_dir, runs_dir), cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
            running.append((job, proc, time.time()))
        time.sleep(0.5)
    return len(failed)


def _log_name(job: Job) -> str:
    return f"{job.paper}-{job.command}-{job.config}-seed{job.seed}.log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["cpu", "paper"], default="cpu", help="which configs (default: cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="default: 1 2 3")
    parser.add_argument("--papers", nargs="+", choices=("float",) + PAPERS, default=("float",) + PAPERS)
    parser.add_argument("--match", default="*", help="only configs whose name matches this glob (e.g. 'mnist_lenet5*')")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1) or any(not 0 <= s < 2**32 for s in args.seeds):
        print("error: --jobs and --threads must be >= 1 and --seeds in 0..2^32-1", file=sys.stderr)
        return 2
    results_dir, runs_dir = Path(args.results_dir).resolve(), Path(args.runs_dir).resolve()
    try:
        items = plan(args.scale, args.seeds, list(args.papers), args.match, results_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = [job for job, ok, _ in items if not ok]
    for job, ok, why in items:
        if args.dry_run or not ok:
            print(f"{'skip' if ok else 'run '} {job.paper} {job.command} {job.config} seed {job.seed} ({why}, "
                  f"~{job.cost / 60:.0f} min)")
    print(f"{len(items)} runs at scale {args.scale}: {len(items) - len(todo)} up to date, {len(todo)} to run "
          f"(~{sum(j.cost for j in todo) / 60 / args.jobs:.0f} min with {args.jobs} at a time)", flush=True)
    if args.dry_run or not todo:
        return 0
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    failures = run(todo, args.jobs, threads, results_dir, runs_dir, runs_dir / "sweep-logs")
    print(f"sweep finished: {len(todo) - failures} ran, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
