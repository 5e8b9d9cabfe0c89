"""The packed-network engine (engine/): file format, packing round trips, exact BN+sign folding, and agreement of the
engine with the simulated (float32, eval mode) network.

Tolerance stated once: binary activations (every op's bits) must be *equal*, predictions (argmax) *equal*, and
logits within LOGIT_TOL * max(1, max |logit|). The engine computes the papers' arithmetic (exact integer popcount
sums, alpha applied once per output) where the simulation multiplies alpha into the weights and adds the bias
inside the BLAS accumulation; those differ by float32 rounding only (seen: <= 1e-6 relative on these nets, 0 for
BNN, XNOR-with-float-last-layer and BinaryConnect).
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.config import load_config
from common.errors import UserError
from common.module import Classifier
from common.quant import QConv2d, QLinear
from common.quant.binary import ScaledSign, Sign
from common.quant.fixed import Fixed, Uniform
from common.quant.ternary import Ternary
from engine import Engine, export, export_checkpoint, load, ops
from engine.fileformat import MAGIC, read, write
from engine.fold import int_to_real, sign_thresholds, threshold_ge

ROOT = Path(__file__).resolve().parent.parent
LOGIT_TOL = 1e-5
FIXED_LOGIT_TOL = 1e-3  # fixed-point inputs: see test_shared_setting_nets_agree
SHARED = [("bnn", "mnist_lenet5"), ("xnor", "mnist_lenet5_xnor"), ("xnor", "mnist_lenet5_bwn"),
          ("binaryconnect", "mnist_lenet5_det"), ("twn", "mnist_lenet5"), ("lowprec", "mnist_lenet5_dfxp"),
          ("gupta", "mnist_lenet5_fl14_sr"), ("qnn", "mnist_lenet5_w1a2"), ("dorefa", "mnist_lenet5_w1a2")]


def simulate(net: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's output of the simulated network (eval mode), by module name."""
    out = {}
    with torch.no_grad():
        for name, m in net.named_children():
            x = m(x)
            out[name] = x
    return out


def check_agrees(net: nn.Sequential, engine: Engine, x: torch.Tensor, logit_tol: float | None = None) -> None:
    sim = simulate(net, x)
    logits, trace = engine.run(x, trace=True)
    for name, act, is_bits in trace:  # ops whose output is binary must give the very same bits
        if is_bits:
            assert torch.equal(act, sim[name]), f"binary activations after {name} differ"
        else:
            assert act.shape == sim[name].shape
    ref = sim[list(sim)[-1]]
    assert torch.equal(logits.argmax(1), ref.argmax(1))
    tol = (logit_tol or LOGIT_TOL) * max(1.0, float(ref.abs().max()))
    assert float((logits - ref).abs().max()) <= tol


def randomize_bn(net: nn.Module, g: torch.Generator, zero_gamma: bool = True) -> None:
    """Non-trivial eval statistics, some gamma < 0 and (optionally) one gamma == 0 per layer."""
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 3)
                m.running_var.copy_(torch.rand(n, generator=g) * 20 + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
                if zero_gamma:
                    m.weight[0] = 0.0


# ------------------------------------------------------------------------------------------------ packing

@pytest.mark.parametrize("k", [1, 7, 63, 64, 65, 500, 801])
def test_bit_packing_round_trip_and_numpy_layout(k):
    bits = torch.rand(5, k) < 0.5
    packed = ops.pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, ops.padded_bytes(k)) and packed.shape[1] % 8 == 0
    assert torch.equal(ops.unpack_bits(packed, k), bits)
    assert np.array_equal(packed.numpy(), ops.numpy_pack_bits(bits.numpy()))
    t = torch.randint(-1, 2, (3, k), dtype=torch.int8)
    assert torch.equal(ops.unpack_ternary(*ops.pack_ternary(t), k), t)


@pytest.mark.parametrize("k", [1, 45, 64, 129, 500])
def test_binary_gemm_backends_are_exact(k):
    a, b = torch.rand(37, k) < 0.5, torch.rand(11, k) < 0.5
    ref = ops.pm1(a, torch.int64) @ ops.pm1(b, torch.int64).T
    pa, pb = ops.pack_bits(a), ops.pack_bits(b)
    for backend in ops.available_backends():  # "kernel" where it builds (tests/test_engine_kernels.py: its paths)
        out = ops.binary_gemm(pa, pb, k, backend=backend)
        assert out.dtype == torch.int32 and torch.equal(out.long(), ref), backend


def test_packed_weights_round_trip(tmp_path):
    """sign / scaled_sign / ternary / fixed weights come back as the very values the simulated layer uses."""
    layers = [QLinear(70, 9, weight=Sign()), QLinear(70, 9, weight=ScaledSign(per="filter")),
              QLinear(70, 9, weight=Ternary(per="filter")), QLinear(70, 9, weight=Ternary(per="layer")),
              QLinear(70, 9, weight=Fixed(wl=8, fl=5)), QLinear(70, 9, weight=Fixed(wl=12, fl=9)),
              QLinear(70, 9, weight=Fixed(wl=4, fl=3)), QLinear(7, 3, weight=Fixed(wl=2, fl=1)),
              QLinear(70, 9, weight=Uniform(bits=8, step=0.0123)), QLinear(70, 9, weight=Uniform(bits=5, step=0.07)),
              QLinear(7, 3, weight=Uniform(bits=2, step=0.31))]
    for layer in layers:
        net = nn.Sequential(layer).eval()
        export(net, tmp_path / "w.lbp")
        eng = Engine(tmp_path / "w.lbp")
        lay = eng.ops[0][1]
        w = lay.w_real * (lay.alpha.view(-1, 1) if lay.alpha is not None else 1)
        with torch.no_grad():
            assert torch.equal(w, layer.quantized_weight()), layer.weight_quantizer
    # binary weights: the layer's 9 x 70 bits in one row (80 bytes), not 9 rows padded to 64 bits (144 bytes)
    export(nn.Sequential(layers[0]).eval(), tmp_path / "w.lbp")
    packed = load(tmp_path / "w.lbp")
    assert packed.arrays[packed.layers[0]["arrays"]["weight"]].shape == (ops.padded_bytes(9 * 70),) == (80,)
    packed.arrays[packed.layers[0]["arrays"]["weight"]] = np.zeros((9, 16), dtype=np.uint8)  # rows: not this layout
    write(packed, tmp_path / "rows.lbp")
    with pytest.raises(UserError, match="expected one uint8 row of 80 bytes"):
        Engine(tmp_path / "rows.lbp")


def test_weights_of_four_bits_or_fewer_are_packed_as_2_or_4_bit_codes(tmp_path):
    g = torch.Generator().manual_seed(11)
    for width in (2, 4):
        lim = 1 << (width - 1)
        for n in (0, 1, 3, 7, 64):  # counts that do not fill the last byte get padding codes
            q = torch.randint(-lim, lim, (n,), generator=g, dtype=torch.int8)
            packed = ops.pack_codes(q, width)
            assert packed.dtype == torch.uint8 and packed.numel() == -(-n * width // 8)
            assert torch.equal(ops.unpack_codes(packed, n, width), q)
    with pytest.raises(ValueError, match="array of 7 packed 4-bit codes is 4 bytes"):
        ops.unpack_codes(torch.zeros(3, dtype=torch.uint8), 7, 4)
    assert [ops.code_width(b) for b in (2, 3, 4, 5, 8)] == [2, 4, 4, None, None]
    sizes = {}
    for wl in (2, 4, 5):
        layer = QLinear(301, 33, weight=Fixed(wl=wl, fl=wl - 1))
        export(nn.Sequential(layer).eval(), tmp_path / f"w{wl}.lbp")
        sizes[wl] = (tmp_path / f"w{wl}.lbp").stat().st_size
        lay = Engine(tmp_path / f"w{wl}.lbp").ops[0][1]
        with torch.no_grad():
            assert torch.equal(lay.w_real, layer.quantized_weight())
    assert sizes[5] - sizes[4] >= 301 * 33 // 2 - 64  # half the weight bytes saved (headers and bias aside)
    assert sizes[4] - sizes[2] >= 301 * 33 // 4 - 64  # and half again at 2 bits
    packed = read(tmp_path / "w4.lbp")
    packed.layers[0]["weight"]["packed"] = "bytes"
    write(packed, tmp_path / "bad.lbp")
    with pytest.raises(UserError, match="unknown packing 'bytes'"):
        Engine(tmp_path / "bad.lbp")


# ------------------------------------------------------------------------------------------------ folding

@pytest.mark.parametrize("spatial", [False, True])
def test_thresholds_reproduce_bn_sign_exactly(spatial):
    g = torch.Generator().manual_seed(3)
    c, fan_in = 13, 75
    bn = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(c).eval()
    randomize_bn(bn, g)
    with torch.no_grad():
        bn.weight[1] = -bn.weight[1].abs()  # a gamma < 0
        bn.running_mean[2] = 1e4  # a flip outside [-F, F]: constant output
    alpha = torch.rand(c, generator=g) * 0.1
    bias = torch.randn(c, generator=g)
    for scale in (None, alpha):
        T, d = sign_thresholds(fan_in, c, scale, bias, bn, spatial, "test")
        ks = torch.arange(-fan_in, fan_in + 1, dtype=torch.int32)
        k = ks.view(-1, 1, 1, 1).expand(-1, c, 1, 1) if spatial else ks.view(-1, 1).expand(-1, c)
        with torch.no_grad():
            want = bn(int_to_real(k, scale, bias)) >= 0
        T_ge, down = threshold_ge(T, d)  # as the engine runs it: (k >= T_ge) XOR down, channels last
        assert torch.equal(ops.threshold_bits(k.reshape(-1, 1, 1, c), None, T_ge, down).reshape(-1, c),
                           want.reshape(-1, c))
        assert int(d[1]) == -1 or bool(want[:, 1].all() | (~want[:, 1]).all())


@pytest.mark.parametrize("spatial", [False, True])
def test_float_thresholds_reproduce_bn_sign_of_real_values_exactly(spatial):
    """BN + sign of real values as (y >= t) / (y <= t): exact on random values and on the floats next to each
    threshold, with gamma < 0, gamma == 0 and a flip beyond the finite floats."""
    from engine.fold import float_sign_thresholds, float_threshold_ge

    g = torch.Generator().manual_seed(4)
    c = 11
    bn = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(c).eval()
    randomize_bn(bn, g)
    with torch.no_grad():
        bn.weight[1] = -bn.weight[1].abs()
        bn.weight[2], bn.bias[2] = 1e-30, 1e10  # the flip lies beyond the finite floats: +1 everywhere
    t, d = float_sign_thresholds(bn, spatial, "test")
    assert t.dtype == torch.float32 and int(d[1]) == -1
    assert float(t[2]) == float("-inf") and int(d[2]) == 1
    t_ge, down = float_threshold_ge(t, d)
    inf = torch.tensor(float("inf"))
    near = torch.stack([t, torch.nextafter(t, inf), torch.nextafter(t, -inf)]).nan_to_num(0.0, 3e38, -3e38)
    y = torch.cat([torch.randn(500, c, generator=g) * 10, near, torch.tensor([[0.0] * c, [-0.0] * c])])
    y = y.view(*y.shape, 1, 1) if spatial else y
    shape = [1, -1] + [1] * (y.dim() - 2)
    with torch.no_grad():
        want = bn(y) >= 0
    assert torch.equal((y >= t_ge.view(shape)) ^ down.view(shape), want)


def test_batch_norm_of_a_value_does_not_depend_on_its_place():
    """The folds evaluate torch's batch norm on (1, C, 1, 1) tensors; the network runs it on (N, C, H, W) ones
    (odd planes: the vector loop's tail too): the same float32 function of each value."""
    g = torch.Generator().manual_seed(6)
    bn = nn.BatchNorm2d(13).eval()
    randomize_bn(bn, g)
    for h, w in ((13, 13), (32, 32), (5, 3)):
        y = torch.randn(7, 13, h, w, generator=g) * 10
        with torch.no_grad():
            one = bn(y.permute(0, 2, 3, 1).reshape(-1, 13, 1, 1)).view(7, h, w, 13).permute(0, 3, 1, 2)
            assert torch.equal(bn(y), one)


# ------------------------------------------------------------------------------------------------ random layers

def tiny_binary_net(pad: int, stride: int, bias: bool, weight: str, g: torch.Generator) -> nn.Sequential:
    """Odd channel counts (3 -> 5 -> 7 -> 9), 13x13 input: real-input first layer, binary-input convs with BN+sign,
    one without BN, max pooling of bits, a binary FC with BN+sign and a binary last layer."""
    def wq():
        return Sign() if weight == "sign" else ScaledSign(per="filter")

    convs = nn.Sequential(
        QConv2d(3, 5, 3, padding=pad, bias=bias, weight=wq()), nn.BatchNorm2d(5), Sign(ste="htanh"),
        QConv2d(5, 7, 3, stride=stride, padding=pad, bias=bias, weight=wq()), nn.BatchNorm2d(7), Sign(ste="htanh"),
        QConv2d(7, 9, 3, padding=pad, bias=bias, weight=wq()), Sign(ste="htanh"), nn.MaxPool2d(2), nn.Flatten())
    n = convs(torch.zeros(1, 3, 13, 13)).shape[1]
    net = nn.Sequential(*convs, QLinear(n, 11, bias=bias, weight=wq()), nn.BatchNorm1d(11), Sign(ste="htanh"),
                        QLinear(11, 3, bias=bias, weight=wq()))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (QConv2d, QLinear)):
                m.weight.uniform_(-1, 1, generator=g)
    randomize_bn(net, g)
    return net.eval()


@pytest.mark.parametrize("pad,stride,batch,bias,weight", [
    (0, 1, 4, False, "sign"), (1, 1, 4, False, "sign"), (1, 2, 1, False, "sign"), (2, 2, 3, True, "sign"),
    (1, 2, 4, True, "scaled_sign"), (0, 1, 1, False, "scaled_sign")])
def test_random_binary_layers_agree(tmp_path, pad, stride, batch, bias, weight):
    g = torch.Generator().manual_seed(100 * pad + 10 * stride + batch)
    net = tiny_binary_net(pad, stride, bias, weight, g)
    export(net, tmp_path / "t.lbp", {"test": "tiny"})
    eng = Engine(tmp_path / "t.lbp")
    assert any("popcount" in line and "thresholds" in line for line in eng.describe())
    for _ in range(3):
        check_agrees(net, eng, torch.randn(batch, 3, 13, 13, generator=g))


@pytest.mark.parametrize("pool,weight", [
    (dict(kernel_size=2), "sign"), (dict(kernel_size=3, stride=2, padding=1), "scaled_sign"),
    (dict(kernel_size=2, stride=2, ceil_mode=True), "sign"), (dict(kernel_size=3, stride=1), "scaled_sign")])
def test_max_pooling_between_a_binary_conv_and_its_sign_is_folded(tmp_path, pool, weight):
    """conv -> max pool -> [BN] -> sign as one op: threshold bits pooled by OR (gamma > 0) or AND (gamma < 0),
    odd sizes (13x13, ceil mode, padded windows), some gamma < 0 and one gamma == 0 per BN."""
    g = torch.Generator().manual_seed(len(pool) + (weight == "sign"))
    wq = (lambda: Sign()) if weight == "sign" else (lambda: ScaledSign(per="filter"))
    convs = nn.Sequential(
        QConv2d(3, 5, 3, padding=1, weight=wq()), nn.BatchNorm2d(5), Sign(ste="htanh"),
        QConv2d(5, 7, 3, padding=1, weight=wq()), nn.MaxPool2d(**pool), nn.BatchNorm2d(7), Sign(ste="htanh"),
        QConv2d(7, 9, 3, padding=1, bias=True, weight=wq()), nn.MaxPool2d(**pool), Sign(ste="htanh"), nn.Flatten())
    n = convs(torch.zeros(1, 3, 13, 13)).shape[1]
    net = nn.Sequential(*convs, QLinear(n, 4, weight=wq()))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (QConv2d, QLinear)):
                m.weight.uniform_(-1, 1, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-3, 3, generator=g)
    randomize_bn(net, g)
    net.eval()
    export(net, tmp_path / "p.lbp")
    eng = Engine(tmp_path / "p.lbp")
    assert sum("max pooling of the threshold bits" in line for line in eng.describe()) == 2
    assert not any(spec["op"] == "maxpool" for spec, _ in eng.ops)
    for batch in (1, 5):
        check_agrees(net, eng, torch.randn(batch, 3, 13, 13, generator=g))


@pytest.mark.parametrize("act", ["qnn", "dorefa"])
def test_k_bit_activations_times_binary_weights_by_bit_planes(tmp_path, act):
    """QNN's 2-bit signed codes (a LinearQuant module before the layer) and DoReFa's 2-bit unsigned codes (the
    layer's input quantizer) times +-1 / +-alpha weights, one XNOR-popcount GEMM a bit-plane: padding (code 0),
    stride 2, odd and multiple-of-8 channel counts, a linear layer; engine = simulation."""
    from common.quant.dorefa import DorefaAct, DorefaWeight
    from common.quant.qnn import LinearQuant

    g = torch.Generator().manual_seed(31)
    if act == "qnn":
        def layer(cin, cout, **kw):
            return [LinearQuant(bits=2, max=1.0), QConv2d(cin, cout, 3, weight=Sign(), **kw)]
    else:
        def layer(cin, cout, **kw):
            return [QConv2d(cin, cout, 3, weight=DorefaWeight(bits=1), input=DorefaAct(bits=2), **kw)]
    net = nn.Sequential(*layer(3, 8, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                        *layer(8, 5, padding=1, stride=2), nn.BatchNorm2d(5), nn.Hardtanh(),
                        *layer(5, 16, padding=2), nn.Flatten())
    n = net(torch.zeros(1, 3, 9, 9)).shape[1]
    net = nn.Sequential(*net, QLinear(n, 4, weight=Sign())).eval()
    randomize_bn(net, g, zero_gamma=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (QConv2d, QLinear)):
                m.weight.uniform_(-1, 1, generator=g)
    export(net, tmp_path / "k.lbp")
    eng = Engine(tmp_path / "k.lbp")
    assert sum(getattr(op, "grid", None) is not None for _, op in eng.ops) == 3
    for batch in (1, 6):
        check_agrees(net, eng, torch.rand(batch, 3, 9, 9, generator=g) * 3 - 1,
                     None if act == "qnn" else FIXED_LOGIT_TOL)


def test_int8_gemm_is_exact_with_and_without_torchs_int8_kernel(monkeypatch):
    g = torch.Generator().manual_seed(8)
    served, int_mm = [], torch._int_mm

    def counted(a, b):  # torch's int8 kernel, counted where it answers (it may refuse a shape: then float64)
        out = int_mm(a, b)
        served.append(tuple(a.shape))
        return out

    monkeypatch.setattr(torch, "_int_mm", counted)
    for m, k, n in ((1, 1, 1), (7, 300, 5), (64, 4096, 33), (0, 8, 3)):
        a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
        if m:
            a[0] = -128  # the extreme products (2^14) summed over k
            b[:, 0] = -128
        want = (a.long() @ b.long()).to(torch.int32)
        assert torch.equal(ops.int8_gemm(a, b), want)
        with monkeypatch.context() as mp:
            mp.delattr(torch, "_int_mm", raising=False)
            assert torch.equal(ops.int8_gemm(a, b), want)
    assert (64, 4096) in served  # the int8 kernel itself was checked, not only the fallback
    with pytest.raises(ValueError, match="need int8"):
        ops.int8_gemm(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.int8))


def test_fixed_point_layer_integer_arithmetic(tmp_path):
    g = torch.Generator().manual_seed(5)
    net = nn.Sequential(QConv2d(3, 5, 3, padding=1, weight=Fixed(wl=8, fl=6), input=Fixed(wl=8, fl=4)), nn.ReLU(),
                        nn.Flatten(), QLinear(5 * 9 * 9, 4, weight=Fixed(wl=16, fl=12), input=Fixed(wl=16, fl=8)))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (QConv2d, QLinear)):
                m.weight.uniform_(-0.5, 0.5, generator=g)
    export(net.eval(), tmp_path / "f.lbp")
    eng = Engine(tmp_path / "f.lbp")
    assert sum("integer GEMM (fixed x fixed" in line for line in eng.describe()) == 2
    assert eng.ops[0][1].w_int8 is not None and eng.ops[-1][1].w_int8 is None  # int8 x int8; 16 bits in float64
    check_agrees(net, eng, torch.rand(2, 3, 9, 9, generator=g) * 4 - 2)


# ------------------------------------------------------------------------------------------------ the suite's nets

def shared_net(paper: str, name: str, seed: int = 0) -> Classifier:
    """LeNet-5 20-50-500 of the shared setting, random init, batch-norm statistics from 3 random training batches."""
    from common.papers import package
    from common.quant import after_step

    package(paper)
    torch.manual_seed(seed)
    _, cfg = load_config(name, ROOT / "papers" / paper / "configs")
    model = Classifier(cfg.to_dict(), (1, 28, 28), 10)
    after_step(model.model)  # stored values on their grid, as training keeps them
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, 1, 28, 28))
    return model.eval()


@pytest.mark.parametrize("paper,name", SHARED)
def test_shared_setting_nets_agree(tmp_path, paper, name):
    model = shared_net(paper, name)
    size = export(model, tmp_path / "m.lbp", {"config": f"{paper}/{name}"})
    assert size == (tmp_path / "m.lbp").stat().st_size
    eng = Engine(tmp_path / "m.lbp")
    assert eng.meta["config"] == f"{paper}/{name}" and eng.meta["in_shape"] == [1, 28, 28]
    g = torch.Generator().manual_seed(1)
    # Fixed-point inputs (dynamic fixed point) and DoReFa's codes (steps of 1/3): the engine's integer sums are
    # exact where the simulated float32 sums round, and a value within a float32 ulp of a rounding boundary of the
    # next layer's quantizer moves by one step there. Gupta's inputs round stochastically at inference, in the
    # simulation as in the engine, each with its own draws: the two agree in distribution, not draw for draw (steps
    # of 2^-14). The logits then agree to FIXED_LOGIT_TOL, the predictions exactly (on these inputs).
    tol = FIXED_LOGIT_TOL if paper in ("gupta", "lowprec", "dorefa") else None
    for n in (1, 64):
        check_agrees(model.model, eng, torch.rand(n, 1, 28, 28, generator=g), tol)
    if paper in ("bnn", "xnor") and name != "mnist_lenet5_bwn":
        lines = eng.describe()
        assert sum("popcount" in line and "thresholds" in line for line in lines) == 2  # conv2, fc1: + folded BN
        assert sum("float32 thresholds" in line for line in lines) == 1  # conv1's BN + sign


@pytest.mark.parametrize("paper,name", [("sung", "mnist_lenet5_b4"), ("sung", "mnist_lenet5_b2"),
                                        ("ristretto", "mnist_lenet5_8_8_8"), ("qiu", "mnist_lenet5_dynamic_8_4")])
def test_post_training_nets_agree(tmp_path, paper, name):
    """The post-training methods' networks with the per-layer formats of their committed seed-1 results (random
    weights): Sung's uniform weights (a float32 step), Ristretto's and Qiu's fixed point."""
    from benchmarks.engine import ptq_net

    model = ptq_net(paper, name, (1, 28, 28))
    assert model is not None, f"results/{paper}/{name}/seed1.json missing"
    export(model, tmp_path / "m.lbp")
    eng = Engine(tmp_path / "m.lbp")
    kinds = {spec["weight"]["kind"] for spec, _ in eng.ops if spec["op"] in ("conv", "linear")}
    assert kinds == ({"uniform"} if paper == "sung" else {"fixed"})
    g = torch.Generator().manual_seed(2)
    for n in (1, 50):
        check_agrees(model.model, eng, torch.rand(n, 1, 28, 28, generator=g), FIXED_LOGIT_TOL)


def test_export_checkpoint(tmp_path):
    model = shared_net("bnn", "mnist_lenet5", seed=4)
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    sizes = export_checkpoint(ckpt, tmp_path / "m.lbp")
    assert sizes.packed_bytes == (tmp_path / "m.lbp").stat().st_size
    assert sizes.float32_bytes > 20 * sizes.packed_bytes  # 1-bit weights and folded BN vs float32
    x = torch.rand(32, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(Engine(tmp_path / "m.lbp").predict(x), model(x).argmax(1))


# ------------------------------------------------------------------------------------------------ bad files

@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eng") / "good.lbp"
    export(tiny_binary_net(1, 1, True, "sign", torch.Generator().manual_seed(0)), path)
    return path


def _one_line_error(path: Path, expect: str) -> None:
    with pytest.raises(UserError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and expect in msg, msg
    with pytest.raises(UserError):
        Engine(path)


def test_bad_files_are_one_line_user_errors(tmp_path, good_file):
    raw = good_file.read_bytes()
    assert load(good_file).layers
    bad = tmp_path / "bad.lbp"
    for cut in (3, 12, 40, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        _one_line_error(bad, "truncated" if cut >= len(MAGIC) or MAGIC.startswith(raw[:cut]) else "magic")
    bad.write_bytes(raw[:8] + (1).to_bytes(4, "little") + raw[12:])
    _one_line_error(bad, "version 1")
    bad.write_bytes(b"XXXXXXXX" + raw[8:])
    _one_line_error(bad, "magic")
    bad.write_bytes(b"PK\x03\x04 a zip, or a pickled torch file, is not ours")
    _one_line_error(bad, "magic")
    bad.write_bytes(raw + b"\0")
    _one_line_error(bad, "unexpected bytes")
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    _one_line_error(bad, "checksum")
    _one_line_error(tmp_path / "missing.lbp", "no such file")


@pytest.mark.parametrize("field,value,expect", [("pool", {}, "pooling: kernel"),
                                                ("pool", {"kernel": [2, 2], "stride": [0, 0], "padding": [0, 0],
                                                          "dilation": [1, 1], "ceil_mode": False}, "pooling: stride"),
                                                ("pool", [2, 2], "pooling must be an object"),
                                                ("weight_shape", [5, 3, 9], "weight_shape must be 4"),
                                                ("width", 0, "width 0 is not 2 or 4"),
                                                ("padding", [2**61, 0], "padding be at most the kernel"),
                                                ("padding", [1, 1, 1], "padding must be two integers"),
                                                ("stride", [0, 0], "stride must be two integers >= 1"),
                                                ("kernel", [2, 2], "kernel must match weight_shape"),
                                                ("in_ch", 9, "must match weight_shape"),
                                                ("act_scale", None, "act_scale, bias_inside and bias"),
                                                ("output", "ints", "output must be"),
                                                ("out_H", "a", "a bits output needs"),
                                                ("covers", "conv", "covers must be"),
                                                ("input", {"kind": "sign"}, "a binary input needs a number H"),
                                                ("input", {"kind": "fixed", "wl": 8, "fl": 4}, "rounding")])
def test_crafted_layer_fields_are_one_line_errors(tmp_path, field, value, expect):
    """Fields a file's header gives a layer are checked when the file is loaded: a bad pooling, geometry, shape,
    flag or packing width is one line naming the layer, never a traceback (or a kernel reading out of bounds) at
    run time."""
    g = torch.Generator().manual_seed(3)
    if field == "width":
        net = nn.Sequential(QLinear(30, 5, weight=Fixed(wl=4, fl=3)))
    else:
        net = nn.Sequential(QConv2d(3, 8, 3, padding=1, weight=Sign()), nn.BatchNorm2d(8), Sign(ste="htanh"),
                            QConv2d(8, 5, 3, padding=1, weight=Sign()), nn.MaxPool2d(2), nn.BatchNorm2d(5),
                            Sign(ste="htanh"))
    randomize_bn(net, g)
    export(net.eval(), tmp_path / "ok.lbp")
    packed = load(tmp_path / "ok.lbp")
    layer = [lay for lay in packed.layers if lay["op"] in ("conv", "linear")][-1]
    if value is None:
        del layer[field]
    else:
        (layer["weight"] if field == "width" else layer)[field] = value
    write(packed, tmp_path / "bad.lbp")
    with pytest.raises(UserError, match=expect) as e:
        Engine(tmp_path / "bad.lbp")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("shape", [(2, 5, 13, 13), (2, 4, 13, 13), (2, 3, 13), (2, 3, 1, 1)])
def test_an_input_the_network_cannot_take_is_one_line(tmp_path, shape):
    """Another channel count (4 channels pack into the same bytes as the first layer's 3: still refused), another
    rank, or an image smaller than the kernel."""
    export(tiny_binary_net(1, 1, False, "sign", torch.Generator().manual_seed(2)), tmp_path / "t.lbp")
    with pytest.raises(UserError, match=r"layer \d+ \(\w+\) cannot run on its input") as e:
        Engine(tmp_path / "t.lbp")(torch.zeros(shape))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("where,field,value,expect", [("flatten", "start", "a", "start and end must be integers"),
                                                      ("batchnorm", "eps", None, "eps must be numbers"),
                                                      ("sign", "covers", [], "covers must be"),
                                                      ("conv", "arrays", [], "corrupt header"),
                                                      ("meta", None, [1], "meta is not an object")])
def test_crafted_op_fields_and_header_are_one_line_errors(tmp_path, where, field, value, expect):
    net = nn.Sequential(QConv2d(3, 4, 3, weight=Sign()), nn.BatchNorm2d(4), nn.Flatten(), nn.Hardtanh(),
                        Sign(ste="htanh"), QLinear(4 * 5 * 5, 3, weight=Sign()))
    randomize_bn(net, torch.Generator().manual_seed(5))
    export(net.eval(), tmp_path / "ok.lbp")
    packed = load(tmp_path / "ok.lbp")
    if where == "meta":
        packed.meta = value
    else:
        op = next(lay for lay in packed.layers if lay["op"] == where)
        op.pop(field) if value is None else op.__setitem__(field, value)
    write(packed, tmp_path / "bad.lbp")
    with pytest.raises(UserError, match=expect) as e:
        Engine(tmp_path / "bad.lbp")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("quantizer,expect", [({"name": "sign"}, "not one the engine runs"),
                                              ({"name": "linear_quant", "bits": 2, "rounding": "stochastic"},
                                               "stochastic rounding"),
                                              ("linear_quant", "not one the engine runs"),
                                              ({"name": "linear_quant", "bits": 99}, "bits"),
                                              ({"name": "dorefa_act", "bits": 2, "code": "x"}, "code")])
def test_a_quantize_op_runs_only_the_named_activation_quantizers(tmp_path, quantizer, expect):
    """A file's ``quantize`` op names a quantizer: only QNN's and DoReFa's activation quantizers, with arguments
    checked as a config's; anything else is one line, never an object built from the file."""
    net = nn.Sequential(nn.Flatten(), QLinear(12, 3, weight=Sign()))
    export(net.eval(), tmp_path / "q.lbp")
    packed = load(tmp_path / "q.lbp")
    packed.layers.insert(0, {"op": "quantize", "name": "x", "covers": ["x"], "quantizer": quantizer})
    write(packed, tmp_path / "bad.lbp")
    with pytest.raises(UserError, match=expect) as e:
        Engine(tmp_path / "bad.lbp")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ real MNIST

def _trained_checkpoints() -> list[str]:
    runs = os.environ.get("LOWBIT_ENGINE_RUNS", str(ROOT / "runs"))
    return sorted(glob.glob(f"{runs}/*/mnist_lenet5*/seed1/checkpoints/best.ckpt"))


MNIST_ROOT = ROOT.parent / "shared" / "datasets"


@pytest.mark.skipif(not (MNIST_ROOT / "MNIST" / "raw").is_dir(), reason=f"no MNIST under {MNIST_ROOT}")
@pytest.mark.skipif(not _trained_checkpoints(),
                    reason="no trained runs/*/mnist_lenet5*/seed1/checkpoints/best.ckpt (train one of the shared "
                           "setting configs first)")
def test_trained_checkpoints_on_mnist(tmp_path):
    """The engine's predictions on the first 1000 MNIST test images equal the simulated network's."""
    from common.data import ClassificationData
    from engine.export import model_from_checkpoint

    for ckpt in _trained_checkpoints():
        module, _ = model_from_checkpoint(ckpt)
        try:
            export(module, tmp_path / "m.lbp")
        except UserError as e:
            if "not supported" in str(e):
                continue  # a quantizer the engine does not run
            raise
        data = ClassificationData(module.cfg.data, MNIST_ROOT)
        data.setup("test")
        x = data._splits["test"].x[:1000]
        with torch.no_grad():
            want = module(x).argmax(1)
        assert torch.equal(Engine(tmp_path / "m.lbp").predict(x), want), ckpt


def test_export_command_then_engine_test_gives_the_test_commands_error(tmp_path, capsys):
    """The user's path: train, `python -m papers.bnn export`, `python -m engine test` = `python -m papers.bnn test`."""
    from common.cli import main
    from engine.__main__ import main as engine_main
    from test_train import run_train

    res = run_train(tmp_path, "mnist_lenet5", paper="bnn", **{"data.synthetic_size": 256, "trainer.limit_train_batches": 4})
    out = tmp_path / "bnn.lowbit"
    capsys.readouterr()
    assert main("bnn", "unused", ["export", "--ckpt", res["checkpoint"], "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}: " in said and "smaller than the float32 state_dict" in said
    assert main("bnn", "unused", ["test", "--ckpt", res["checkpoint"]]) == 0
    simulated = json.loads(capsys.readouterr().out)
    assert engine_main(["test", "--model", str(out)]) == 0
    integer = json.loads(capsys.readouterr().out)
    assert integer["test_top1_err"] == simulated["test_top1_err"] == res["metrics"]["test_top1_err"]
    out.write_bytes(out.read_bytes()[:100])  # a truncated file: one line, exit 2
    assert engine_main(["test", "--model", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(out) in err
