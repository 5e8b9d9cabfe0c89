"""Files from elsewhere are data, never code; results are never silently replaced; signals and bad input end a run
the way the README says (one line, the documented exit code, nothing written or replaced)."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.cli import EXIT_DIVERGED, EXIT_SIGTERM, EXIT_USER_ERROR, main
from test_train import smoke_overrides

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
CONFIG = "mnist_cpu_float"


class Payload:
    """What a crafted checkpoint carries: unpickling it creates ``marker`` (any code could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _crafted(path: Path, marker: Path, base: dict | None = None) -> Path:
    """A checkpoint file with a payload beside otherwise plausible content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(base or {"state_dict": {}}), "payload": Payload(marker)}, path)
    return path


def _train(tmp_path, *extra, sets=None, config=CONFIG) -> int:
    argv = ["train", "--config", config, "--wandb", "disabled", "--no-progress",
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"), *extra,
            "--set", *(sets if sets is not None else smoke_overrides(config))]
    return main("binaryconnect", "unused", argv)


def _one_error_line(capsys, *parts) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for part in parts:
        assert part in err, (part, err)
    return err


# ---------------------------------------------------------------- checkpoints are data

def test_the_payload_is_live_when_unpickled_in_full(tmp_path):
    """(So that the tests below, which find no marker, could have found one.)"""
    marker = tmp_path / "ran"
    torch.load(_crafted(tmp_path / "x.ckpt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("path", ["test", "init-from", "resume", "result file", "quantize --from", "lightning reader"])
def test_a_crafted_checkpoint_never_runs_on_any_load_path(tmp_path, monkeypatch, capsys, path):
    from common.checkpoint import AtomicCheckpointIO

    marker = tmp_path / "ran"
    monkeypatch.chdir(tmp_path)
    if path == "test":
        ckpt = _crafted(tmp_path / "x.ckpt", marker)
        assert main("binaryconnect", "unused", ["test", "--ckpt", str(ckpt)]) == EXIT_USER_ERROR
        _one_error_line(capsys, "not a checkpoint of this suite", "nothing in it was run")
    elif path == "init-from":
        ckpt = _crafted(tmp_path / "x.ckpt", marker)
        assert _train(tmp_path, "--init-from", str(ckpt)) == EXIT_USER_ERROR
        _one_error_line(capsys, "init_from", "nothing in it was run")
    elif path == "resume":  # a crafted last.ckpt left in the run's folder
        _crafted(tmp_path / "runs/binaryconnect" / CONFIG / "seed1/checkpoints/last.ckpt", marker)
        assert _train(tmp_path, "--resume") == EXIT_USER_ERROR
        _one_error_line(capsys, "--resume", "nothing in it was run")
    elif path == "result file":  # a shared result file naming a crafted checkpoint inside the runs folder
        ckpt = _crafted(tmp_path / "runs/evil/best.ckpt", marker)
        result = tmp_path / "shared.json"
        result.write_text(json.dumps({"checkpoint": str(ckpt)}))
        assert _train(tmp_path, "--init-from", str(result)) == EXIT_USER_ERROR
        _one_error_line(capsys, "nothing in it was run")
    elif path == "quantize --from":
        ckpt = _crafted(tmp_path / "x.ckpt", marker)
        argv = ["quantize", "--config", "mnist_cpu_w4a4", "--from", str(ckpt), "--wandb", "disabled", "--no-progress",
                "--results-dir", "results", "--runs-dir", "runs",
                "--set", *smoke_overrides("mnist_cpu_w4a4", "sqnr")]
        assert main("sqnr", "unused", argv) == EXIT_USER_ERROR
        _one_error_line(capsys, "nothing in it was run")
    else:  # what Lightning calls to resume (fit(ckpt_path=...)), whatever weights_only it asks for
        ckpt = _crafted(tmp_path / "x.ckpt", marker)
        with pytest.raises(pickle.UnpicklingError):
            AtomicCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()
    assert not (tmp_path / "results").exists()


def test_a_result_file_cannot_point_a_run_at_a_file_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "elsewhere" / "best.ckpt"
    outside.parent.mkdir()
    torch.save({"state_dict": {}}, outside)
    for target in (str(outside), "/etc/passwd", str(tmp_path / "runs/../elsewhere/best.ckpt")):
        result = tmp_path / "shared.json"
        result.write_text(json.dumps({"checkpoint": target}))
        assert _train(tmp_path, "--init-from", str(result)) == EXIT_USER_ERROR
        _one_error_line(capsys, "is not a .ckpt under the runs folder", "refused")
    assert not (tmp_path / "results").exists()


def test_genuine_checkpoints_still_load_everywhere(tmp_path, monkeypatch, capsys):
    """test --ckpt, --init-from (file and result) and --resume read this suite's own checkpoints as data."""
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == 0
    res = json.loads((tmp_path / "results/binaryconnect" / CONFIG / "seed1.json").read_text())
    capsys.readouterr()
    assert main("binaryconnect", "unused", ["test", "--ckpt", res["checkpoint"]]) == 0
    assert json.loads(capsys.readouterr().out)["test_top1_err"] == res["metrics"]["test_top1_err"]
    result = tmp_path / "results/binaryconnect" / CONFIG / "seed1.json"
    sets = smoke_overrides(CONFIG, **{"trainer.max_epochs": 2})
    assert _train(tmp_path, "--init-from", str(result), "--seed", "2", sets=sets) == 0
    assert _train(tmp_path, "--init-from", str(result), "--resume", "--seed", "2", sets=sets) == 0


# ---------------------------------------------------------------- results are never silently replaced

def test_an_override_never_replaces_a_finished_result_of_the_named_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == 0
    result = tmp_path / "results/binaryconnect" / CONFIG / "seed1.json"
    before = result.read_bytes()
    capsys.readouterr()
    other = smoke_overrides(CONFIG, **{"optim.lr_start": 0.5})
    assert _train(tmp_path, sets=other) == EXIT_USER_ERROR
    _one_error_line(capsys, "holds a finished result of another configuration", "optim.lr_start", "--overwrite")
    assert result.read_bytes() == before
    assert _train(tmp_path, "--overwrite", sets=other) == 0  # asked for
    assert json.loads(result.read_text())["config"]["optim"]["lr_start"] == 0.5


def test_a_rerun_of_the_same_config_and_seed_says_whether_it_reproduced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == 0
    result = tmp_path / "results/binaryconnect" / CONFIG / "seed1.json"
    capsys.readouterr()
    assert _train(tmp_path) == 0
    assert "reproduced the previous result of this config and seed bit for bit" in capsys.readouterr().out
    # a committed result made elsewhere: another test error, another CPU and commit
    old = json.loads(result.read_text())
    old["metrics"]["test_top1_err"] += 0.05
    old["cpu"], old["git_commit"] = "Some Other CPU", "0" * 40
    result.write_text(json.dumps(old))
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    assert "did not reproduce the previous result of this config and seed bit for bit" in out
    assert "(-0.0500 points)" in out and "cpu 'Some Other CPU' -> " in out and "git_commit" in out
    assert "the result differs in: metrics.test_top1_err" in out and "curve" not in out.split("the runs")[0]


def test_a_diverged_run_never_replaces_a_finished_result(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    diverging = smoke_overrides(CONFIG, **{"trainer.max_epochs": 4, "optim.lr_end": None,
                                           "optim.lr_milestones": [2], "optim.lr_factors": [1e35]})
    assert _train(tmp_path, sets=diverging) == EXIT_DIVERGED  # nothing finished there: it writes its status
    result = tmp_path / "results/binaryconnect" / CONFIG / "seed1.json"
    assert json.loads(result.read_text())["status"] == "diverged"
    assert _train(tmp_path, "--overwrite") == 0  # a finished run replaces a diverged one
    before = result.read_bytes()
    capsys.readouterr()
    assert _train(tmp_path, "--overwrite", sets=diverging) == EXIT_DIVERGED
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "keeps its finished result" in lines[0]
    assert result.read_bytes() == before


def test_a_second_run_of_the_same_config_and_seed_at_once_is_refused(tmp_path, monkeypatch, capsys):
    from common.results import run_lock

    monkeypatch.chdir(tmp_path)
    with run_lock(tmp_path / "runs/binaryconnect" / CONFIG / "seed1", "the first run"):
        assert _train(tmp_path) == EXIT_USER_ERROR
        _one_error_line(capsys, "another run of this config and seed is running")
        assert not (tmp_path / "results").exists()
        assert _train(tmp_path, "--seed", "2") == 0  # another seed is another run
    assert _train(tmp_path) == 0  # released with its holder


def test_result_and_checkpoint_files_get_the_ordinary_file_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert _train(tmp_path) == 0
    finally:
        os.umask(old)
    files = [tmp_path / "results/binaryconnect" / CONFIG / "seed1.json",
             *(tmp_path / "runs/binaryconnect" / CONFIG / "seed1/checkpoints").glob("*.ckpt")]
    assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o644 for f in files)


def test_results_record_what_the_same_cpu_means(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == 0
    res = json.loads((tmp_path / "results/binaryconnect" / CONFIG / "seed1.json").read_text())
    assert res["cpu"] and res["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert res["threads"] == torch.get_num_threads() and isinstance(res["fused_kernels"], bool)


def test_without_a_progress_bar_each_epoch_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, sets=smoke_overrides(CONFIG, **{"trainer.max_epochs": 2})) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    assert all("train loss" in ln and "val err" in ln and ln.endswith(" s") for ln in lines), lines


# ---------------------------------------------------------------- signals

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_non_zero_with_its_checkpoint_intact(tmp_path, sig, code):
    sets = smoke_overrides(CONFIG, **{"trainer.max_epochs": 50, "trainer.limit_train_batches": 40,
                                      "data.synthetic_size": 2048})
    last = tmp_path / "runs/binaryconnect" / CONFIG / "seed1/checkpoints/last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "papers.binaryconnect", "train", "--config", CONFIG, "--wandb",
                             "disabled", "--no-progress", "--set", *sets], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"stopped by {sig.name}: no result written" in err and "--resume" in err
    assert not (tmp_path / "results").exists()
    assert torch.load(last, weights_only=True)["global_step"] > 0  # whole, and readable as data


def test_the_sweep_counts_a_run_without_its_result_as_failed(tmp_path, monkeypatch, capsys):
    from leaderboard import sweep

    job = sweep.Job("binaryconnect", "train", CONFIG, 1)
    monkeypatch.setattr(sweep.Job, "argv", lambda self, r, d: [sys.executable, "-c", "pass"])  # exits 0, writes nothing
    assert sweep.run([job], 1, 1, tmp_path / "results", tmp_path / "runs", tmp_path / "logs") == 1
    assert "FAILED (exit 0 but no result" in capsys.readouterr().out


# ---------------------------------------------------------------- the leaderboard's input

def test_the_leaderboard_refuses_a_results_folder_without_results(tmp_path, capsys):
    from leaderboard.__main__ import main as board

    out = tmp_path / "BOARD.md"
    assert board(["--results-dir", str(tmp_path / "typo"), "--out", str(out), "--no-plots"]) == 2
    _one_error_line(capsys, "typo: no such folder")
    (tmp_path / "empty").mkdir()
    assert board(["--results-dir", str(tmp_path / "empty"), "--out", str(out), "--no-plots"]) == 2
    _one_error_line(capsys, "no result file")
    assert board(["--out", str(tmp_path), "--no-plots"]) == 2
    _one_error_line(capsys, "a folder")
    assert not out.exists()


def test_a_deeply_nested_or_huge_result_file_is_skipped_not_a_crash(tmp_path):
    from leaderboard.collect import load_runs

    folder = tmp_path / "results/binaryconnect" / CONFIG
    folder.mkdir(parents=True)
    (folder / "seed1.json").write_text("[" * 100000 + "]" * 100000)
    (folder / "seed2.json").write_text('{"pad": "' + "x" * (17 << 20) + '"}')
    runs, skipped = load_runs(tmp_path / "results")
    assert not runs and sorted(s.reason for s in skipped) == [
        f"{(17 << 20) + 11} bytes (a result file is under {16 << 20})", "not readable JSON (nested too deeply)"]


# ---------------------------------------------------------------- dataset content

def test_labels_out_of_range_stop_the_run_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import common.data as data

    real = data._synthetic

    def bad_labels(cfg, train, seed=0):
        x, y = real(cfg, train, seed)
        y[3] = 200
        return x, y

    monkeypatch.setattr(data, "_synthetic", bad_labels)
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path) == EXIT_USER_ERROR
    _one_error_line(capsys, "labels from 0 to 200, expected 0 to 9")
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_wandb_online_without_a_key_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--wandb", "online") == EXIT_USER_ERROR
    _one_error_line(capsys, "--wandb online: no Weights & Biases API key")
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_an_unreadable_dataset_file_or_a_non_utf8_claims_file_is_one_line(tmp_path, monkeypatch):
    from common.data import verify_files
    from common.errors import UserError
    from leaderboard.claims import load_claims

    import common.data as data

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")

    def denied(name, path, count, kind):  # (root reads any file: the permission error is made here)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "_check_idx", denied)
    with pytest.raises(UserError, match="dataset 'mnist': .*train-images-idx3-ubyte: cannot be read \\(Permission"):
        verify_files("mnist", tmp_path)
    bad = tmp_path / "claims.yaml"
    bad.write_bytes(b"claims: [\xff]\n")
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_claims(bad)


def test_the_sweep_resumes_a_stopped_run_of_the_same_config(tmp_path, monkeypatch):
    """A training run stopped by a signal leaves last.ckpt; the next sweep plans it with --resume (same config
    only), and the run it resumes writes the result an uninterrupted run writes."""
    from common.config import load_config
    from leaderboard import sweep

    sets = smoke_overrides(CONFIG, **{"trainer.max_epochs": 3})
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--results-dir", str(tmp_path / "ref"), sets=sets) == 0  # (its own results folder)
    reference = json.loads((tmp_path / "ref/binaryconnect" / CONFIG / "seed1.json").read_text())
    shutil.rmtree(tmp_path / "runs")
    # a run stopped after its first epoch: its last.ckpt, no result
    assert _train(tmp_path, sets=smoke_overrides(CONFIG, **{"trainer.max_epochs": 1})) == 0
    (tmp_path / "results/binaryconnect" / CONFIG / "seed1.json").unlink()
    _, cfg = load_config(CONFIG, ROOT / "papers/binaryconnect/configs", sets)
    job = sweep.Job("binaryconnect", "train", CONFIG, 1)
    assert not sweep.resumable(tmp_path / "runs", job, cfg)  # written with another config (max_epochs 1): afresh
    argv = ["train", "--config", CONFIG, "--wandb", "disabled", "--no-progress", "--set", *sets]
    proc = subprocess.Popen([sys.executable, "-m", "papers.binaryconnect", *argv, "--checkpoint-every", "1"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "runs/binaryconnect" / CONFIG / "seed1/checkpoints/last.ckpt"
    start = last.stat().st_mtime_ns
    deadline = time.time() + 120
    while (not last.exists() or last.stat().st_mtime_ns == start) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_SIGTERM
    assert sweep.resumable(tmp_path / "runs", job, cfg)
    assert "--resume" in sweep.Job("binaryconnect", "train", CONFIG, 1, resume=True).argv(tmp_path, tmp_path)
    assert main("binaryconnect", "unused", [*argv, "--resume"]) == 0
    resumed = json.loads((tmp_path / "results/binaryconnect" / CONFIG / "seed1.json").read_text())
    assert resumed["metrics"] == reference["metrics"] and resumed["curve"] == reference["curve"]
