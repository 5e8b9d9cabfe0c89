"""``python -m engine test --model FILE [--data-dir DIR]``: run a packed network (written by
``python -m papers.<paper> export``) over its dataset's test set in the integer / bit arithmetic of ``engine.run``
and print its test error as JSON, as ``python -m papers.<paper> test`` prints the simulated network's.
``python -m engine describe --model FILE``: which arithmetic each layer runs in."""
from __future__ import annotations

import argparse
import json
import sys

from common.errors import UserError


def test(model: str, data_dir: str | None) -> dict:
    import torch

    from common.config import validate
    from common.data import ClassificationData, data_root
    from engine import Engine

    engine = Engine(model)
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
    return {"model": model, "test_top1_err": round(100 * wrong / n, 4), "test_images": n, "errors_in": "percent",
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("test", help="test error of a packed network on its dataset's test set")
    t.add_argument("--model", required=True, help="a packed file written by python -m papers.<paper> export")
    t.add_argument("--data-dir", default=None, help="dataset root (default: $LOWBIT_DATA, else ./data)")
    d = sub.add_parser("describe", help="each layer and the arithmetic it runs in")
    d.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "test":
            print(json.dumps(test(args.model, args.data_dir), indent=2))
        else:
            from engine import Engine

            print("\n".join(Engine(args.model).describe()))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
