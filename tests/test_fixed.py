"""Fixed point (Gupta), dynamic fixed point (Courbariaux) and the training mechanisms they need: stored-value
quantization (no master copy), frozen layers, range calibration, linear LR decay, momentum ramp, max-norm."""

import pytest
import torch

from common.module import Classifier, DecayFactor
from common.quant import QLinear, after_step, build_quantizer, select
from common.quant.fixed import to_fixed
from tests.test_train import ROOT, load_config, run_train, smoke_overrides


def fixed(**kw):
    return build_quantizer({"name": "fixed", **kw})


@pytest.mark.parametrize("wl,fl", [(16, 8), (16, 14), (8, 4), (4, 1)])
def test_fixed_values_on_the_grid_and_saturated(wl, fl):
    eps = 2.0**-fl
    x = torch.randn(20000) * 2 ** (wl - fl - 1)  # spans past both ends of the range
    out = fixed(wl=wl, fl=fl)(x)
    lo, hi = -(2 ** (wl - 1)) * eps, (2 ** (wl - 1) - 1) * eps  # two's complement <IL, FL>, sign in IL
    assert torch.equal(out, (torch.floor(x / eps + 0.5) * eps).clamp(lo, hi))
    assert out.min() == lo and out.max() == hi  # saturation reached on both sides
    assert torch.equal(out / eps, (out / eps).round())
    inside = (x > lo) & (x < hi)
    assert ((out - x)[inside].abs() <= eps / 2).all()
    sym = fixed(wl=wl, fl=fl, range="symmetric")(x)  # Courbariaux: +-(2^NOB - 1) eps, NOB = wl - 1
    assert sym.min() == -hi and sym.max() == hi


def test_nearest_rounds_ties_up():
    x = torch.tensor([0.5, 1.5, -0.5, -1.5, 0.25]) * 2.0**-4
    assert to_fixed(x, 16, 4).mul(16).tolist() == [1.0, 2.0, 0.0, -1.0, 0.0]


def test_stochastic_rounding_is_unbiased_and_seeded():
    x = torch.rand(256) * 0.2 - 0.1
    q = fixed(wl=8, fl=4, rounding="stochastic")  # eps = 1/16, most |x| below eps/2: nearest would give 0
    torch.manual_seed(5)
    draws = torch.stack([q(x) for _ in range(10000)])
    # one draw's error has std <= eps/2; the mean of 10000 has std <= eps/200: tolerance eps/40 is 5 sigma
    assert ((draws.mean(0) - x).abs() <= (1 / 16) / 40).all()
    assert torch.equal(torch.unique(draws / (1 / 16)), torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]))
    torch.manual_seed(5)
    assert torch.equal(q(x), draws[0])  # the same seed gives the same rounding


def test_fixed_gradient_is_straight_through():
    x = (torch.randn(100) * 10).requires_grad_()
    g = torch.randn(100)
    fixed(wl=8, fl=4)(x).backward(g)
    assert torch.equal(x.grad, g)


def dyn(**kw):
    return build_quantizer({"name": "dynamic_fixed", "wl": 8, "update_every": 10, **kw}).train()


def test_dynamic_range_grows_on_overflow_and_shrinks_when_there_is_room():
    q = dyn(init_il=0, max_overflow=0.01)  # 8 bits: largest value (127/128) * 2^il
    big = torch.linspace(-3.5, 3.5, 1000)  # |x| up to 3.5: at il = 0 half of it overflows
    for _ in range(10):
        q(big)
    assert int(q.il) == 1  # one step up per update
    for _ in range(20):
        q(big)
    assert int(q.il) == 2  # at il = 2 (max 3.97) the rate is 0, at il = 1 (max 1.98) it is > 1%: stays
    for _ in range(30):
        q(big * 0.01)  # now everything fits far below: il comes down one step per update
    assert int(q.il) == -1
    out = q(big * 0.01)
    fl = 8 - 1 - int(q.il)
    assert torch.equal(out, to_fixed(big * 0.01, 8, fl, "nearest", "symmetric"))


def test_dynamic_range_from_data_and_calibration_passes_through():
    q = dyn(init_il=None, max_overflow=0.0)
    zeros = torch.zeros(10)
    assert torch.equal(q(zeros), zeros) and not bool(q.initialised)  # nothing to measure yet
    x = torch.tensor([0.3, -0.2, 0.05])
    q(x)
    assert int(q.il) == -1  # largest value at il = -1: 127/128 * 0.5 >= 0.3; at il = -2 0.3 would overflow
    q.calibrating = True
    y = torch.randn(50) * 5
    assert torch.equal(q(y), y)


def test_update_quantizer_keeps_the_stored_weights_on_the_grid():
    layer = QLinear(20, 5, update=fixed(wl=16, fl=8))
    after_step(layer)
    for p in (layer.weight, layer.bias):
        assert torch.equal(p * 256, (p * 256).round())
    assert layer.bits()["w"] == 16 and layer.bias_update_quantizer is not layer.update_quantizer


def test_stochastic_rounding_lets_small_updates_survive():
    """Gupta et al.'s point: without a master copy, updates below eps/2 vanish with round-to-nearest and survive,
    in expectation, with stochastic rounding."""
    for rounding, moved in (("nearest", False), ("stochastic", True)):
        torch.manual_seed(0)
        layer = QLinear(100, 100, bias=False, update=fixed(wl=16, fl=8, rounding=rounding))
        after_step(layer)
        start = layer.weight.detach().clone()
        for _ in range(100):
            with torch.no_grad():
                layer.weight += 1e-4  # each update is 1/40 of a step
            after_step(layer)
        drift = float((layer.weight.detach() - start).mean())
        assert (abs(drift - 0.01) < 0.002) if moved else drift == 0.0


def test_first_and_last_n_selectors():
    names = ["a", "b", "c", "d"]
    assert select("first:2", names) == ["a", "b"] and select("last:3", names) == ["b", "c", "d"]
    assert select("last:0", names) == [] and select("first:9", names) == names


def test_frozen_layers_do_not_move(tmp_path):
    res = run_train(tmp_path, "mnist_cpu_top_4_4_4", paper="fxptrain", init_from=None)
    state = torch.load(res["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    _, cfg = load_config("mnist_cpu_top_4_4_4", ROOT / "papers/fxptrain/configs",
                         smoke_overrides("mnist_cpu_top_4_4_4", "fxptrain", init_from=None))
    torch.manual_seed(1)  # the run's seed: the same initial weights
    fresh = Classifier(cfg.to_dict(), (1, 28, 28), 10).state_dict()
    for layer in ("model.0", "model.4"):  # the two convolutions, frozen
        assert torch.equal(state[f"{layer}.weight"], fresh[f"{layer}.weight"])
    assert not torch.equal(state["model.12.weight"], fresh["model.12.weight"])  # the last FC trains


def test_stage_wise_chain_carries_quantizer_state(tmp_path):
    run_train(tmp_path, "mnist_cpu_float", paper="fxptrain")
    s1 = run_train(tmp_path, "mnist_cpu_staged_4_4_4_s1", paper="fxptrain", init_from="mnist_cpu_float")
    s2 = run_train(tmp_path, "mnist_cpu_staged_4_4_4_s2", paper="fxptrain", init_from="mnist_cpu_staged_4_4_4_s1")
    assert s2["init_from"] == s1["checkpoint"]
    assert [(r["layer"], r["w"]) for r in s2["layers"]] == [("0", 4), ("4", 4)]  # layers 1-2 quantized
    a = torch.load(s1["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert "model.0.weight_quantizer.il" in a and "model.4.weight_quantizer.il" not in a


def test_calibration_restores_the_initial_weights_and_keeps_the_ranges(tmp_path, monkeypatch):
    import common.training as training

    seen = {}
    real = training.calibrate

    def spy(module, data, cfg, progress):
        seen["before"] = {k: v.clone() for k, v in module.state_dict().items()}
        real(module, data, cfg, progress)
        seen["after"] = {k: v.clone() for k, v in module.state_dict().items()}

    monkeypatch.setattr(training, "calibrate", spy)
    run_train(tmp_path, "pimnist_cpu_dfxp", paper="lowprec",
              **{"quant.calibrate_epochs": 1, "quant.rules.0.input.update_every": 1})
    before, after = seen["before"], seen["after"]
    for k in before:
        if k.endswith(".il"):
            continue
        assert torch.equal(before[k], after[k]) or "quantizer" in k, k
    assert any(int(before[k]) != int(after[k]) for k in before if k.endswith("input_quantizer.il"))


def test_linear_decay_and_momentum_ramp(tmp_path):
    f = DecayFactor(0.1, 4, "linear")
    assert [round(f(e), 6) for e in range(6)] == [1.0, 0.775, 0.55, 0.325, 0.1, 0.1]
    g = DecayFactor(0.01, 2, "exponential")
    assert [round(g(e), 6) for e in range(4)] == [1.0, 0.1, 0.01, 0.01]
    res = run_train(tmp_path, "pimnist_cpu_float", paper="lowprec",
                    **{"trainer.max_epochs": 3, "optim.lr_decay_epochs": 2, "optim.momentum_epochs": 2})
    assert [round(r["lr"], 6) for r in res["curve"]] == [0.05, 0.0275, 0.005]


def test_max_norm_caps_each_unit(tmp_path):
    res = run_train(tmp_path, "pimnist_cpu_float", paper="lowprec", **{"optim.max_norm": 0.05,
                                                                        "optim.lr_start": 1.0, "optim.lr_end": 0.1})
    state = torch.load(res["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    w = state["model.2.weight"]
    assert w.norm(dim=1).max() <= 0.05 + 1e-6
