"""Evaluation: test a network or a checkpoint, and the error figures a result file holds (in percent)."""
from __future__ import annotations

import sys
from pathlib import Path

from common.errors import UserError


def test_metrics(model, loader) -> dict:
    """Top-1/top-5 error (fractions) and mean cross-entropy of ``model`` over ``loader``."""
    import torch
    import torch.nn.functional as F

    from common.module import topk_errors

    model.eval()
    n, loss, e1, e5 = 0, 0.0, 0.0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            errs = topk_errors(out, y, (1, 5))
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            e1, e5, n = e1 + float(errs[1]) * len(y), e5 + float(errs[5]) * len(y), n + len(y)
    return {"test_err": e1 / n, "test_err_top5": e5 / n, "test_loss": loss / n}


def evaluate(ckpt_path: str, data_dir: str | None) -> dict:
    """Test a checkpoint written by ``train``; returns its metrics (errors in percent)."""
    import lightning as L
    import torch

    from common.checkpoint import READ_ERRORS, read_checkpoint
    from common.data import ClassificationData, data_root
    from common.module import Classifier

    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, "--ckpt")  # data only: refused before anything in it could run
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict):
        raise UserError(f"--ckpt {ckpt_path}: not a checkpoint of this suite's train command (no config)")
    try:
        module = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as e:
        raise UserError(f"--ckpt {ckpt_path}: not a readable checkpoint of this suite ({type(e).__name__})") from None
    data = ClassificationData(module.cfg.data, data_root(data_dir))
    data.check_available()
    trainer = L.Trainer(accelerator=module.cfg.trainer.accelerator, devices=1, logger=False,
                        enable_progress_bar=sys.stderr.isatty())
    with torch.no_grad():
        out = trainer.test(module, datamodule=data, verbose=False)[0]
    return {"checkpoint": str(path), **errors(out), "errors_in": "percent"}


def pct(err) -> float:
    """A fraction as a percentage, rounded to 4 decimals (float32 metrics carry noise below that)."""
    return round(100 * float(err), 4)


def errors(tested: dict) -> dict:
    out = {"test_top1_err": pct(tested["test_err"])}
    if "test_err_top5" in tested:
        out["test_top5_err"] = pct(tested["test_err_top5"])
    out["test_loss"] = round(float(tested["test_loss"]), 6)
    return out
