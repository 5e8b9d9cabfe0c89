"""End-to-end behaviour of the shared training path on small synthetic data, and the real-MNIST data module."""
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.cli import main
from common.config import load_config
from common.data import DATASETS, ClassificationData
from common.module import Classifier, glorot_lr_scale, parameter_bits, squared_hinge
from common.quant import quant_layers

ROOT = Path(__file__).resolve().parent.parent
BC_CONFIGS = sorted(p.stem for p in (ROOT / "papers/binaryconnect/configs").glob("[!_]*.yaml"))
ALL_CONFIGS = sorted((p.parent.parent.name, p.stem) for p in (ROOT / "papers").glob("*/configs/[!_]*.yaml"))


def _smoke_set(configs):
    """Every config, except two kinds of paper-scale config that are smoke-run once per paper: ImageNet training
    configs (their networks are 60-140M parameters: two checkpoints each) and post-training configs on a paper-scale
    network (their search over a full-size network's weights takes a minute or more on CI's 2 cores; the same search
    runs on every shared-setting and CPU-scale network), those on ImageNet networks not at all. Every config's step
    is run in test_config."""
    seen, out = set(), []
    for paper, config in configs:
        importlib.import_module(f"papers.{paper}")
        cfg = load_config(config, ROOT / f"papers/{paper}/configs")[1]
        kind = "ptq" if cfg.ptq is not None else "imagenet" if config.startswith("imagenet_") else None
        if kind == "ptq" and cfg.data.name == "imagenet":  # (its float network is smoke-trained all the same)
            continue
        if kind and cfg.scale == "paper":
            if (paper, kind) in seen:
                continue
            seen.add((paper, kind))
        out.append((paper, config))
    return out


SMOKE_CONFIGS = _smoke_set(ALL_CONFIGS)
RESULT_KEYS = {"schema", "status", "paper", "config_name", "seed", "claims", "scale", "dataset", "model", "bits",
               "metrics", "baseline", "param_bits", "param_count", "epochs", "wall_time_s", "device", "torch",
               "lightning", "git_commit", "config_hash", "config", "checkpoint", "curve"}


def smoke_overrides(config: str, paper: str = "binaryconnect", **extra) -> list[str]:
    importlib.import_module(f"papers.{paper}")
    _, cfg = load_config(config, ROOT / f"papers/{paper}/configs")
    info = DATASETS[cfg.data.name]
    n = 8 if info.shape[1] > 64 else 32  # ImageNet-sized inputs: small batches
    sets = {"data.name": "synthetic", "data.shape": list(info.shape), "data.num_classes": info.num_classes,
            "data.synthetic_size": 2 * n, "data.val_size": n, "data.batch_size": n, "data.eval_batch_size": n,
            "data.num_workers": 0, "trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
            "trainer.limit_val_batches": 1, "trainer.limit_test_batches": 1}
    if cfg.init_from:  # fine-tuning configs start from a trained run; the smoke run starts from scratch
        sets["init_from"] = None
    sets.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


def run_train(tmp_path, config, seed=1, paper="binaryconnect", **extra) -> dict:
    argv = ["train", "--config", config, "--seed", str(seed), "--wandb", "disabled", "--no-progress",
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--set", *smoke_overrides(config, paper, **extra)]
    assert main(paper, "unused", argv) == 0
    return json.loads((tmp_path / "results" / paper / config / f"seed{seed}.json").read_text())


def run_quantize(tmp_path, config, paper, command="quantize", **extra) -> dict:
    """Smoke-train the float network a post-training config names (its init_from), then quantize it."""
    _, cfg = load_config(config, ROOT / f"papers/{paper}/configs")
    owner, _, source = cfg.init_from.rpartition("/")  # "config" or "paper/config"
    run_train(tmp_path, source, paper=owner or paper)
    argv = [command, "--config", config, "--wandb", "disabled", "--no-progress",
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--set", *smoke_overrides(config, paper, init_from=cfg.init_from, **extra)]
    assert main(paper, "unused", argv) == 0
    name = config + ("_finetuned" if command == "finetune" else "")
    return json.loads((tmp_path / "results" / paper / name / "seed1.json").read_text())


@pytest.mark.parametrize("paper,config", SMOKE_CONFIGS, ids=[f"{p}/{c}" for p, c in SMOKE_CONFIGS])
def test_smoke_train_every_config_writes_a_valid_result(tmp_path, paper, config):
    importlib.import_module(f"papers.{paper}")  # registers the paper's models and methods
    post_training = load_config(config, ROOT / f"papers/{paper}/configs")[1].ptq is not None
    res = run_quantize(tmp_path, config, paper) if post_training else run_train(tmp_path, config, paper=paper)
    assert RESULT_KEYS <= set(res)
    assert res["status"] == "ok" and res["paper"] == paper and res["config_name"] == config
    assert 0 <= res["metrics"]["test_top1_err"] <= 100 and "test_top5_err" in res["metrics"]
    if post_training:  # no training: the chosen per-layer rules and the search are recorded
        assert res["epochs"] == 0 and res["ptq"]["method"] == res["config"]["ptq"] and res["config"]["quant"]["rules"]
        assert res["init_from"].endswith(".ckpt") and Path(res["init_from"]).is_file()  # the tested checkpoint
    else:
        assert res["epochs"] == 1 and len(res["curve"]) == 1
        assert Path(res["checkpoint"]).is_file()
    quantized = res["bits"]["w"] < 32
    assert quantized == ("float" not in f"{paper}/{config}")  # the float package, or a *_float* config
    assert res["param_bits"] < 32 * res["param_count"] if quantized else res["param_bits"] == 32 * res["param_count"]
    if res["config"]["baseline"]:
        assert res["baseline"]["result"].endswith(f"{res['config']['baseline']}/seed1.json")
    assert not list((tmp_path / "results").rglob("*.tmp"))


def test_seeded_runs_are_reproducible(tmp_path):
    a = run_train(tmp_path / "a", "mnist_cpu_stoch", seed=3)
    b = run_train(tmp_path / "b", "mnist_cpu_stoch", seed=3)
    c = run_train(tmp_path / "c", "mnist_cpu_stoch", seed=4)
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"]
    assert a["curve"] != c["curve"]


def test_test_command_reproduces_the_result(tmp_path, capsys):
    res = run_train(tmp_path, "mnist_cpu_det")
    capsys.readouterr()
    assert main("binaryconnect", "mnist_cpu_stoch", ["test", "--ckpt", res["checkpoint"]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_top1_err"] == res["metrics"]["test_top1_err"]


def test_truncated_checkpoint_is_a_user_error(tmp_path, capsys):
    res = run_train(tmp_path, "mnist_cpu_det")
    bad = tmp_path / "truncated.ckpt"
    data = Path(res["checkpoint"]).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert main("binaryconnect", "mnist_cpu_stoch", ["test", "--ckpt", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main("binaryconnect", "mnist_cpu_stoch", ["test", "--ckpt", str(tmp_path / "nope.ckpt")]) == 2


def test_latent_weights_are_clipped_during_training(tmp_path):
    """With a huge learning rate every step pushes weights far out; the clip must hold them in [-1, 1]."""
    res = run_train(tmp_path, "mnist_cpu_det", **{"optim.lr_start": 10.0, "optim.lr_end": 5.0})
    state = torch.load(res["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    latent = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    assert all(w.abs().max() <= 1.0 for w in latent)
    assert sum(int((w.abs() == 1.0).sum()) for w in latent) > 1000  # the bound was reached, i.e. clipping acted
    res_free = run_train(tmp_path / "free", "mnist_cpu_det",
                         **{"optim.lr_start": 10.0, "optim.lr_end": 5.0, "quant.rules.0.clip": None})
    state = torch.load(res_free["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert max(v.abs().max() for k, v in state.items() if k.endswith("weight") and v.dim() == 2) > 1.0


def test_learning_rate_decays_exponentially_per_epoch(tmp_path):
    res = run_train(tmp_path, "mnist_cpu_float", **{"trainer.max_epochs": 3, "optim.lr_start": 1e-2,
                                                      "optim.lr_end": 1e-5})
    lrs = [row["lr"] for row in res["curve"]]
    gamma = (1e-5 / 1e-2) ** (1 / 3)
    assert lrs == pytest.approx([1e-2, 1e-2 * gamma, 1e-2 * gamma**2], rel=1e-6)


def test_glorot_learning_rate_scaling_per_layer():
    _, cfg = load_config("mnist_cpu_det", ROOT / "papers/binaryconnect/configs")
    module = Classifier(cfg.to_dict(), (1, 28, 28), 10)
    groups = module.param_groups()
    layers = [m for _, m in quant_layers(module.model)]
    scaled = {id(g["params"][0]): g["lr_scale"] for g in groups[1:]}
    assert len(scaled) == len(layers) == 4 and all(len(g["params"]) == 1 for g in groups[1:])
    for m in layers:
        fan_in, fan_out = m.fans()
        assert scaled[id(m.weight)] == pytest.approx(1 / math.sqrt(1.5 / (fan_in + fan_out)))
    assert glorot_lr_scale(784, 1024) == pytest.approx(34.71, abs=0.01)
    assert groups[0]["lr_scale"] == 1.0  # biases and BN parameters use the plain rate
    opt = module.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3] + [1e-3 * s for s in scaled.values()])


def test_squared_hinge_matches_hand_computation():
    out = torch.tensor([[0.5, -2.0, 1.5], [0.0, 0.3, -0.4]])
    y = torch.tensor([2, 0])
    # targets +-1: row 0 -> [-1,-1,+1], row 1 -> [+1,-1,-1]
    terms = [max(0, 1 + 0.5) ** 2, max(0, 1 - 2.0) ** 2, max(0, 1 - 1.5) ** 2,
             max(0, 1 - 0.0) ** 2, max(0, 1 + 0.3) ** 2, max(0, 1 - 0.4) ** 2]
    assert squared_hinge(out, y).item() == pytest.approx(sum(terms) / 6)


def test_parameter_bits_counts_binary_weights_as_one_bit():
    _, cfg = load_config("mnist_cpu_det", ROOT / "papers/binaryconnect/configs")
    model = Classifier(cfg.to_dict(), (1, 28, 28), 10).model
    weights = 784 * 1024 + 1024 * 1024 * 2 + 1024 * 10
    others = sum(p.numel() for p in model.parameters()) - weights
    assert parameter_bits(model) == weights + 32 * others


def test_missing_dataset_exits_2_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "papers.binaryconnect", "train", "--config", "mnist_cpu_det",
                           "--wandb", "disabled", "--data-dir", str(tmp_path / "empty"),
                           "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "empty") in lines[0] and "MNIST/raw" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_help_lists_configs_with_descriptions():
    proc = subprocess.run([sys.executable, "-m", "papers.binaryconnect", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for name in BC_CONFIGS:
        assert f"  {name}  " in proc.stdout


def test_mnist_data_module_on_real_mnist(mnist_dir):
    _, cfg = load_config("mnist_cpu_det", ROOT / "papers/binaryconnect/configs")
    dm = ClassificationData(cfg.data, mnist_dir)
    dm.setup()
    tr, va, te = (dm._splits[s] for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (50000, 10000, 10000)
    assert tr.x.shape == (50000, 1, 28, 28) and tr.x.dtype == torch.float32
    assert tr.x.mean(0).abs().max() < 1e-5  # 'center': the per-pixel training mean is subtracted
    raw = __import__("torchvision").datasets.MNIST(mnist_dir, train=True)
    assert torch.equal(va.y, raw.targets[50000:])  # validation = the last 10k training samples
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 1, 28, 28) and y.shape == (100,)


def test_init_from_loads_the_float_network_and_is_recorded(tmp_path, capsys):
    from common.checkpoint import load_weights

    float_res = run_train(tmp_path, "mnist_cpu_float", paper="dorefa")
    ft = run_train(tmp_path, "mnist_cpu_w1a2g4_ft", paper="dorefa", init_from="mnist_cpu_float")
    assert ft["init_from"] == float_res["checkpoint"] and ft["config"]["init_from"] == "mnist_cpu_float"
    # the weights it starts from are exactly the float run's (BN statistics included)
    _, cfg = load_config("mnist_cpu_w1a2g4_ft", ROOT / "papers/dorefa/configs", smoke_overrides("mnist_cpu_w1a2g4_ft", "dorefa"))
    module = Classifier(cfg.to_dict(), (1, 28, 28), 10)
    load_weights(module.model, Path(float_res["checkpoint"]))
    state = torch.load(float_res["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, state["model." + k]), k
    # the same through --init-from with a path
    res = run_train(tmp_path / "b", "mnist_cpu_w1a2g4", paper="dorefa")
    argv = ["train", "--config", "mnist_cpu_w1a2g4", "--init-from", float_res["checkpoint"], "--wandb", "disabled",
            "--no-progress", "--results-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "c"),
            "--set", *smoke_overrides("mnist_cpu_w1a2g4", "dorefa")]
    assert main("dorefa", "unused", argv) == 0
    with_init = json.loads((tmp_path / "c/dorefa/mnist_cpu_w1a2g4/seed1.json").read_text())
    assert with_init["init_from"] == float_res["checkpoint"] and with_init["curve"] != res["curve"]


@pytest.mark.parametrize("init_from,message", [
    ("nope.ckpt", "init_from: checkpoint nope.ckpt not found"),
    ("mnist_cpu_nothing", "init_from: 'mnist_cpu_nothing': no result"),
    ("TWN", "does not fit this config's model"),
])
def test_bad_init_from_exits_2_and_writes_nothing(tmp_path, capsys, init_from, message):
    if init_from == "TWN":  # a real checkpoint of another architecture
        init_from = run_train(tmp_path / "twn", "mnist_cpu_float", paper="twn")["checkpoint"]
        capsys.readouterr()
    argv = ["train", "--config", "mnist_cpu_w1a2g4", "--init-from", init_from, "--wandb", "disabled", "--no-progress",
            "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--set", *smoke_overrides("mnist_cpu_w1a2g4", "dorefa")]
    assert main("dorefa", "unused", argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_crop_flip_augmentation():
    from common.data import crop_flip

    x = torch.randn(64, 3, 8, 8)
    out = crop_flip(x, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for img, src in zip(out, padded):  # every output is a window of its padded image, maybe mirrored
        windows = [src[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(2)) for w in windows)
    flipped = sum(not any(torch.equal(img, src[:, i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
                  for img, src in zip(out, padded))
    assert 10 < flipped < 54  # about half are mirrored
