"""``python -m leaderboard.sweep --scale cpu``: run every paper's configs of one scale (and the shared setting), for
the given seeds, skipping runs whose result file already matches the config.

A result matches when its stored config, validated by today's schema, equals the config as it is now (so a config
edit reruns it, a new schema field with a default does not); for post-training results the chosen per-layer
formats and the resolved checkpoint are left out of the comparison. Runs start cheapest first (estimated from the
wall time of existing results), each once what it starts from (``init_from``) is done; ``--jobs N`` runs N at a
time with one thread each. Results are written atomically, so a sweep can be stopped and restarted at any point.

``--executor slurm`` hands each run to a SLURM cluster as one job (through submitit, ``pip install -e ".[cluster]"``):
the same command line, result files, skip-if-done and failure check as locally; a run that starts from another is
submitted once that one succeeded. ``--executor submitit-local`` does the same with local processes.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.errors import UserError
from common.papers import ALL, configs_dir
from common.papers import package as paper_package
from leaderboard.claims import ROOT

DEFAULT_COST_S = 300.0


@dataclass
class Job:
    paper: str
    command: str  # train | quantize | finetune
    config: str
    seed: int
    needs: list[tuple[str, str]] = field(default_factory=list)  # (paper, result config name) of the same seed
    cost: float = DEFAULT_COST_S
    resume: bool = False  # go on from the run's last.ckpt (a run of the same config that was stopped)

    @property
    def output(self) -> str:
        return f"{self.config}_finetuned" if self.command == "finetune" else self.config

    @property
    def key(self) -> tuple[str, str, int]:
        return self.paper, self.output, self.seed

    def argv(self, results_dir: Path, runs_dir: Path) -> list[str]:
        return [sys.executable, "-m", f"papers.{self.paper}", self.command, "--config", self.config, "--seed",
                str(self.seed), "--no-progress", "--results-dir", str(results_dir), "--runs-dir", str(runs_dir),
                *(["--resume"] if self.resume else [])]


def up_to_date(result_file: Path, cfg) -> tuple[bool, str]:
    from common.results import config_difference, read_result, stored_config_valid

    if not result_file.is_file():
        return False, "no result"
    data = read_result(result_file)
    if data is None:
        return False, "unreadable result"
    if data.get("status") != "ok":
        return False, f"status {data.get('status')!r}"
    if data.get("config_hash") == cfg.hash():
        return True, "same hash"
    stored = data.get("config") or {}
    if not stored_config_valid(stored):
        return False, "stored config no longer valid"
    diff = config_difference(stored, cfg)
    return not diff, "same config" if not diff else "config changed"


def resumable(runs_dir: Path, job: Job, cfg) -> bool:
    """Whether a training run left a ``last.ckpt`` of this same config (stopped: killed, or the sweep ended), so
    that the run goes on from it rather than from the start; the result is the same either way."""
    from common.checkpoint import resume_checkpoint

    if job.command != "train":
        return False
    try:
        resume_checkpoint(runs_dir, job.paper, job.output, job.seed, cfg.to_dict())
    except UserError:  # another config's, or unreadable: start afresh
        return False
    return True


def plan(scale: str, seeds: list[int], papers: list[str], match: str, results_dir: Path,
         runs_dir: Path | None = None) -> list[tuple[Job, bool, str]]:
    from common.config import list_configs, load_config

    items = []
    for paper in papers:
        package = paper_package(paper)
        finetune = set(getattr(package, "FINETUNE", ()))
        folder = configs_dir(paper)
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
                    job.cost = estimate(results_dir / paper / job.output, trains=command != "quantize")
                    if not ok and runs_dir is not None and resumable(runs_dir, job, cfg):
                        job.resume, why = True, f"{why}; resumes from its last.ckpt"
                    items.append((job, ok, why))
    return items


def estimate(folder: Path, trains: bool = True) -> float:
    """Seconds: the mean wall time of the existing results of this config; without any, of the runs of the same
    kind (trained, or only quantized) of every config of the same setting (the first two parts of the name:
    ``cifar10_vggsmall``, ``mnist_cpu``), across papers; else a default."""
    times = _wall_times(folder.glob("seed*.json"))
    if not times:
        setting = "_".join(folder.name.split("_")[:2])
        times = _wall_times(folder.parent.parent.glob(f"*/{setting}*/seed*.json"), trains)
    return sum(times) / len(times) if times else DEFAULT_COST_S


def _wall_times(files, trains: bool | None = None) -> list[float]:
    times = []
    for f in files:
        try:
            data = json.loads(f.read_text())
            if trains is None or (data.get("epochs") != 0) == trains:
                times.append(float(data["wall_time_s"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    return times


def run_status(job: Job, returncode: int | str, start: float, results_dir: Path, log: Path) -> str:
    """``"ok"``, or why the run failed: a non-zero exit (or, as text, why it did not end normally), or no result
    file (re)written since ``start`` -- a run that ends without its result failed, whatever it says."""
    result = results_dir / job.paper / job.output / f"seed{job.seed}.json"
    if returncode != 0:
        return f"FAILED ({returncode if isinstance(returncode, str) else f'exit {returncode}'}, log {log})"
    if not (result.is_file() and result.stat().st_mtime >= start - 1):
        return f"FAILED (exit 0 but no result {result}, log {log})"
    return "ok"


def run(jobs: list[Job], workers: int, threads: int | None, results_dir: Path, runs_dir: Path, log_dir: Path,
        launch: Callable | None = None) -> int:
    """Run ``jobs`` cheapest first, each once its dependencies are done; returns the number of failures.

    ``launch(job, argv, log)`` starts one run and returns a handle whose ``poll()`` is None while it runs, then its
    exit code (or, as text, why it did not end normally); by default a local process with ``threads`` threads."""
    if launch is None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "WANDB_MODE": "disabled"}

        def launch(job: Job, argv: list[str], log: Path):
            with open(log, "w") as out:
                return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    pending = sorted(jobs, key=lambda j: (j.cost, j.key))
    waiting_for = {j.key for j in jobs}
    running: list[tuple[Job, object, float]] = []
    failed: set = set()
    done = 0
    log_dir.mkdir(parents=True, exist_ok=True)
    total = len(pending)
    try:
        while pending or running:
            for job, handle, start in list(running):
                returncode = handle.poll()
                if returncode is None:
                    continue
                running.remove((job, handle, start))
                waiting_for.discard(job.key)
                done += 1
                status = run_status(job, returncode, start, results_dir, log_dir / _log_name(job))
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
                start = time.time()
                running.append((job, launch(job, job.argv(results_dir, runs_dir), log_dir / _log_name(job)), start))
            time.sleep(0.5)
    except KeyboardInterrupt:  # local runs get the terminal's SIGINT themselves; cluster jobs are cancelled here
        for _, handle, _ in running:
            if hasattr(handle, "cancel"):
                handle.cancel()
        raise
    return len(failed)


# --- submitit (SLURM) ---------------------------------------------------------------------------------------------

def run_logged(argv: list[str], cwd: str, env: dict[str, str], log: str) -> int:
    """What a submitit job runs (on its node): the run's command line, its output to ``log``; returns its exit code."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT).returncode


class _SubmititRun:
    """A submitit job as ``run`` polls it."""

    def __init__(self, job=None, error: str | None = None):
        self.job, self.error = job, error

    def poll(self) -> int | str | None:
        if self.error is not None:
            return self.error
        if not self.job.done():
            return None
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return self.job.result()
        except (FailedJobError, UncompletedJobError, OSError) as err:  # killed, timed out...: submitit's log says why
            return f"submitit job {self.job.job_id} {self.job.state}: {type(err).__name__}, see {self.job.paths.stderr}"

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel(check=False)


def submitit_launcher(executor, env: dict[str, str]) -> Callable:
    """A ``launch`` for ``run`` that submits each run as one job of a submitit executor."""

    def launch(job: Job, argv: list[str], log: Path) -> _SubmititRun:
        from submitit.core.utils import FailedSubmissionError

        try:
            executor.update_parameters(name=f"{job.paper}-{job.command}-{job.config}-seed{job.seed}")
            return _SubmititRun(executor.submit(run_logged, argv, str(ROOT), env, str(log)))
        except (FailedSubmissionError, subprocess.CalledProcessError, OSError, RuntimeError) as err:  # sbatch refused
            return _SubmititRun(error=f"not submitted: {type(err).__name__}: {err}".replace("\n", " "))

    return launch


def make_executor(args, log_dir: Path):
    """The submitit executor ``--executor`` asks for, or an error line (submitit missing, no SLURM here...)."""
    try:
        import submitit
    except ImportError:
        return f'--executor {args.executor} needs submitit (pip install -e ".[cluster]")'
    try:
        if args.executor == "submitit-local":
            executor = submitit.LocalExecutor(folder=log_dir)
            executor.update_parameters(timeout_min=args.slurm_time_min, gpus_per_node=args.slurm_gpus_per_job)
        else:
            executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm")
            params = {"timeout_min": args.slurm_time_min, "gpus_per_node": args.slurm_gpus_per_job, "nodes": 1,
                      "tasks_per_node": 1}
            if args.slurm_cpus_per_job:
                params["cpus_per_task"] = args.slurm_cpus_per_job
            if args.slurm_partition:
                params["slurm_partition"] = args.slurm_partition
            executor.update_parameters(**params)
    except (RuntimeError, OSError, ValueError) as err:  # e.g. "Could not detect srun, are you indeed on a slurm cluster?"
        return f"--executor {args.executor}: {err}"
    return executor


def _log_name(job: Job) -> str:
    return f"{job.paper}-{job.command}-{job.config}-seed{job.seed}.log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["cpu", "paper"], default="cpu", help="which configs (default: cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="default: 1 2 3")
    parser.add_argument("--papers", nargs="+", choices=ALL, default=ALL)
    parser.add_argument("--match", default="*", help="only configs whose name matches this glob (e.g. 'mnist_lenet5*')")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at a time (default 1; with --executor slurm: all, SLURM queues them)")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (default: cores / jobs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--results-dir", default=str(ROOT / "results"))
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    cluster = parser.add_argument_group("cluster", "run each run as one SLURM job, through submitit")
    cluster.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                         help="local processes (default), SLURM jobs, or submitit's local processes (for testing)")
    cluster.add_argument("--slurm-partition", default=None, help="default: the cluster's")
    cluster.add_argument("--slurm-gpus-per-job", type=int, default=1, help="default 1")
    cluster.add_argument("--slurm-time-min", type=int, default=240, help="time limit of a job (default 240)")
    cluster.add_argument("--slurm-cpus-per-job", type=int, default=None,
                         help="default: the cluster's; also the run's threads unless --threads")
    cluster.add_argument("--slurm-log-dir", default=None, help="submitit's files and the runs' logs "
                         "(default: <runs-dir>/sweep-logs/slurm)")
    args = parser.parse_args(argv)
    if ((args.jobs is not None and args.jobs < 1) or (args.threads is not None and args.threads < 1)
            or any(not 0 <= s < 2**32 for s in args.seeds)):
        print("error: --jobs and --threads must be >= 1 and --seeds in 0..2^32-1", file=sys.stderr)
        return 2
    if (args.slurm_gpus_per_job < 0 or args.slurm_time_min < 1
            or (args.slurm_cpus_per_job is not None and args.slurm_cpus_per_job < 1)):
        print("error: --slurm-gpus-per-job must be >= 0, --slurm-time-min and --slurm-cpus-per-job >= 1",
              file=sys.stderr)
        return 2
    results_dir, runs_dir = Path(args.results_dir).resolve(), Path(args.runs_dir).resolve()
    executor = None
    if args.executor != "local" and not args.dry_run:
        log_dir = Path(args.slurm_log_dir).resolve() if args.slurm_log_dir else runs_dir / "sweep-logs" / "slurm"
        executor = make_executor(args, log_dir)
        if isinstance(executor, str):
            print(f"error: {executor}", file=sys.stderr)
            return 2
    try:
        items = plan(args.scale, args.seeds, list(args.papers), args.match, results_dir, runs_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = [job for job, ok, _ in items if not ok]
    jobs = args.jobs or (max(1, len(todo)) if args.executor == "slurm" else 1)
    for job, ok, why in items:
        if args.dry_run or not ok:
            print(f"{'skip' if ok else 'run '} {job.paper} {job.command} {job.config} seed {job.seed} ({why}, "
                  f"~{job.cost / 60:.0f} min)")
    print(f"{len(items)} runs at scale {args.scale}: {len(items) - len(todo)} up to date, {len(todo)} to run "
          f"(~{sum(j.cost for j in todo) / 60 / jobs:.0f} min with {jobs} at a time)", flush=True)
    if args.dry_run or not todo:
        return 0
    if executor is None:
        threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
        failures = run(todo, jobs, threads, results_dir, runs_dir, runs_dir / "sweep-logs")
    else:
        threads = args.threads or (args.slurm_cpus_per_job if args.executor == "slurm"
                                   else max(1, (os.cpu_count() or 1) // jobs))
        env = {"WANDB_MODE": "disabled"}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        failures = run(todo, jobs, threads, results_dir, runs_dir, log_dir, launch=submitit_launcher(executor, env))
    print(f"sweep finished: {len(todo) - failures} ran, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
