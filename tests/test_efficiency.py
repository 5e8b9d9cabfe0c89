"""The efficiency claims (leaderboard/efficiency.yaml) and their verdicts from the engine benchmark's measurements,
and the packed sizes the benchmark measures (from real exports, not typed numbers)."""
import copy
import json

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
    # 1 bit a weight (one 64-bit padding a layer), no scale: just under 32x; 2 bit-planes and a scale: under 16x
    assert 30 < bnn["binary"]["ratio"] < 32 and set(bnn) <= {"binary", "float"}
    assert 15 < twn["ternary"]["ratio"] < 16


def test_sizes_only_refuses_a_file_that_is_not_a_benchmark(tmp_path, capsys):
    from benchmarks.engine import main as bench_main

    (tmp_path / "engine.json").write_text('{"gemm": []}')
    assert bench_main(["--sizes-only", "--out", str(tmp_path / "engine.json")]) == 2
    assert bench_main(["--sizes-only", "--out", str(tmp_path / "missing.json")]) == 2
    assert "not a benchmark file" in capsys.readouterr().err
    assert (tmp_path / "engine.json").read_text() == '{"gemm": []}'  # nothing replaced


def test_readme_engine_tables_are_the_committed_benchmark():
    """README's engine tables are generated from results/bench/engine.json (``python -m benchmarks.engine
    --readme``), never typed: the committed README holds exactly what the committed file renders to."""
    from benchmarks.engine import END, README, REFERENCE, START, readme_section
    from common.results import read_result

    result = read_result(REFERENCE)
    assert result is not None, f"{REFERENCE} missing (run python -m benchmarks.engine)"
    text = README.read_text()
    section = text[text.index(START):text.index(END) + len(END)]
    assert section == readme_section(result), "README's engine tables are stale: python -m benchmarks.engine --readme"
    assert "| binary GEMM vs `torch.mm`, 4096³ |" in section and "| `bnn/cifar10_vggsmall` |" in section


def test_engine_readme_writer_replaces_only_the_marked_text_and_quick_runs_leave_it(tmp_path, monkeypatch):
    from benchmarks import engine as bench

    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{bench.START}\nold\n{bench.END}\n\n## Next\n")
    bench.write_readme({"targets": [{"target": "x >= 5x", "measured": 4.0, "met": False, "why": "a reason"}]}, readme)
    text = readme.read_text()
    assert text.startswith(f"# T\n\n{bench.START}") and text.endswith(f"{bench.END}\n\n## Next\n")
    assert "old" not in text and "- x >= 5x: 4.00× — **missed** (a reason)" in text
    monkeypatch.setattr(bench, "README", readme)
    monkeypatch.setattr(bench, "REFERENCE", tmp_path / "engine.json")
    monkeypatch.setattr(bench, "QUICK", tmp_path / "quick" / "engine.json")
    (tmp_path / "engine.json").write_text('{"gemm": [], "sizes": []}')
    from engine import kernels

    if kernels.ext() is not None:  # a quick run (one tiny GEMM, no networks or sizes) writes the quick file only
        monkeypatch.setattr(bench, "gemm_shapes", lambda quick: [("tiny", 8, 8, 64)])
        monkeypatch.setattr(bench, "bench_sizes", lambda: ([], []))
        monkeypatch.setattr(bench, "keep_freed_memory", lambda: "default allocator settings")
        assert bench.main(["--quick", "--threads", "1", "--skip-nets", "--repeats", "1"]) == 0
        assert [r["layer"] for r in json.loads((tmp_path / "quick" / "engine.json").read_text())["gemm"]] == ["tiny"]
    assert (tmp_path / "engine.json").read_text() == '{"gemm": [], "sizes": []}'  # the reference left alone
    assert readme.read_text() == text
    assert bench.main(["--readme", "--out", str(tmp_path / "missing.json")]) == 2
