"""The efficiency claims (leaderboard/efficiency.yaml) and their verdicts from the engine benchmark's measurements,
and the packed sizes the benchmark measures (from real exports, not typed numbers)."""
import copy

import pytest
import torch
import yaml

from common.errors import UserError
from leaderboard.efficiency import (EFFICIENCY_FILE, REL_TOL, efficiency_view, load_efficiency, measure, speedups,
                                    verdict)

BENCH = {"cpu": {"model": "test cpu"}, "isa": "scalar", "torch": "x",
         "gemm": [{"layer": "AlexNet conv2 (b1)", "threads": 2, "speedup": 10.0},
                  {"layer": "AlexNet conv3 (b1)", "threads": 2, "speedup": 14.0},
                  {"layer": "AlexNet conv3 (b1)", "threads": 1, "speedup": 99.0},
                  {"layer": "square 4096^3", "threads": 2, "speedup": 3.2}],
         "networks": [{"config": "bnn/mnist_lenet5", "batch": 100, "threads": 1, "speedup": 9.0},
                      {"config": "bnn/mnist_lenet5", "batch": 100, "threads": 2, "speedup": 6.4},
                      {"config": "bnn/mnist_lenet5", "batch": 1, "threads": 2, "speedup": 2.0}],
         "sizes": [{"config": "xnor/mnist_lenet5_xnor", "layers": {"binary": {"ratio": 29.6}, "float": {"ratio": 1.0}}},
                   {"config": "xnor/cifar10_vggsmall_xnor", "layers": {"binary": {"ratio": 30.8}}},
                   {"config": "twn/mnist_lenet5", "layers": {"ternary": {"ratio": 15.4}}}]}


def claims_by_id():
    return {c.id: c for c in load_efficiency()}


def test_registry_loads_with_a_measure_for_every_claim():
    claims = load_efficiency()
    assert len(claims) >= 7 and len({c.id for c in claims}) == len(claims)
    assert {c.kind for c in claims} == {"speed", "size"}


def test_measures_are_the_benchmarks_numbers_and_verdicts_use_the_tolerance():
    c = claims_by_id()
    got, what = measure(c["E01"], BENCH)  # median over the matching GEMMs on 2 threads only
    assert got == 12.0 and "2 threads" in what and verdict(c["E01"], got) == "not reproduced"
    assert measure(c["E03"], BENCH)[0] == 6.4  # batch 100, 2 threads
    assert verdict(c["E03"], 6.4) == "reproduced" and 6.4 >= (1 - REL_TOL) * 7 > 6.2
    assert verdict(c["E03"], 6.2) == "not reproduced"
    assert measure(c["E02"], BENCH)[0] == 29.6  # the smallest ratio of the matching networks
    assert measure(c["E06"], BENCH)[0] == 15.4
    assert measure(c["E07"], BENCH) == (None, "no fixed layers of `ristretto/*_8_8_8` exported by the engine")
    assert verdict(c["E07"], None) == "not measured"
    assert measure(c["E01"], None)[0] is None
    assert measure(c["E01"], {"gemm": [{"layer": "AlexNet conv2 (b1)", "threads": 2}]})[0] is None  # no speedup key
    assert speedups(BENCH) == {"bnn/mnist_lenet5": 6.4}


def test_view_names_each_claim_its_measurement_and_verdict():
    text = "\n".join(efficiency_view(load_efficiency(), BENCH, ""))
    assert "| 58× | 12.0× | ❌ not reproduced |" in text and "test cpu" in text
    assert "| 3.4× | 3.2× | ✅ reproduced |" in text
    missing = "\n".join(efficiency_view(load_efficiency(), None, "no bench/engine.json (run python -m benchmarks.engine)"))
    assert "Not measured yet: no bench/engine.json" in missing and "⏳ not measured" in missing


@pytest.mark.parametrize("change, message", [
    ({"value": 0}, "value: expected a value > 0"),
    ({"kind": "energy"}, "kind: expected one of"),
    ({"paper": "nope"}, "paper: expected one of"),
    ({"measure": {"gemm": "x"}}, "measure: expected"),
    ({"measure": {"size": "xnor/*", "layers": "binary"}}, "a speed claim is measured by gemm or network"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_a_bad_entry_is_refused_naming_claim_and_key(tmp_path, change, message):
    data = yaml.safe_load(EFFICIENCY_FILE.read_text())
    bad = copy.deepcopy(data)
    bad["claims"][0].update(change)
    path = tmp_path / "efficiency.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(UserError, match=r"claim E01: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_efficiency(path)


def test_packed_sizes_come_from_real_exports():
    from benchmarks.engine import build_net, layer_sizes
    from engine.export import build

    with torch.no_grad():
        bnn = layer_sizes(build(build_net("bnn", "mnist_lenet5", (1, 28, 28)).model))
        twn = layer_sizes(build(build_net("twn", "mnist_lenet5", (1, 28, 28)).model))
    # 1 bit a weight (rows padded to 64 bits), no scale: just under 32x; 2 bit-planes and a scale: just under 16x
    assert 30 < bnn["binary"]["ratio"] < 32 and set(bnn) <= {"binary", "float"}
    assert 15 < twn["ternary"]["ratio"] < 16


def test_sizes_only_refuses_a_file_that_is_not_a_benchmark(tmp_path, capsys):
    from benchmarks.engine import main as bench_main

    (tmp_path / "engine.json").write_text('{"gemm": []}')
    assert bench_main(["--sizes-only", "--out", str(tmp_path / "engine.json")]) == 2
    assert bench_main(["--sizes-only", "--out", str(tmp_path / "missing.json")]) == 2
    assert "not a benchmark file" in capsys.readouterr().err
    assert (tmp_path / "engine.json").read_text() == '{"gemm": []}'  # nothing replaced
