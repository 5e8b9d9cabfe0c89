"""The speed benchmark runs end to end on a tiny budget and writes what the README section is generated from (the
numbers themselves are measured by `python ci/bench.py`, never asserted in a test)."""
from __future__ import annotations

import json

from benchmarks import training as bench


def test_steps_benchmark_writes_ratios_and_the_readme_section(tmp_path, capsys):
    rc = bench.main(["--only", "steps", "--nets", "lenet5", "--methods", "bc,dfxp", "--repeats", "1", "--steps", "1",
                     "--warmup", "0", "--no-brevitas", "--out-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "steps.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"float", "bc", "dfxp"}
    assert rows["float"]["ratio"] == 1.0
    for key, target in (("bc", 1.15), ("dfxp", 1.30)):  # the targets by what is quantized
        r = rows[key]
        assert r["ms"] > 0 and r["ratio"] > 0 and r["target"] == target
        assert r["meets_target"] == (r["ratio"] <= target)
        assert r["brevitas_ratio"] is None and r["brevitas_note"] == "skipped"
    assert isinstance(res["fused_kernels"], bool) and res["threads"] >= 1
    assert "written:" in capsys.readouterr().out
    section = bench.readme_section(tmp_path)
    assert section.startswith(bench.START) and section.endswith(bench.END)
    assert "| binary W (BinaryConnect, sign) | W | <= 1.15 |" in section


def test_readme_section_replaces_only_the_marked_text(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{bench.START}\nold numbers\n{bench.END}\n\n## Next\ntext\n")
    bench.write_readme(readme, tmp_path / "none")  # no result files: the section says so
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + bench.START) and text.endswith(bench.END + "\n\n## Next\ntext\n")
    assert "old numbers" not in text and "No benchmark results yet" in text


def test_quick_and_torch_path_runs_do_not_replace_the_reference_files(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "OUT_DIR", tmp_path / "bench")
    args = ["--only", "steps", "--nets", "lenet5", "--methods", "bc", "--repeats", "1", "--steps", "1", "--warmup", "0",
            "--no-brevitas"]
    assert bench.main(["--quick", *args]) == 0
    assert bench.main(["--no-kernels", *args]) == 0
    assert (tmp_path / "bench/quick/steps.json").is_file()
    torch_path = json.loads((tmp_path / "bench/no_kernels/steps.json").read_text())
    assert torch_path["fused_kernels"] is False
    assert not (tmp_path / "bench/steps.json").exists()


def test_lightning_benchmark_times_the_second_epoch_of_both_loops(tmp_path):
    rc = bench.main(["--only", "lightning", "--lightning-configs", "float/mnist_lenet5", "--epoch-steps", "3",
                     "--epoch-repeats", "1", "--out-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "lightning.json").read_text())
    (row,) = res["rows"]
    assert row["config"] == "float/mnist_lenet5" and row["train_batches"] == 3
    assert row["lightning_s"] > 0 and row["plain_s"] > 0
    assert abs(row["ratio"] / (row["lightning_s"] / row["plain_s"]) - 1) < 0.05  # one round: the ratio of the times
    assert row["meets_target"] == (row["ratio"] <= 1.05)
