"""The engine's compiled binary GEMM (engine/kernels.cpp) is exact: on every path this processor runs (AVX-512
VPOPCNTDQ, AVX2, scalar: each forced in turn) its int32 output equals the int64 +-1 reference for awkward shapes (K
not a multiple of 64, across K blocks, odd M and N, the few-rows path and the blocked path, 1 and 2 threads), and a
whole exported network gives bit-identical logits with the kernel and with the plain-torch backend."""
from __future__ import annotations

import warnings

import pytest
import torch

from torch import nn

from common.quant import QConv2d, QLinear
from common.quant.binary import ScaledSign, Sign
from engine import Engine, export, kernels, ops
from test_engine import shared_net, tiny_binary_net

pytestmark = pytest.mark.skipif(kernels.ext() is None, reason="the engine's kernel could not be built here")

KS = [1, 63, 64, 65, 777, 4099]  # 4099 bits = 65 words: two K blocks of the AVX paths
MS = [1, 3, 7, 8, 17, 130]  # < 8: the few-rows path; 8 and up: packed panels and micro-tiles with remainders
NS = [1, 3, 17, 130]


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ops.pm1(a, torch.int64) @ ops.pm1(b, torch.int64).T


def paths() -> list[str]:
    return kernels.supported()


@pytest.mark.parametrize("isa", kernels.ISAS)
def test_kernel_exact_on_every_path(isa):
    if isa not in paths():
        pytest.skip(f"this processor does not run {isa}")
    g = torch.Generator().manual_seed(kernels.ISAS.index(isa))
    saved = torch.get_num_threads()
    try:
        for threads in sorted({1, min(2, saved)}):
            torch.set_num_threads(threads)
            for k in KS:
                bits_a = torch.rand(max(MS), k, generator=g) < 0.5
                bits_b = torch.rand(max(NS), k, generator=g) < 0.5
                pa, pb = ops.pack_bits(bits_a), ops.pack_bits(bits_b)
                full = reference(bits_a, bits_b)
                for m in MS:
                    for n in NS:
                        out = kernels.binary_gemm(pa[:m], pb[:n], k, isa)
                        assert out.dtype == torch.int32 and out.shape == (m, n)
                        assert torch.equal(out.long(), full[:m, :n]), (isa, threads, k, m, n)
            # many rows (several row blocks per thread) and all-equal / all-opposite rows (|dot| = K)
            k = 200
            a = torch.rand(1000, k, generator=g) < 0.5
            b = torch.cat([a[:5], ~a[5:10], torch.rand(30, k, generator=g) < 0.5])
            out = kernels.binary_gemm(ops.pack_bits(a), ops.pack_bits(b), k, isa)
            assert torch.equal(out.long(), reference(a, b))
            assert (out[torch.arange(5), torch.arange(5)] == k).all()
            assert (out[torch.arange(5, 10), torch.arange(5, 10)] == -k).all()
    finally:
        torch.set_num_threads(saved)


def test_kernel_writes_into_a_given_output():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(19, 130, generator=g) < 0.5, torch.rand(11, 130, generator=g) < 0.5
    out = torch.full((19, 11), 7, dtype=torch.int32)
    got = kernels.binary_gemm(ops.pack_bits(a), ops.pack_bits(b), 130, out=out)
    assert got.data_ptr() == out.data_ptr() and torch.equal(out.long(), reference(a, b))
    with pytest.raises(RuntimeError, match="out must be"):
        kernels.binary_gemm(ops.pack_bits(a), ops.pack_bits(b), 130, out=torch.empty(19, 11))


def test_kernel_empty_and_zero_k():
    for m, n in ((0, 5), (5, 0), (0, 0)):
        assert kernels.binary_gemm(torch.zeros(m, 8, dtype=torch.uint8), torch.zeros(n, 8, dtype=torch.uint8),
                                   7).shape == (m, n)
    out = kernels.binary_gemm(torch.zeros(3, 0, dtype=torch.uint8), torch.zeros(2, 0, dtype=torch.uint8), 0)
    assert torch.equal(out, torch.zeros(3, 2, dtype=torch.int32))


def test_dispatch_and_forcing_a_lower_path(monkeypatch):
    best = kernels.isa()
    assert best == paths()[-1] and best in kernels.ISAS
    if best == "avx512_vpopcntdq" or "avx2" in paths():
        assert "avx2" in paths()
    a, b = torch.rand(20, 300) < 0.5, torch.rand(9, 300) < 0.5
    want = reference(a, b)
    for isa in paths():
        monkeypatch.setenv(kernels.ISA_ENV, isa)
        assert kernels.isa() == isa
        assert torch.equal(ops.binary_gemm(ops.pack_bits(a), ops.pack_bits(b), 300).long(), want)
    monkeypatch.setenv(kernels.ISA_ENV, "avx1024")
    with pytest.raises(ValueError, match="avx1024"):
        kernels.isa()
    monkeypatch.delenv(kernels.ISA_ENV)
    assert kernels.isa("scalar") == "scalar" and kernels.isa() == best


def test_kernel_is_the_default_backend_and_falls_back(monkeypatch):
    assert ops.default_backend() == "kernel" and "kernel" in ops.available_backends()
    # LOWBIT_KERNELS=0: off, silently; the plain-torch backend is the default
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setattr(kernels, "_ext", None)
    monkeypatch.setenv("LOWBIT_KERNELS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.ext() is None and ops.default_backend() == "unpack"
    assert "kernel" not in ops.available_backends()
    # a failed build: one warning, then the plain-torch backend
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setenv("LOWBIT_KERNELS", "1")

    def broken():
        raise OSError("no compiler\nc++: not found")
    monkeypatch.setattr(kernels, "_build", broken)
    with pytest.warns(UserWarning, match="c\\+\\+: not found"):
        assert kernels.ext() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.default_backend() == "unpack"
        a = ops.pack_bits(torch.rand(4, 70) < 0.5)
        assert ops.binary_gemm(a, a, 70).diagonal().eq(70).all()
        with pytest.raises(RuntimeError, match="not built"):
            ops.binary_gemm(a, a, 70, backend="kernel")


def _logits(path, x, backend: str) -> torch.Tensor:
    saved = ops.DEFAULT_BACKEND
    ops.DEFAULT_BACKEND = backend
    try:
        return Engine(path)(x)
    finally:
        ops.DEFAULT_BACKEND = saved


@pytest.mark.parametrize("net", ["bnn/mnist_lenet5", "xnor/mnist_lenet5_xnor", "tiny_pad1_stride2"])
def test_whole_network_logits_bit_identical(tmp_path, monkeypatch, net):
    if net.startswith("tiny"):
        model = tiny_binary_net(1, 2, True, "scaled_sign", torch.Generator().manual_seed(7))
        x = torch.randn(16, 3, 13, 13, generator=torch.Generator().manual_seed(8))
    else:
        paper, name = net.split("/")
        model = shared_net(paper, name, seed=2)
        x = torch.rand(37, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    export(model, tmp_path / "m.lbp")
    plain = _logits(tmp_path / "m.lbp", x, "unpack")
    for isa in paths():
        monkeypatch.setenv(kernels.ISA_ENV, isa)
        fast = _logits(tmp_path / "m.lbp", x, "kernel")
        assert fast.dtype == plain.dtype and torch.equal(fast.view(torch.int32), plain.view(torch.int32)), isa
    monkeypatch.delenv(kernels.ISA_ENV)
    # batch 1: the few-rows path (compared with batch 1 of the plain backend: a float layer's BLAS may round a batch
    # of 1 differently from a batch of 37)
    assert torch.equal(_logits(tmp_path / "m.lbp", x[:1], "kernel"), _logits(tmp_path / "m.lbp", x[:1], "unpack"))


@pytest.mark.parametrize("shape", [(2, 3, 9, 9), (1, 20, 12, 12), (3, 7, 8, 13)])
def test_fused_im2col_packing_gives_unfold_and_pack_bits_bytes(shape):
    """The compiled im2col + packing writes the same bytes as F.unfold then pack_bits (zero padding as bit 0)."""
    import torch.nn.functional as F

    from engine import kernels, ops

    if kernels.ext() is None:
        pytest.skip("the engine's kernels are not built here (no compiler)")
    bits = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) > 0.5
    for kernel, stride, padding in (((3, 3), (1, 1), (1, 1)), ((5, 5), (1, 1), (0, 0)), ((3, 3), (2, 2), (2, 2)),
                                    ((1, 1), (1, 1), (0, 0)), ((3, 5), (2, 1), (1, 2))):
        if shape[2] + 2 * padding[0] < kernel[0] or shape[3] + 2 * padding[1] < kernel[1]:
            continue
        cols = F.unfold(bits.to(torch.float32), kernel, padding=padding, stride=stride)
        want = ops.pack_bits(cols.transpose(1, 2).reshape(-1, cols.shape[1]) > 0.5)
        assert torch.equal(kernels.im2col_pack(bits, kernel, stride, padding), want), (kernel, stride, padding)


@pytest.mark.parametrize("channels_last", [False, True])
def test_or_pooling_of_bits_is_max_pooling_of_pm1(channels_last):
    """Max pooling of +-1 activations as the OR of their bits, for odd sizes, kernel, stride, padding (never counted)
    and ceil mode, on contiguous and channels-last input: equal to torch's max pooling of the +-1 values."""
    import itertools

    g = torch.Generator().manual_seed(5)
    for h, w, k, s, p, ceil in itertools.product([5, 12, 13], [6, 9], [1, 2, 3], [1, 2, 3], [0, 1], [False, True]):
        if 2 * p > k:
            continue
        x = torch.rand(2, 3, h, w, generator=g) < 0.5
        if channels_last:
            x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        want = torch.nn.functional.max_pool2d(ops.pm1(x), k, s, p, 1, ceil) > 0
        got = ops.or_pool2d(x, k, s, p, 1, ceil)
        assert got.shape == want.shape and torch.equal(got, want), (h, w, k, s, p, ceil)


@pytest.mark.parametrize("pad,stride,weight", [(0, 1, "sign"), (1, 1, "sign"), (1, 2, "scaled"), (2, 2, "sign")])
def test_channels_packed_per_pixel_give_the_same_network(tmp_path, monkeypatch, pad, stride, weight):
    """Binary convolutions over a multiple of 8 channels take the per-pixel packing ((dy, dx, c) rows): the
    network still equals the simulated one (every binary activation bit for bit) and the (c, dy, dx) path exactly."""
    from test_engine import check_agrees, randomize_bn

    g = torch.Generator().manual_seed(11 + pad + stride)

    def wq():
        return Sign() if weight == "sign" else ScaledSign(per="filter")

    convs = nn.Sequential(
        QConv2d(3, 8, 3, padding=1, weight=wq()), nn.BatchNorm2d(8), Sign(ste="htanh"),
        QConv2d(8, 16, 3, stride=stride, padding=pad, weight=wq()), nn.BatchNorm2d(16), Sign(ste="htanh"),
        nn.MaxPool2d(2, ceil_mode=True), QConv2d(16, 24, 2, padding=pad, weight=wq()), nn.BatchNorm2d(24),
        Sign(ste="htanh"), QConv2d(24, 8, 3, padding=1, weight=wq()), nn.Flatten())
    n = convs(torch.zeros(1, 3, 13, 11)).shape[1]
    net = nn.Sequential(*convs, QLinear(n, 5, weight=wq())).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (QConv2d, QLinear)):
                m.weight.uniform_(-1, 1, generator=g)
    randomize_bn(net, g)
    export(net, tmp_path / "m.lbp")
    eng = Engine(tmp_path / "m.lbp")
    assert sum(op.packed_hwc is not None for _, op in eng.ops if hasattr(op, "packed_hwc")) == 3
    x = torch.rand(5, 3, 13, 11, generator=g) * 2 - 1
    check_agrees(net, eng, x)
    monkeypatch.setattr(ops, "hwc_available", lambda: False)
    plain = Engine(tmp_path / "m.lbp")
    assert all(getattr(op, "packed_hwc", None) is None for _, op in plain.ops)
    assert torch.equal(plain(x), eng(x))


@pytest.mark.parametrize("path", ["best", "scalar", "torch"])
def test_thresholds_and_folded_pooling_of_the_accumulators(monkeypatch, path):
    """``ops.threshold_bits`` (the compiled one-pass kernel on its fastest and its scalar rows, and the torch path):
    (k + corr >= t) XOR down, the OR over each pooling window (padding never counting, ceil mode) taken before the
    XOR, for odd channel counts; equal to torch's max pooling of the +-1 comparison."""
    import itertools

    import torch.nn.functional as F

    if path == "torch":
        monkeypatch.setattr(kernels, "ext", lambda: None)
    elif kernels.ext() is None:
        pytest.skip("no compiled kernels here")
    elif path == "scalar":
        monkeypatch.setenv(kernels.ISA_ENV, "scalar")
    g = torch.Generator().manual_seed(21)
    for (h, w, o), pool, with_corr in itertools.product(
            [(5, 7, 3), (8, 8, 32), (13, 11, 9)],
            [None, dict(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False),
             dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True),
             dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=1, ceil_mode=False)], [False, True]):
        k = torch.randint(-20, 21, (2, h, w, o), generator=g, dtype=torch.int32)
        corr = torch.randint(-3, 4, (h, w, o), generator=g, dtype=torch.int32) if with_corr else None
        t = torch.randint(-15, 16, (o,), generator=g, dtype=torch.int32)
        down = torch.rand(o, generator=g) < 0.5
        ge = ((k if corr is None else k + corr) >= t).permute(0, 3, 1, 2)
        if pool is not None:
            ge = F.max_pool2d(ops.pm1(ge), **pool) > 0
        want = ge ^ down.view(1, -1, 1, 1)
        got = ops.threshold_bits(k, corr, t, down, pool)
        assert got.shape == want.shape and torch.equal(got, want), (h, w, o, pool, with_corr)


def test_thresholds_of_real_values_compiled_and_torch_agree(monkeypatch):
    """``ops.threshold_real``: (y >= t) XOR down per channel, on (N, C, H, W) and (N, C), values on the thresholds."""
    g = torch.Generator().manual_seed(22)
    for shape in ((3, 5, 7, 9), (4, 13), (2, 8, 1, 1)):
        c = shape[1]
        t = torch.randn(c, generator=g)
        down = torch.rand(c, generator=g) < 0.5
        y = torch.randn(shape, generator=g)
        y.view(shape[0], c, -1)[0, :, 0] = t  # some values exactly on their threshold
        bshape = [1, -1] + [1] * (len(shape) - 2)
        want = (y >= t.view(bshape)) ^ down.view(bshape)
        assert torch.equal(ops.threshold_real(y, t, down), want), shape
        with monkeypatch.context() as m:
            m.setattr(kernels, "ext", lambda: None)
            assert torch.equal(ops.threshold_real(y, t, down), want), shape


def test_int8_im2col_compiled_and_torch_agree(monkeypatch):
    """``ops.im2col_int8``: rows in (dy, dx, c) order with zero padding, the compiled kernel and the unfold path
    byte for byte; and a convolution through them and ``int8_gemm`` equals the int64 convolution."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(23)
    cases = (((2, 3, 9, 9), (3, 3), (1, 1), (1, 1)), ((1, 5, 8, 11), (3, 2), (2, 1), (2, 0)),
             ((3, 1, 6, 6), (5, 5), (1, 1), (0, 0)))
    for shape, kernel, stride, padding in cases:
        x = torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
        w = torch.randint(-128, 128, (4, shape[1], *kernel), generator=g, dtype=torch.int8)
        rows = ops.im2col_int8(x, kernel, stride, padding)
        with monkeypatch.context() as m:
            m.setattr(kernels, "ext", lambda: None)
            assert torch.equal(ops.im2col_int8(x, kernel, stride, padding), rows)
        acc = ops.int8_gemm(rows, w.permute(0, 2, 3, 1).reshape(4, -1).t().contiguous())
        want = F.conv2d(x.double(), w.double(), None, stride, padding)  # exact: |sums| < 2^53
        assert torch.equal(acc.view(shape[0], want.shape[2], want.shape[3], 4).permute(0, 3, 1, 2).double(), want)
