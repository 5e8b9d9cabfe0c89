"""Reliability of the training path: determinism, resuming a killed run, rejected input, divergence, DDP on CPU.

Tiny synthetic runs; the killed run and the DDP run are subprocesses (the CLI as a user runs it).
"""
import json
import os
import re
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
# what may differ between two runs of the same thing: when and how long, the checkout's commit (this checkout is shared
# and may be committed to in between), and the checkpoint's absolute path (compared relative to each run's folder)
RUN_KEYS_THAT_VARY = {"wall_time_s", "finished_at", "git_commit", "checkpoint"}


def _sets(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def _assert_same_tensors(a, b, where=""):
    """Bitwise equality of nested checkpoint content (tensors, numbers, lists, dicts)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _same_result(a: dict, b: dict, root_a: Path, root_b: Path) -> None:
    assert {k: v for k, v in a.items() if k not in RUN_KEYS_THAT_VARY} == \
        {k: v for k, v in b.items() if k not in RUN_KEYS_THAT_VARY}
    assert Path(a["checkpoint"]).relative_to(root_a) == Path(b["checkpoint"]).relative_to(root_b)


# ---------------------------------------------------------------- determinism

# every stochastic quantizer of the core at once, on a small MLP with dropout (all draw from torch's generator)
STOCHASTIC = {"data.name": "synthetic", "data.shape": [1, 8, 8], "data.synthetic_size": 256, "data.val_size": 64,
              "data.batch_size": 32, "data.eval_batch_size": 64, "model.widths": [64, 64], "model.dropout_hidden": 0.1,
              "trainer.max_epochs": 2, "trainer.num_threads": 1,
              "quant.rules": [{"layers": "all", "clip": 1.0,
                               "weight": {"name": "sign_stochastic"},  # Bernoulli binarization (BinaryConnect)
                               "input": {"name": "fixed", "wl": 8, "fl": 4, "rounding": "stochastic"},  # Gupta
                               "grad": {"name": "dorefa_grad", "bits": 4}},  # uniform noise (DoReFa)
                              {"layers": "last",
                               "weight": {"name": "linear_quant", "bits": 4, "rounding": "stochastic"},  # QNN
                               "input": {"name": "dynamic_fixed", "wl": 8, "rounding": "stochastic",
                                         "update_every": 2, "init_il": None},  # Courbariaux et al.
                               "grad": {"name": "log_quant", "bits": 5, "rounding": "stochastic"}}]}


def _train_stochastic(folder: Path, seed: int) -> tuple[dict, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        argv = ["train", "--config", "mnist_cpu_stoch", "--seed", str(seed), "--wandb", "disabled", "--no-progress",
                "--set", *_sets(STOCHASTIC)]
        assert main("binaryconnect", "unused", argv) == 0
    finally:
        os.chdir(cwd)
    run = folder / "runs/binaryconnect/mnist_cpu_stoch" / f"seed{seed}"
    return (json.loads((folder / f"results/binaryconnect/mnist_cpu_stoch/seed{seed}.json").read_text()),
            _state(run / "checkpoints/last.ckpt"))


def test_same_seed_gives_bit_identical_weights_and_metrics(tmp_path):
    (res_a, a), (res_b, b), (res_c, c) = (_train_stochastic(tmp_path / d, s) for d, s in (("a", 3), ("b", 3), ("c", 4)))
    _same_result(res_a, res_b, tmp_path / "a", tmp_path / "b")  # metrics, per-epoch curve, ...
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        _assert_same_tensors(a[key], b[key], key)
    # another seed: other weights and metrics (the runs are random, and their randomness is the seed's)
    assert any(not torch.equal(v, c["state_dict"][k]) for k, v in a["state_dict"].items() if v.is_floating_point())
    assert res_a["curve"] != res_c["curve"]


def test_a_run_gives_back_torchs_thread_count(tmp_path, monkeypatch):
    """trainer.num_threads holds for the run only: a second run in the same process (a test, a notebook) starts
    from the process's own count, as a separate process would (the thread count changes a run's arithmetic)."""
    monkeypatch.chdir(tmp_path)
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        argv = ["train", "--config", "mnist_cpu_float", "--wandb", "disabled", "--no-progress",
                "--set", *smoke_overrides("mnist_cpu_float", **{"trainer.num_threads": 1})]
        assert main("binaryconnect", "unused", argv) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(saved)


# ---------------------------------------------------------------- resume

RESUME_SETS = {"data.name": "synthetic", "data.synthetic_size": 512, "data.val_size": 64, "data.batch_size": 16,
               "data.eval_batch_size": 64, "model.widths": [256, 256], "model.dropout_hidden": 0.1,
               "quant.rules.0.input": {"name": "dynamic_fixed", "wl": 8, "update_every": 3, "init_il": None},
               "quant.calibrate_epochs": 1, "trainer.max_epochs": 3, "trainer.num_threads": 1}
STEPS_PER_EPOCH = 512 // 16
RESUME_RUN = Path("runs/binaryconnect/mnist_cpu_stoch/seed7")
RESUME_RESULT = Path("results/binaryconnect/mnist_cpu_stoch/seed7.json")


def _resume_argv(*extra, sets=RESUME_SETS) -> list[str]:
    """Stochastic BinaryConnect with dropout, batch norm, Adam with per-epoch exponential decay, a range-calibration
    epoch and dynamic fixed-point inputs whose integer lengths move every 3 steps."""
    return ["train", "--config", "mnist_cpu_stoch", "--seed", "7", "--wandb", "disabled", "--no-progress", *extra,
            "--set", *_sets(sets)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted (relative results/ and runs/ under its own folder)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main("binaryconnect", "unused", _resume_argv()) == 0
    finally:
        os.chdir(cwd)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("every,mid_epoch", [(4, True), (0, False)], ids=["mid-epoch", "epoch-end"])
def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch, capsys, uninterrupted, every, mid_epoch):
    last = tmp_path / RESUME_RUN / "checkpoints" / "last.ckpt"
    argv = _resume_argv("--checkpoint-every", str(every))
    proc = subprocess.Popen([sys.executable, "-m", "papers.binaryconnect", *argv], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)  # the moment the first checkpoint appears
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / RESUME_RESULT).exists()
    killed_at = _state(last)  # a whole checkpoint (written atomically), from inside the run
    assert killed_at["global_step"] < 3 * STEPS_PER_EPOCH
    assert (killed_at["ClassificationData"]["batches_done"] > 0) == mid_epoch
    assert (killed_at["global_step"] % STEPS_PER_EPOCH != 0) == mid_epoch

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main("binaryconnect", "unused", _resume_argv("--resume", "--checkpoint-every", str(every))) == 0
    took = re.findall(r"  lr \S+  (\d+) s( since the resume)?\n", capsys.readouterr().out)  # each epoch's line
    assert len(took) == 3 - killed_at["global_step"] // STEPS_PER_EPOCH and all(int(t) < 600 for t, _ in took)
    assert [bool(since) for _, since in took] == [mid_epoch] + [False] * (len(took) - 1)  # the resumed epoch's part
    ref, res = (json.loads((d / RESUME_RESULT).read_text()) for d in (uninterrupted, tmp_path))
    _same_result(ref, res, uninterrupted, tmp_path)  # metrics, curve (loss, error, lr per epoch), bits, config...
    a, b = _state(uninterrupted / RESUME_RUN / "checkpoints/last.ckpt"), _state(last)
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "train_epoch_sums"):
        _assert_same_tensors(a[key], b[key], key)
    # the state that had to survive the kill was there to survive: moved integer lengths, batch-norm statistics
    state = a["state_dict"]
    assert any(k.endswith("input_quantizer.calls") for k in state) and all(
        int(v) > 0 for k, v in state.items() if k.endswith("input_quantizer.calls"))
    assert any(k.endswith("running_mean") and v.abs().sum() > 0 for k, v in state.items())


def test_resume_needs_a_readable_checkpoint_of_the_same_config(tmp_path, monkeypatch, capsys, uninterrupted):
    monkeypatch.chdir(tmp_path)
    cases = [("none", "--resume: no checkpoint runs/binaryconnect/mnist_cpu_stoch/seed7/checkpoints/last.ckpt"),
             ("truncated", "last.ckpt: not a readable checkpoint of this suite"),
             ("other config", "written with another config (trainer.max_epochs: 3 there, 4 now)")]
    for case, message in cases:
        if case != "none":
            shutil.copytree(uninterrupted / "runs", tmp_path / "runs", dirs_exist_ok=True)
        if case == "truncated":
            last = tmp_path / RESUME_RUN / "checkpoints/last.ckpt"
            last.write_bytes(last.read_bytes()[:5000])
        sets = {**RESUME_SETS, "trainer.max_epochs": 4} if case == "other config" else RESUME_SETS
        capsys.readouterr()
        assert main("binaryconnect", "unused", _resume_argv("--resume", sets=sets)) == EXIT_USER_ERROR, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (case, err)
        assert not (tmp_path / "results").exists()


def test_a_run_stopped_after_its_best_epoch_resumes_to_the_same_result(tmp_path, monkeypatch):
    """last.ckpt at an epoch's end holds the best-checkpoint bookkeeping of that epoch: a run stopped right after it
    (SIGTERM, sent as the epoch's last.ckpt is written) resumes to the uninterrupted run's result and tests the same
    weights, even when that epoch is the best one and a later, worse epoch still beats the one before it."""
    from common.callbacks import LastCheckpoint
    from common.checkpoint import load_data

    sets = smoke_overrides("mnist_cpu_float", **{"trainer.max_epochs": 3})
    argv = ["train", "--config", "mnist_cpu_float", "--wandb", "disabled", "--no-progress", "--checkpoint-every", "0",
            "--set", *sets]
    monkeypatch.chdir(tmp_path)
    assert main("binaryconnect", "unused", [*argv, "--results-dir", "ref", "--runs-dir", "ref-runs"]) == 0
    ref = json.loads(Path("ref/binaryconnect/mnist_cpu_float/seed1.json").read_text())
    vals = [row["val_err"] for row in ref["curve"]]
    best = vals.index(min(vals))
    # (the case: the best epoch is followed by a worse one that still beats the epochs before the best)
    assert best == 1 and vals[0] > vals[2] > vals[1], vals
    assert ref["metrics"]["tested_epoch"] == best == load_data(ref["checkpoint"])["epoch"]

    save = LastCheckpoint._save

    def save_then_stop(self, trainer):
        save(self, trainer)
        if trainer.current_epoch == best:  # (--checkpoint-every 0: epoch ends only)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(LastCheckpoint, "_save", save_then_stop)
    assert main("binaryconnect", "unused", argv) == EXIT_SIGTERM
    assert load_data("runs/binaryconnect/mnist_cpu_float/seed1/checkpoints/last.ckpt")["epoch"] == best
    monkeypatch.setattr(LastCheckpoint, "_save", save)
    assert main("binaryconnect", "unused", [*argv, "--resume"]) == 0
    res = json.loads(Path("results/binaryconnect/mnist_cpu_float/seed1.json").read_text())
    assert res["metrics"] == ref["metrics"] and res["curve"] == ref["curve"]
    assert load_data(res["checkpoint"])["epoch"] == best


def test_last_checkpoint_is_the_end_of_training_even_without_a_better_validation(tmp_path, monkeypatch, capsys):
    """last.ckpt (what --resume and select: last use) is written at every epoch's end, improved or not."""
    monkeypatch.chdir(tmp_path)
    # no learning after the first epoch (learning rate x 1e-30), nothing else that moves the validation error (batch
    # norm, the input quantizer's range): its later epochs do not improve on the first
    sets = {**RESUME_SETS, "optim.lr_end": None, "optim.lr_milestones": [1], "optim.lr_factors": [1e-30],
            "model.batch_norm": False, "model.output_bn": False, "quant.rules.0.input": None, "select": "last"}
    assert main("binaryconnect", "unused", _resume_argv("--checkpoint-every", "0", sets=sets)) == 0
    res = json.loads(RESUME_RESULT.read_text())
    last, best = (_state(RESUME_RUN / "checkpoints" / f) for f in ("last.ckpt", "best.ckpt"))
    assert best["global_step"] < 3 * STEPS_PER_EPOCH  # (the case: the best validation error is an earlier epoch's)
    assert last["global_step"] == 3 * STEPS_PER_EPOCH and res["checkpoint"].endswith("checkpoints/last.ckpt")
    capsys.readouterr()
    assert main("binaryconnect", "unused", ["test", "--ckpt", res["checkpoint"]]) == 0  # the weights it tested
    assert json.loads(capsys.readouterr().out)["test_top1_err"] == res["metrics"]["test_top1_err"]


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    from common.checkpoint import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    renames, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((Path(src), Path(dst))) or replace(src, dst))
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    # written beside it, then renamed over it (a rename within a folder is atomic; a copy from /tmp is not)
    assert len(renames) == 1 and renames[0][1] == path and renames[0][0].parent == path.parent

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 the first part of a checkpoint")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(RuntimeError, match="killed while writing"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))  # the previous one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # and no temporary file left


def test_epoch_sampler_draws_like_random_sampler_and_replays():
    """Seeded runs keep the batches they had before resuming existed; a replayed pass skips the batches done."""
    from torch.utils.data import RandomSampler

    from common.data import EpochSampler, ResumableBatchSampler

    data = list(range(50))
    torch.manual_seed(0)
    expected = [list(RandomSampler(data)) for _ in range(2)], torch.rand(3)
    torch.manual_seed(0)
    sampler = EpochSampler(data)
    seeds, got = [], []
    for _ in range(2):
        got.append(list(sampler))
        seeds.append(sampler.seed)
    assert (got, torch.rand(3).tolist()) == (expected[0], expected[1].tolist())
    state = torch.get_rng_state()
    batches = list(ResumableBatchSampler(EpochSampler(data, replay=seeds[1]), 8, False, skip=2))
    assert torch.equal(torch.get_rng_state(), state)  # a replay draws nothing
    assert [i for b in batches for i in b] == got[1][16:] and len(batches) == 5


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

def _idx(path: Path, magic: int, shape: tuple, size: int | None = None) -> None:
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *shape))
    n = len(header) + int(torch.tensor(shape).prod()) if size is None else size
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header[:n])
        f.truncate(n)


def _mnist_dir(root: Path, bad: str | None) -> Path:
    """MNIST/raw with the four IDX files (zero pixels), the one named ``bad`` damaged."""
    raw = root / "MNIST" / "raw"
    for split, n in (("train", 60000), ("t10k", 10000)):
        _idx(raw / f"{split}-images-idx3-ubyte", 0x803, (n, 28, 28), 1016 if bad == f"{split}-images" else None)
        _idx(raw / f"{split}-labels-idx1-ubyte", 0x801 if bad != f"{split}-labels" else 0x803, (n,))
    if bad == "gz":  # an archive torchvision would unpack, its md5 not the published one
        (raw / "t10k-labels-idx1-ubyte").unlink()
        (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really")
    return root


BAD_INPUT = {
    "malformed YAML": (["--config", "{tmp}/bad.yaml"], "not valid YAML (line 2", "data: {batch_size: [\n"),
    "YAML not a mapping": (["--config", "{tmp}/bad.yaml"], "expected a mapping at the top level", "- a\n- b\n"),
    "unknown key in a file": (["--config", "{tmp}/bad.yaml"], "trainer.max_epoch: unknown key",
                              "extends: {root}/papers/binaryconnect/configs/mnist_cpu_det.yaml\n"
                              "trainer: {max_epoch: 3}\n"),
    "unknown key": (["--set", "data.batchsize=3"], "data.batchsize: unknown key", None),
    "wrong type": (["--set", "trainer.max_epochs=abc"], "trainer.max_epochs: expected an integer", None),
    "wrong type in a list": (["--set", "model.widths=[16, x]"], "model.widths[1]: expected an integer", None),
    "bits out of range": (["--set", "quant.rules.0.weight={name: dorefa_weight, bits: 33}"],
                          "quant.rules[0].weight.bits: expected a value in 1..", None),
    "word length out of range": (["--set", "quant.rules.0.input={name: dynamic_fixed, wl: 1}"],
                                 "quant.rules[0].input.wl: expected a value in 2..32", None),
    "no '=' in --set": (["--set", "optim.lr_start"], "expected key.path=value", None),
    "missing config file": (["--config", "{tmp}/nowhere.yaml"], "nowhere.yaml: config file not found", None),
    "nonexistent config": (["--config", "mnist_cpu_nothing"], "--config 'mnist_cpu_nothing': no such config", None),
    "missing init checkpoint": (["--init-from", "{tmp}/gone.ckpt"], "init_from: checkpoint {tmp}/gone.ckpt not found",
                                None),
    "init from a nonexistent paper": (["--init-from", "nopaper/mnist_cpu_float"], "no paper 'nopaper'", None),
    "negative checkpoint interval": (["--checkpoint-every", "-1"], "--checkpoint-every: expected a number", None),
    "batch not divisible by devices": (["--set", "trainer.devices=3"],
                                       "data.batch_size: expected a multiple of the 3 processes", None),
    "truncated IDX file": (["--data-dir", "{tmp}/data"], "train-images-idx3-ubyte: 1016 bytes, expected 47040016",
                           "train-images"),
    "IDX file with a wrong header": (["--data-dir", "{tmp}/data"],
                                     "t10k-labels-idx1-ubyte: not an IDX labels file of shape (10000,)", "t10k-labels"),
    "corrupt archive": (["--data-dir", "{tmp}/data"], "t10k-labels-idx1-ubyte.gz: md5 ", "gz"),
    "unknown quantizer in an update rule": (["--set", "quant.rules.0.update={name: nope}"],
                                            "quant.rules[0].update.name: unknown quantizer 'nope'", None),
    "bad argument in an update rule": (["--set", "quant.rules.0.update={name: fixed, wl: 99, fl: 2}"],
                                       "quant.rules[0].update.wl: expected a value in 1..32, got 99", None),
    "seed beyond 2^32": (["--seed", "4294967296"], "seed: expected a value in 0..4294967295", None),
    "accelerator Lightning rejects": (["--set", "trainer.accelerator=gpu"], "trainer: Lightning refuses", None),
    "strategy Lightning rejects": (["--set", "trainer.strategy=nope"], "trainer: Lightning refuses", None),
    "precision Lightning rejects": (["--set", "trainer.precision=bogus"], "trainer: Lightning refuses", None),
    "limit Lightning rejects": (["--set", "trainer.limit_train_batches=1.5"], "trainer: Lightning refuses", None),
    "huge synthetic size": (["--set", "data.synthetic_size=1000000000"], "data.synthetic_size: expected a value in",
                            None),
    "validation larger than allowed": (["--set", "data.val_size=100000000"],
                                       "data.val_size: expected a value in 0..10000000", None),
    "synthetic data beyond memory": (["--set", "data.synthetic_size=9000000", "data.shape=[3, 32, 32]"],
                                     "data.synthetic_size + data.val_size: 9000032 samples of shape [3, 32, 32] would "
                                     "take 103.0 GiB", None),
    "non-UTF-8 config file": (["--config", "{tmp}/bad.yaml"], "not UTF-8 text (byte 7)", b"data: {\xff\xfe}\n"),
    "duplicate YAML key": (["--config", "{tmp}/bad.yaml"], "duplicate key 'trainer'",
                           "trainer: {max_epochs: 3}\ntrainer: {max_epochs: 4}\n"),
    "alias bomb": (["--config", "{tmp}/bad.yaml"], "more than 100,000 values once its aliases are expanded",
                   "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
                       f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                       for p, n in zip("abcdefg", "bcdefgh"))),
    "results folder is a file": (["--results-dir", "{tmp}/afile"], "afile: a file, expected a folder", "FILE"),
    "runs folder under a file": (["--runs-dir", "{tmp}/afile/runs"], "afile is a file, expected a folder", "FILE"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    args, message, content = BAD_INPUT[case]
    if "--data-dir" in args:  # the config's own data (MNIST), from a damaged folder
        _mnist_dir(tmp_path / "data", content)
        sets = []
    else:
        sets = ["--set", *smoke_overrides("mnist_cpu_det")]
        if content == "FILE":
            (tmp_path / "afile").write_text("not a folder")
        elif isinstance(content, bytes):
            (tmp_path / "bad.yaml").write_bytes(content)
        elif content is not None:
            (tmp_path / "bad.yaml").write_text(content.replace("{root}", str(ROOT)))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "mnist_cpu_det", "--wandb", "disabled", "--no-progress", *sets,
            *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main("binaryconnect", "unused", argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_nonexistent_paper_is_one_line_exit_2(capsys):
    assert main("nopaper", "unused", ["configs"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "paper 'nopaper': no such paper (available: " in err and "binaryconnect" in err


def test_dataset_files_are_checked(tmp_path):
    from common.data import verify_files
    from common.errors import UserError

    verify_files("mnist", _mnist_dir(tmp_path / "ok", None))  # right sizes and headers pass
    for bad in ("train-images", "train-labels", "t10k-images", "gz"):
        with pytest.raises(UserError, match="truncated or corrupt"):
            verify_files("mnist", _mnist_dir(tmp_path / bad, bad))


def test_real_mnist_files_pass_the_check(mnist_dir):
    from common.data import verify_files

    verify_files("mnist", mnist_dir)


# ---------------------------------------------------------------- divergence

def test_nan_loss_stops_the_run_with_status_diverged(tmp_path, monkeypatch, capsys):
    from leaderboard.collect import group_runs, load_runs

    # the learning rate x 1e35 from the third epoch (0-based 2) on: the weights blow up there
    sets = smoke_overrides("mnist_cpu_float", **{"trainer.max_epochs": 4,
                                                 "optim.lr_end": None, "optim.lr_milestones": [2],
                                                 "optim.lr_factors": [1e35]})
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "mnist_cpu_float", "--wandb", "disabled", "--no-progress", "--set", *sets]
    assert main("binaryconnect", "unused", argv) == EXIT_DIVERGED != EXIT_USER_ERROR
    lines = [line for line in capsys.readouterr().err.splitlines() if "diverged" in line]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: loss nan at epoch 2, step 5"), lines
    res = json.loads((tmp_path / "results/binaryconnect/mnist_cpu_float/seed1.json").read_text())
    assert res["status"] == "diverged" and res["metrics"] is None and res["checkpoint"] is None
    assert res["diverged_at"] == {"epoch": 2, "step": 5, "loss": "nan"}  # (2 steps an epoch)
    assert res["epochs"] == 2 and [r["epoch"] for r in res["curve"]] == [0, 1]
    assert not list((tmp_path / "results").rglob("*.tmp"))
    runs, skipped = load_runs(tmp_path / "results")  # the leaderboard counts it, and averages no number from it
    group = group_runs(runs, with_cost=False)[("binaryconnect", "mnist_cpu_float")]
    assert not skipped and len(group.diverged) == 1 and not group.runs


# ---------------------------------------------------------------- DDP on CPU

DDP_TOLERANCE = 3.0  # percentage points of test error, 2 processes vs 1 (README: Multi-GPU and multi-node)
DDP_SETS = {"data.name": "synthetic", "data.shape": [1, 8, 8], "data.num_classes": 4, "data.synthetic_size": 4096,
            "data.val_size": 256, "data.batch_size": 128, "data.eval_batch_size": 256, "model.widths": [128],
            "trainer.max_epochs": 2, "trainer.num_threads": 1, "trainer.accelerator": "cpu", "optim.lr_start": 0.01,
            "optim.lr_end": 0.001, "select": "last"}


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path, monkeypatch, capsys):
    argv = ["train", "--config", "mnist_cpu_float", "--wandb", "disabled", "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "papers.binaryconnect", *argv, "--results-dir", "ddp",
                           "--runs-dir", "ddp_runs", "--set", *_sets(DDP_SETS), "trainer.devices=2",
                           "trainer.strategy=ddp"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("result: ") == 1  # rank 0 only
    files = [p for p in (tmp_path / "ddp").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["seed1.json"]
    ddp = json.loads(files[0].read_text())
    monkeypatch.chdir(tmp_path)
    assert main("binaryconnect", "unused", [*argv, "--results-dir", "one", "--runs-dir", "one_runs",
                                            "--set", *_sets(DDP_SETS)]) == 0
    one = json.loads((tmp_path / "one/binaryconnect/mnist_cpu_float/seed1.json").read_text())
    assert ddp["config"]["trainer"]["devices"] == 2 and ddp["epochs"] == one["epochs"] == 2
    gap = abs(ddp["metrics"]["test_top1_err"] - one["metrics"]["test_top1_err"])
    print(f"test error: 2 processes {ddp['metrics']['test_top1_err']}, 1 process {one['metrics']['test_top1_err']}")
    assert gap <= DDP_TOLERANCE
    # synced metrics: the result's test error and loss are those of the whole test set, as one process measures them
    capsys.readouterr()
    assert main("binaryconnect", "unused", ["test", "--ckpt", ddp["checkpoint"]]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["test_top1_err"] == ddp["metrics"]["test_top1_err"]
    assert whole["test_loss"] == pytest.approx(ddp["metrics"]["test_loss"], abs=1e-5)
    assert ddp["curve"][-1]["train_loss"] == pytest.approx(one["curve"][-1]["train_loss"], rel=0.2)
