"""The sweep's submitit executors (``--executor slurm`` / ``submitit-local``), on a tiny plan run by submitit's
LocalExecutor: each job's command (``Job.argv``, patched here to a short python script) either writes its result file,
exits 0 without writing it, or fails; a job that starts from another runs only after that one succeeded."""
import importlib.util
import os
import sys
import time

import pytest

from leaderboard import sweep

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install -e '.[cluster]')")

# argv: results dir, this job's config, what it does (ok | noresult | exit1), the config it starts from (or -)
SCRIPT = """
import json, os, pathlib, sys
results, me, mode, dep = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def note(what):
    with open(results / "order.txt", "a") as f:
        f.write(f"{what} {me}\\n")
results.mkdir(parents=True, exist_ok=True)
note("start")
print("hello from", me)
if dep != "-" and not (results / "toy" / dep / "seed1.json").is_file():
    sys.exit(3)
if mode == "ok":
    out = results / "toy" / me / "seed1.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps({"status": "ok"}))
    os.replace(out.with_suffix(".tmp"), out)
note("end")
sys.exit(1 if mode == "exit1" else 0)
"""


def _tiny_plan(monkeypatch, modes: dict[str, str], needs: dict[str, str]):
    """Patches the sweep to plan one train run (seed 1) of paper 'toy' per config of ``modes``."""
    jobs = [sweep.Job("toy", "train", name, 1, [("toy", needs[name])] if name in needs else [], cost=1.0)
            for name in modes]
    monkeypatch.setattr(sweep, "plan", lambda scale, seeds, papers, match, results_dir, runs_dir=None: [(j, False, "no result")
                                                                                          for j in jobs])
    monkeypatch.setattr(sweep.Job, "argv", lambda self, results_dir, runs_dir: [
        sys.executable, "-c", SCRIPT, str(results_dir), self.config, modes[self.config], needs.get(self.config, "-")])


def _sweep(tmp_path, *extra):
    return sweep.main(["--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                       "--slurm-log-dir", str(tmp_path / "slurm"), "--threads", "1", *extra])


def _status(out: str, config: str) -> str:
    return next(line for line in out.splitlines() if f" train {config} seed 1: " in line).split(": ", 1)[1]


@needs_submitit
def test_submitit_local_runs_every_job_and_fails_one_without_its_result(tmp_path, monkeypatch, capsys):
    _tiny_plan(monkeypatch, {"a": "ok", "b": "noresult", "c": "exit1", "stale": "noresult"}, {})
    stale = tmp_path / "results" / "toy" / "stale" / "seed1.json"  # an old result the run does not rewrite
    stale.parent.mkdir(parents=True)
    stale.write_text('{"status": "ok"}')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert _sweep(tmp_path, "--executor", "submitit-local", "--jobs", "4") == 1
    out = capsys.readouterr().out
    assert _status(out, "a").startswith("ok in ")
    assert _status(out, "b").startswith("FAILED (exit 0 but no result")
    assert _status(out, "stale").startswith("FAILED (exit 0 but no result")
    assert _status(out, "c").startswith("FAILED (exit 1, log ")
    assert "sweep finished: 1 ran, 3 failed" in out
    assert (tmp_path / "results" / "toy" / "a" / "seed1.json").is_file()
    assert "hello from c" in (tmp_path / "slurm" / "toy-train-c-seed1.log").read_text()  # the run's own log


@needs_submitit
def test_submitit_local_starts_a_job_after_what_it_needs_and_skips_it_when_that_failed(tmp_path, monkeypatch, capsys):
    _tiny_plan(monkeypatch, {"float": "ok", "ptq": "ok", "bad": "exit1", "after_bad": "ok"},
               {"ptq": "float", "after_bad": "bad"})
    assert _sweep(tmp_path, "--executor", "submitit-local", "--jobs", "4") == 1
    out = capsys.readouterr().out
    assert _status(out, "float").startswith("ok") and _status(out, "ptq").startswith("ok")
    assert _status(out, "after_bad") == "skipped (what it starts from failed)"
    order = (tmp_path / "results" / "order.txt").read_text().split("\n")
    assert order.index("end float") < order.index("start ptq")
    assert "start after_bad" not in order
    assert "sweep finished: 2 ran, 2 failed" in out


@needs_submitit
def test_submitit_local_sweep_that_succeeds_exits_0(tmp_path, monkeypatch, capsys):
    _tiny_plan(monkeypatch, {"float": "ok", "ptq": "ok"}, {"ptq": "float"})
    assert _sweep(tmp_path, "--executor", "submitit-local") == 0  # one at a time by default, like local
    assert "sweep finished: 2 ran, 0 failed" in capsys.readouterr().out


def test_a_submitit_executor_without_submitit_is_one_error_line(tmp_path, monkeypatch, capsys):
    _tiny_plan(monkeypatch, {"a": "ok"}, {})
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    for executor in ("slurm", "submitit-local"):
        assert _sweep(tmp_path, "--executor", executor) == 2
        out, err = capsys.readouterr()
        assert err == f'error: --executor {executor} needs submitit (pip install -e ".[cluster]")\n' and not out
    assert _sweep(tmp_path, "--executor", "slurm", "--dry-run") == 0  # a dry run submits nothing: no need for it
    assert "run  toy train a seed 1" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_the_dry_run_prints_the_same_plan_whatever_the_executor(tmp_path, capsys):
    outputs = []
    for executor in ("local", "slurm", "submitit-local"):
        assert _sweep(tmp_path, "--papers", "sung", "--seeds", "1", "--jobs", "2", "--dry-run",
                      "--executor", executor) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and "run  sung finetune mnist_cpu_w64_b2 seed 1" in outputs[0]


def test_a_config_without_results_is_estimated_from_its_setting_and_kind(tmp_path):
    """A new config's run time: the mean of the same setting's runs of the same kind (trained or only quantized)."""
    import json as _json

    def put(paper, config, wall, epochs):
        folder = tmp_path / paper / config
        folder.mkdir(parents=True)
        (folder / "seed1.json").write_text(_json.dumps({"wall_time_s": wall, "epochs": epochs}))

    put("float", "cifar10_vggsmall", 2000.0, 15)
    put("bnn", "cifar10_vggsmall", 3000.0, 15)
    put("sung", "cifar10_vggsmall_b8", 60.0, 0)
    put("bnn", "mnist_cpu", 100.0, 10)
    assert sweep.estimate(tmp_path / "bnn" / "cifar10_vggsmall") == 3000.0  # its own results first
    assert sweep.estimate(tmp_path / "twn" / "cifar10_vggsmall_new") == 2500.0
    assert sweep.estimate(tmp_path / "sung" / "cifar10_vggsmall_b3", trains=False) == 60.0
    assert sweep.estimate(tmp_path / "twn" / "svhn_new") == sweep.DEFAULT_COST_S
