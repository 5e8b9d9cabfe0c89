"""Config loading, inheritance, overrides and strict validation (in-process and through the CLI)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.config import apply_override, load_config, validate
from common.errors import UserError
from leaderboard.collect import SHARED

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIGS = sorted(p for p in (ROOT / "papers").glob("*/configs/*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_config_loads_and_builds(path):
    import importlib

    from common.data import DATASETS
    from common.module import Classifier

    paper = importlib.import_module(f"papers.{path.parent.parent.name}")  # registers the paper's own models
    name, cfg = load_config(str(path), path.parent)
    if hasattr(paper, "check"):
        paper.check(cfg)
    assert cfg.description, f"{name} has no description"
    # the shared setting (common/configs) is a comparison, not a claim
    assert cfg.claims or name.startswith(SHARED), f"{name} names no claim"
    for ref in (cfg.baseline, cfg.init_from):  # config names: "config" here, or "paper/config" of another paper
        if ref:
            owner, _, other = ref.rpartition("/")
            folder = path.parent.parent.parent / owner / "configs" if owner else path.parent
            assert (folder / f"{other}.yaml").is_file(), f"{name}: config {ref} missing"
    info = DATASETS[cfg.data.name]
    module = Classifier(cfg.to_dict(), info.shape, info.num_classes)  # the model builds and the rules apply
    # one training step's forward and backward on two random samples (every config, ImageNet-sized ones included)
    x = torch.randn(2, *info.shape)
    module.train()
    module.loss_fn(module(x), torch.tensor([0, 1])).backward()


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_extends_merges_and_lists_replace(tmp_path):
    _write(tmp_path, "data: {batch_size: 7, name: mnist}\nmodel: {name: mlp, widths: [4, 4]}\n", "_base.yaml")
    _write(tmp_path, "extends: _base\nmodel: {widths: [3]}\n")
    _, cfg = load_config("c", tmp_path)
    assert cfg.data.batch_size == 7 and cfg.model["widths"] == [3] and cfg.model["name"] == "mlp"


def test_multiple_bases_apply_in_order(tmp_path):
    _write(tmp_path, "data: {batch_size: 7}\n", "a.yaml")
    _write(tmp_path, "data: {batch_size: 9, val_size: 3}\n", "b.yaml")
    _write(tmp_path, "extends: [a, b]\ndata: {val_size: 4}\n")
    _, cfg = load_config("c", tmp_path)
    assert (cfg.data.batch_size, cfg.data.val_size) == (9, 4)


def test_overrides_parse_yaml_values_and_list_indices(tmp_path):
    _write(tmp_path, "model: {name: mlp}\nquant: {rules: [{layers: all, weight: {name: sign}}]}\n")
    _, cfg = load_config("c", tmp_path, ["optim.lr_start=1e-2", "quant.rules.0.weight.name=sign_stochastic",
                                         "model.widths=[8, 8]", "optim.lr_end=null"], seed=5)
    assert cfg.optim.lr_start == 0.01 and cfg.quant.rules[0].weight["name"] == "sign_stochastic"
    assert cfg.model["widths"] == [8, 8] and cfg.optim.lr_end is None and cfg.seed == 5


@pytest.mark.parametrize("override,message", [
    ("data.batchsize=3", "data.batchsize: unknown key"),
    ("data.batch_size=abc", "data.batch_size: expected an integer"),
    ("data.batch_size=0", "data.batch_size: expected a value >= 1"),
    ("optim.name=rmsprop", "optim.name: expected one of 'adam', 'sgd'"),
    ("model.widths=[16, 0]", "model.widths[1]: expected a value >= 1"),
    ("model.depth=3", "model.depth: unknown key"),
    ("model.name=resnet9000", "model.name: unknown model 'resnet9000'"),
    ("quant.rules=[{weight: {name: sign, H: 0}}]", "quant.rules[0].weight.H: expected a value > 0"),
    ("quant.rules=[{weight: {name: sgn}}]", "quant.rules[0].weight.name: unknown quantizer 'sgn'"),
    ("quant.rules=[{weight: {name: sign, bits: 33}}]", "quant.rules[0].weight.bits: unknown key"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs: expected an integer"),
    ("optim.lr_end=1.0", "optim.lr_end: expected a value <= optim.lr_start"),
    ("loss=hinge", "loss: expected one of"),
])
def test_validation_errors_name_the_key(tmp_path, override, message):
    _write(tmp_path, "model: {name: mlp}\n")
    with pytest.raises(UserError) as err:
        load_config("c", tmp_path, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    _write(tmp_path, "data: {batch_size: [\n", "broken.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("broken", tmp_path)
    _write(tmp_path, "extends: b\n", "a.yaml")
    _write(tmp_path, "extends: a\n", "b.yaml")
    with pytest.raises(UserError, match="'extends' cycle"):
        load_config("a", tmp_path)
    _write(tmp_path, "extends: nowhere\n", "orphan.yaml")
    with pytest.raises(UserError, match="config file not found"):
        load_config("orphan", tmp_path)
    with pytest.raises(UserError, match="no such config"):
        load_config("nonexistent", tmp_path)
    with pytest.raises(UserError, match="expected key.path=value"):
        apply_override({}, "novalue")


def test_range_for_bits_style_arguments():
    """Registered arguments with declared ranges reject out-of-range values (bits 0 or 33 for k-bit quantizers)."""
    from common.validate import Range, check_kwargs

    def quantizer(bits: int = 8):
        return bits

    for bad in (0, 33):
        with pytest.raises(UserError, match=r"bits: expected a value in 1\.\.32"):
            check_kwargs(quantizer, {"bits": bad}, "quant.rules[0].weight", {"bits": Range(1, 32)})
    assert check_kwargs(quantizer, {"bits": 32}, "w", {"bits": Range(1, 32)}) == {"bits": 32}


def test_validate_round_trips():
    cfg = validate({"model": {"name": "mlp", "widths": [4]}, "quant": {"rules": [{"weight": {"name": "sign"}}]}})
    again = validate(cfg.to_dict())
    assert again == cfg and again.hash() == cfg.hash()


@pytest.mark.parametrize("args,message", [
    (["--set", "data.batch_sise=3"], "data.batch_sise: unknown key"),
    (["--set", "optim.lr_start=fast"], "optim.lr_start: expected a number"),
    (["--set", "quant.rules.0.weight.H=-1"], "quant.rules[0].weight.H: expected a value > 0"),
    (["--config", "no_such_config"], "no such config"),
])
def test_cli_config_errors_exit_2_and_write_nothing(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "papers.binaryconnect", "train", "--config", "mnist_cpu_det",
                           "--wandb", "disabled", "--results-dir", str(tmp_path / "results"),
                           "--runs-dir", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []  # no results/, no runs/
