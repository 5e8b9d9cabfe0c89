"""``python -m engine test --record PATH``: the record holds the printed JSON, the packed file's size, its header and
the simulated network's result; an existing PATH that is not this command's record of the same network is refused
(exit code 2, one line, nothing written)."""
from __future__ import annotations

import json

import pytest

import engine.__main__ as cli
from engine import Engine, export
from test_engine import shared_net

DATA = {"name": "synthetic", "synthetic_size": 200, "val_size": 0, "shape": [1, 28, 28], "num_classes": 10}


def packed(tmp_path, config: str = "mnist_lenet5", name: str = "m.lowbit") -> tuple:
    """A BNN LeNet-5 (random weights) exported as if from runs/bnn/<config>/seed1's checkpoint, on synthetic data."""
    ckpt = tmp_path / "runs" / "bnn" / config / "seed1" / "checkpoints" / "best.ckpt"
    path = tmp_path / name
    export(shared_net("bnn", "mnist_lenet5"), path, {"checkpoint": str(ckpt), "data": DATA})
    return path, ckpt


def run(capsys, model, record) -> tuple[int, dict | None, str]:
    code = cli.main(["test", "--model", str(model), "--record", str(record)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def write_result(tmp_path, ckpt, err: float) -> None:
    path = tmp_path / "results" / "bnn" / "mnist_lenet5" / "seed1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"checkpoint": str(ckpt), "metrics": {"test_top1_err": err}}))


def test_record_holds_the_printed_json_the_file_and_the_simulated_result(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "RESULTS", tmp_path / "results")
    model, ckpt = packed(tmp_path)
    record = tmp_path / "rec" / "seed1.json"
    code, printed, _ = run(capsys, model, record)
    assert code == 0 and printed["test_images"] == 50
    rec = json.loads(record.read_text())
    assert {k: rec[k] for k in printed} == printed
    assert rec["written_by"] == cli.WRITTEN_BY and rec["network"] == "bnn/mnist_lenet5/seed1"
    assert (rec["paper"], rec["config_name"], rec["seed"]) == ("bnn", "mnist_lenet5", 1)
    assert rec["packed_bytes"] == model.stat().st_size and rec["meta"] == Engine(model).meta
    assert rec["simulated_test_top1_err"] is None and rec["equal_to_simulated"] is None  # no result file

    err = printed["test_top1_err"]
    for sim, equal in ((err, True), (err + 2.0, False)):  # (one of the 50 images is 2 %)
        write_result(tmp_path, ckpt, sim)
        code, again, _ = run(capsys, model, record)  # a record of the same network is replaced
        rec = json.loads(record.read_text())
        assert code == 0 and again == printed
        assert rec["simulated_test_top1_err"] == sim and rec["equal_to_simulated"] is equal
    write_result(tmp_path, tmp_path / "elsewhere.ckpt", err)  # a result of another checkpoint is not compared
    assert run(capsys, model, record)[0] == 0
    assert json.loads(record.read_text())["simulated_result"] is None


@pytest.mark.parametrize("existing", ["not a record", "another network", "a folder"])
def test_an_existing_path_that_is_not_this_networks_record_is_refused(tmp_path, capsys, existing):
    model, _ = packed(tmp_path)
    record = tmp_path / "rec" / "seed1.json"
    if existing == "not a record":
        record.parent.mkdir()
        record.write_text('{"test_top1_err": 1.0}\n')
    elif existing == "another network":
        other, _ = packed(tmp_path, "mnist_lenet5_other", "other.lowbit")
        assert run(capsys, other, record)[0] == 0
    else:
        record.mkdir(parents=True)
    before = {p: (p.read_bytes() if p.is_file() else None) for p in record.parent.rglob("*")}
    code, _, err = run(capsys, model, record)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --record ") and str(record) in err
    assert {p: (p.read_bytes() if p.is_file() else None) for p in record.parent.rglob("*")} == before
