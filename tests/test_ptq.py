"""Post-training methods against their definitions: Sung's L2-optimal uniform step, Ristretto's integer lengths and
bit-width search, Qiu's argmin-L1 fractional lengths, SQNR's step and allocation, Moons' search; the quantize and
finetune commands and their errors."""
import json
import math

import pytest
import torch

import papers.qiu
import papers.ristretto
import papers.sung
from common.cli import main
from common.ptq import Calibration, merge_rules
from common.quant import build_quantizer
from common.quant.fixed import to_fixed
from tests.test_train import run_quantize, smoke_overrides


def test_uniform_quantizer_has_2b_minus_1_levels():
    q = build_quantizer({"name": "uniform", "bits": 3, "step": 0.25})
    out = q(torch.randn(10000) * 2)
    assert torch.equal(out.unique(), torch.arange(-3, 4) * 0.25)  # M = 7 levels, symmetric, zero included


def test_sung_step_is_the_l2_optimum():
    torch.manual_seed(0)
    w = torch.randn(200000)
    step = papers.sung.l2_step(w, 2)
    assert abs(step - 1.224) < 0.03  # the optimal 3-level uniform quantizer of N(0, 1) (Max 1960)
    q = lambda s: (w - torch.floor(w / s + 0.5).clamp(-1, 1) * s).square().sum()  # noqa: E731
    assert all(q(step) <= q(s) * 1.0001 for s in torch.linspace(0.5, 2.0, 61).tolist())


class FakeCal:
    """A Calibration stand-in: two layers with known weights and inputs, and a scripted validation error."""

    def __init__(self, errors):
        self.layers, self.kind = ["c", "f"], {"c": "conv", "f": "fc"}
        self._w = {"c": torch.tensor([0.3, -0.6]), "f": torch.tensor([1.7, 0.1])}
        self._x = {"c": torch.tensor([0.0, 1.0]), "f": torch.tensor([3.0, 0.5])}
        self.errors = errors

    def weight(self, n):
        return self._w[n]

    def inputs(self, rules=()):
        return self._x

    def error(self, rules=()):
        if not rules:
            return 1.0
        kinds = {k for r in rules for k in ("weight", "input") if r.get(k)}
        layer = rules[0]["layers"][0]
        part = "act" if "input" in kinds and "weight" not in kinds else self.kind[layer]
        bits = (rules[0].get("input") or rules[0].get("weight"))["wl"]
        return self.errors.get((part, bits), 1.0) if len(rules) < 3 else 1.5


def test_ristretto_integer_lengths():
    rules, report = papers.ristretto.RistrettoSearch(conv_bits=8, fc_bits=8, act_bits=8).choose(FakeCal({}))
    by = {r["layers"][0]: r for r in rules}
    # weights: IL = ceil(log2 max|w|) + 1 (sign included): c: max 0.6 -> 0 + 1 -> fl 7; f: max 1.7 -> 1 + 1 -> fl 6
    assert by["c"]["weight"]["fl"] == 7 and by["f"]["weight"]["fl"] == 6
    # activations one bit less: IL = ceil(log2 max|x|): c: max 1 -> 0 -> fl 8; f: max 3 -> 2 -> fl 6
    assert by["c"]["input"]["fl"] == 8 and by["f"]["input"]["fl"] == 6
    assert by["c"]["weight"]["training"] == "stochastic" and by["c"]["input"]["training"] == "off"
    assert by["c"]["weight"]["name"] == by["c"]["input"]["name"] == "ristretto_fixed"


def test_ristretto_fixed_rounds_as_asked_while_training_and_as_the_format_at_test():
    torch.manual_seed(0)
    x = torch.randn(4000) * 3
    plain = to_fixed(x, 8, 4)
    for training, expect in (("same", "nearest"), ("stochastic", "stochastic"), ("off", None)):
        q = build_quantizer({"name": "ristretto_fixed", "wl": 8, "fl": 4, "training": training})
        q.eval()
        assert torch.equal(q(x), plain)  # at test time, always the format itself
        q.train()
        torch.manual_seed(1)
        got = q(x)
        torch.manual_seed(1)
        want = x if expect is None else to_fixed(x, 8, 4, expect)
        assert torch.equal(got, want), training
        y = x.clone()
        torch.manual_seed(1)
        q.quantize_(y)
        assert torch.equal(y, want), training


def test_a_stored_config_with_the_former_fixed_training_switch_still_reads():
    """Results written before the switch moved into Ristretto store {name: fixed, training: ...}: they read as
    ristretto_fixed, so the committed results stay up to date and keep their cost column."""
    from common.config import validate
    from common.results import stored_config, stored_config_valid

    rules = [{"layers": ["c"], "weight": {"name": "fixed", "wl": 8, "fl": 7, "training": "stochastic"},
              "input": {"name": "fixed", "wl": 8, "fl": 6}}]
    stored = {"model": {"name": "mlp"}, "quant": {"rules": rules}}
    with pytest.raises(Exception, match="training: unknown key"):
        validate(stored)
    cfg = stored_config(stored)
    assert cfg.quant.rules[0].weight["name"] == "ristretto_fixed" and cfg.quant.rules[0].input["name"] == "fixed"
    assert stored_config_valid(stored)
    from common.module import Classifier  # a checkpoint of that time stores the same config: it still loads

    net = Classifier({**stored, "model": {"name": "mlp", "widths": [16]}, "quant": {"rules": [{**rules[0], "layers": "all"}]}},
                     (1, 4, 4), 3).model
    assert any(type(m).__name__ == "RistrettoFixed" for m in net.modules())


def test_ristretto_search_keeps_the_smallest_width_within_the_margin():
    errors = {("conv", 16): 1.0, ("conv", 8): 1.2, ("conv", 4): 1.9, ("conv", 2): 2.5, ("conv", 1): 1.0,
              ("fc", 16): 1.0, ("fc", 8): 1.1, ("fc", 4): 3.0, ("act", 16): 1.0, ("act", 8): 1.0, ("act", 4): 1.0,
              ("act", 2): 1.9, ("act", 1): 90.0}
    _, report = papers.ristretto.RistrettoSearch(error_margin=1.0).choose(FakeCal(errors))
    # conv: 4 bits cost 0.9 (within 1 point), 2 bits 1.5: stop there (1 bit is never tried)
    assert report["bits"] == {"conv": 4, "fc": 8, "act": 2}
    assert list(report["sweeps_val_err"]["conv"]) == [16, 8, 4, 2]  # widths tried, in order; 1 bit never


def test_qiu_fractional_length_minimises_l1():
    torch.manual_seed(0)
    x = torch.randn(5000) * 0.3
    f, errors = papers.qiu.best_fl([x], [8], span=4)
    brute = {g: float((x - to_fixed(x, 8, g)).abs().sum()) for g in range(-5, 20)}
    assert f == min(brute, key=brute.get) and errors[f] == pytest.approx(brute[f])


def test_calibration_inputs_follow_the_rules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x = torch.randn(8, 4)
    cal = Calibration(model, [(x, torch.zeros(8, dtype=torch.long))], [(x, torch.zeros(8, dtype=torch.long))])
    assert torch.equal(cal.inputs()["0"], x) and torch.equal(cal.inputs()["2"], torch.relu(model[0](x)))
    rules = merge_rules({"0": {"weight": {"name": "fixed", "wl": 4, "fl": 1}}})
    assert not torch.equal(cal.inputs(rules)["2"], cal.inputs()["2"])  # measured in the quantized network
    assert isinstance(model[0], torch.nn.Linear)  # the float network itself is untouched


def test_finetune_starts_from_the_quantized_float_network(tmp_path):
    q = run_quantize(tmp_path, "mnist_cpu_4_4_4", "ristretto", command="finetune")
    assert q["config_name"] == "mnist_cpu_4_4_4_finetuned" and q["epochs"] == 1
    assert q["before_finetune"]["test_top1_err"] >= 0 and q["ptq"]["bits"] == {"conv": 4, "fc": 4, "act": 4}
    before = json.loads((tmp_path / "results/ristretto/mnist_cpu_4_4_4/seed1.json").read_text())
    assert before["metrics"] == q["before_finetune"]


def test_a_post_training_rerun_that_reproduces_its_result_leaves_the_file(tmp_path):
    """finetune quantizes first: where that reproduces the quantize result bit for bit, the file (and the commit and
    time it records) stays as it was; a result it does not reproduce is replaced."""
    run_quantize(tmp_path, "mnist_cpu_4_4_4", "ristretto")
    path = tmp_path / "results/ristretto/mnist_cpu_4_4_4/seed1.json"
    old = json.loads(path.read_text())
    old["git_commit"], old["wall_time_s"] = "f" * 40, 12345.0  # provenance only: still reproduced
    path.write_text(json.dumps(old))
    run_quantize(tmp_path, "mnist_cpu_4_4_4", "ristretto", command="finetune")
    assert json.loads(path.read_text()) == old
    old["metrics"]["test_top1_err"] += 1.0  # not reproduced: replaced by the run's own
    path.write_text(json.dumps(old))
    run_quantize(tmp_path, "mnist_cpu_4_4_4", "ristretto")
    assert json.loads(path.read_text())["git_commit"] != "f" * 40


@pytest.mark.parametrize("argv,message", [
    (["quantize", "--config", "mnist_cpu_float"], "no 'ptq' section"),
    (["quantize", "--config", "mnist_cpu_search", "--from", "nope.ckpt"], "init_from: checkpoint nope.ckpt not found"),
    (["quantize", "--config", "mnist_cpu_search", "--set", "ptq.error_margin=-1"], "ptq.error_margin"),
])
def test_post_training_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = ["--results-dir", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs"), "--wandb", "disabled"]
    argv = argv + out + (["--set", *smoke_overrides("mnist_cpu_search", "ristretto")] if "--set" not in argv else [])
    assert main("ristretto", "unused", argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_sqnr_step_is_the_mse_optimum_and_near_max_1960():
    import papers.sqnr

    c = papers.sqnr.optimal_step(4)
    x = torch.randn(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mse = lambda s: float((x - to_fixed(x / s, 4, 0) * s).square().mean())  # noqa: E731
    assert all(mse(c) <= mse(s) * 1.002 for s in torch.linspace(0.2, 0.6, 41).tolist())
    assert abs(c - 0.335) < 0.02  # Max's optimal 16-level uniform step for N(0, 1) (mid-rise: 0.335)


def test_sqnr_allocation_follows_the_closed_form():
    import papers.sqnr

    sizes = {"a": 1000, "b": 10000, "c": 100000}
    bits = papers.sqnr.sqnr_bits(sizes, 8, kappa=6.02)
    # beta_l = o - (10 / kappa) log10(rho_l) up to rounding: beta_l + (10 / kappa) log10(rho_l) is the same o for
    # every layer within one bit either way, and more weights never get more bits
    d = [bits[n] + 10 / 6.02 * math.log10(r) for n, r in sizes.items()]
    assert max(d) - min(d) < 2 and bits["a"] > bits["b"] > bits["c"]
    assert sum(sizes[n] * b for n, b in bits.items()) <= 8 * sum(sizes.values())


def test_moons_search_lowers_bits_within_the_budget():
    import papers.moons

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.randn(256, 8)
    y = model(x).argmax(1)  # the float network is right on every sample: float error 0
    cal = Calibration(model, [(x, y)], [(x, y)])
    rules, report = papers.moons.MoonsSearch(budget=5.0).choose(cal)
    assert cal.error(rules) <= 5.0 and max(report["weight_bits"].values()) <= 10
    assert report["bitops_per_sample"] == sum(report["weight_bits"][n] * report["input_bits"][n] * m
                                              for n, m in {"0": 8 * 16, "2": 16 * 3}.items())
