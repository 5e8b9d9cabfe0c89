"""``python -m engine test --model FILE [--data-dir DIR] [--record PATH]``: run a packed network (written by
``python -m papers.<paper> export``) over its dataset's test set in the integer / bit arithmetic of ``engine.run``
and print its test error as JSON, as ``python -m papers.<paper> test`` prints the simulated network's. Torch's
random numbers are seeded (0) first, so that a network that rounds its activations stochastically at inference
(Gupta's) gives the same number on every run. ``--record PATH`` also writes that JSON, with the packed file's size,
its header's metadata and, where the header names a checkpoint of ``runs/<paper>/<config>/seed<N>/`` whose result
``results/<paper>/<config>/seed<N>.json`` was measured on that checkpoint, the simulated network's test error from
it and whether the two are equal, to PATH (atomically); an existing PATH is replaced only if it is a record of the
same network.
``python -m engine describe --model FILE``: which arithmetic each layer runs in."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"  # where the simulated networks' results are looked up
WRITTEN_BY = "python -m engine test --record"
_CKPT = re.compile(r"(?:^|/)(?P<paper>[^/]+)/(?P<config>[^/]+)/seed(?P<seed>\d+)/checkpoints/[^/]+\.ckpt$")


def network_of(meta: dict, model: str) -> dict:
    """Which network a packed file is: paper, config and seed from the checkpoint its header names
    (``.../<paper>/<config>/seed<N>/checkpoints/*.ckpt``, as ``python -m papers.<paper> export`` writes it), else
    None for each; ``network`` names it for a record (the checkpoint, else the packed file, where those are unknown)."""
    ckpt = meta.get("checkpoint")
    m = _CKPT.search(ckpt) if isinstance(ckpt, str) else None
    if m:
        paper, config, seed = m["paper"], m["config"], int(m["seed"])
        return {"network": f"{paper}/{config}/seed{seed}", "paper": paper, "config_name": config, "seed": seed}
    name = ckpt if isinstance(ckpt, str) else str(Path(model).resolve())
    return {"network": name, "paper": None, "config_name": None, "seed": None}


def check_record_path(path: Path, network: str) -> None:
    """Before any work: ``path`` may be written (a new file, or a record of the same network by this command)."""
    from common.checks import check_writable
    from common.results import read_result

    if path.is_dir():
        raise UserError(f"--record {path}: a folder, expected the file to write")
    if path.exists():
        old = read_result(path)
        if old is None or old.get("written_by") != WRITTEN_BY:
            raise UserError(f"--record {path}: exists and is not a record of {WRITTEN_BY}; refused (give a new path)")
        if old.get("network") != network:
            raise UserError(f"--record {path}: a record of {old.get('network')}, not of {network}; refused (give "
                            f"another path)")
    check_writable(path.parent, "--record")


def simulated(net: dict, meta: dict, n: int, err: float) -> dict:
    """The simulated network's test error from its result file, when that result was measured on the checkpoint
    the packed file was exported from; equal means the same number of wrong test images."""
    from common.results import read_result, result_path

    none = {"simulated_result": None, "simulated_test_top1_err": None, "equal_to_simulated": None}
    if net["paper"] is None:
        return none
    path = result_path(RESULTS, net["paper"], net["config_name"], net["seed"])
    res = read_result(path) or {}
    ckpt, sim = res.get("checkpoint"), (res.get("metrics") or {}).get("test_top1_err")
    if not isinstance(ckpt, str) or Path(ckpt).resolve() != Path(meta["checkpoint"]).resolve() \
            or not isinstance(sim, (int, float)):
        return none
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return {"simulated_result": str(where), "simulated_test_top1_err": sim,
            "equal_to_simulated": abs(sim - err) < 50 / n}  # (one image is 100 / n percent)


def test(model: str, data_dir: str | None, record: str | None = None) -> dict:
    import torch

    from common.config import validate
    from common.data import ClassificationData, data_root
    from engine import Engine

    torch.manual_seed(0)  # (stochastic rounding at inference: the same draws on every run)
    engine = Engine(model)
    net = network_of(engine.meta, model)
    if record is not None:
        check_record_path(Path(record), net["network"])
    data_cfg = engine.meta.get("data")
    if not isinstance(data_cfg, dict):
        raise UserError(f"--model {model}: its header names no dataset (export it again with this suite's export)")
    cfg = validate({"data": data_cfg})
    data = ClassificationData(cfg.data, data_root(data_dir))
    data.check_available()
    wrong, n = 0, 0
    for x, y in data.test_dataloader():
        wrong += int((engine.predict(x) != y).sum())
        n += len(y)
    out = {"model": model, "test_top1_err": round(100 * wrong / n, 4), "test_images": n, "errors_in": "percent",
           "threads": torch.get_num_threads()}
    if record is not None:
        from common.results import write_json_atomic

        write_json_atomic(Path(record), {**out, "written_by": WRITTEN_BY, **net,
                                         "packed_bytes": Path(model).stat().st_size, "meta": engine.meta,
                                         **simulated(net, engine.meta, n, out["test_top1_err"])})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("test", help="test error of a packed network on its dataset's test set",
                       description="The packed network's test error on its dataset's test set, as JSON (torch's "
                                   "random numbers seeded first: stochastic rounding at inference gives the same "
                                   "number on every run).")
    t.add_argument("--model", required=True, help="a packed file written by python -m papers.<paper> export")
    t.add_argument("--data-dir", default=None, help="dataset root (default: $LOWBIT_DATA, else ./data)")
    t.add_argument("--record", default=None, metavar="PATH",
                   help="also write the JSON with the file's size, its header's metadata and the simulated "
                        "network's committed test error (results/<paper>/<config>/seed<N>.json) to PATH; an "
                        "existing PATH only if it is this command's record of the same network")
    d = sub.add_parser("describe", help="each layer and the arithmetic it runs in")
    d.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "test":
            print(json.dumps(test(args.model, args.data_dir, args.record), indent=2))
        else:
            from engine import Engine

            print("\n".join(Engine(args.model).describe()))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
