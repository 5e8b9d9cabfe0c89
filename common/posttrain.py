"""Post-training quantization (``quantize``) and quantize-then-fine-tune (``finetune``) of a trained float network."""
from __future__ import annotations

import time
from pathlib import Path

from common.config import Config
from common.errors import UserError
from common.evaluation import errors, test_metrics
from common.results import Replacing, make_result, result_path, run_lock, write_json_atomic
from common.training import CHECKPOINT_EVERY, process_settings, train


def post_train(paper: str, name: str, cfg: Config, source: str | None, *, finetune: bool = False, data_dir: str | None = None,
               wandb: str = "offline", progress: bool = True, results_dir: Path = Path("results"),
               runs_dir: Path = Path("runs"), resume: bool = False, checkpoint_every: int = CHECKPOINT_EVERY,
               overwrite: bool = False) -> Path:
    """Post-training quantization of the float network in ``source`` by the config's ``ptq`` method: choose the
    per-layer formats, test without fine-tuning and write the result file; with ``finetune``, then train the
    quantized network from the float weights (the config's optim and trainer) and write ``<config>_finetuned``."""
    import itertools

    import lightning as L

    from common.checkpoint import load_weights, resolve_init
    from common.config import validate
    from common.data import ClassificationData, data_root
    from common.module import Classifier
    from common.ptq import Calibration, build_ptq

    if cfg.ptq is None:
        raise UserError(f"--config {name}: no 'ptq' section (the post-training method) in this config")
    source = source or cfg.init_from
    if not source:
        raise UserError(f"--from: which float network? (give --from, or init_from in config {name})")
    data = ClassificationData(cfg.data, data_root(data_dir))
    data.check_available()
    replacing = Replacing(result_path(results_dir, paper, name, cfg.seed), cfg, overwrite)
    if finetune:  # (the fine-tuned run's is checked again by train, with its chosen formats)
        Replacing(result_path(results_dir, paper, f"{name}_finetuned", cfg.seed), cfg, overwrite)
    src = resolve_init(source, paper, cfg.seed, results_dir, runs_dir)
    if finetune and resume:
        from common.checkpoint import resume_checkpoint

        resume_checkpoint(runs_dir, paper, f"{name}_finetuned", cfg.seed, None)  # (its config: checked by train)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    float_cfg = validate({**cfg.to_dict(), "quant": {"rules": []}, "init_from": None})
    float_net = Classifier(float_cfg.to_dict(), data.shape, data.num_classes).model
    load_weights(float_net, src)  # fails before anything is written
    process_settings()

    start = time.time()
    data.setup()
    calib = list(itertools.islice(iter(data.calibration_dataloader()), cfg.ptq_batches))
    val = data.val_dataloader() or data.test_dataloader()
    cal = Calibration(float_net, calib, val)
    rules, report = build_ptq(cfg.ptq).choose(cal)
    report = {"method": cfg.ptq, "float_val_err": round(cal.error(), 4), "calibration_batches": len(calib),
              "selected_on": "validation" if data.val_dataloader() else "test", **report}
    quant_cfg = validate({**cfg.to_dict(), "quant": {**cfg.to_dict()["quant"], "rules": rules}, "init_from": str(src)})
    quantized = cal.quantized(rules)
    metrics = {**errors(test_metrics(quantized, data.test_dataloader())),
               "best_val_err": round(cal.error(rules), 4), "tested_epoch": None}
    result = make_result(paper, name, quant_cfg, quantized, metrics, results_dir, src, time.time() - start,
                     ptq=report, epochs=0, checkpoint=None, curve=[])
    from common.checkpoint import run_dir as run_folder

    path = replacing.path
    with run_lock(run_folder(runs_dir, paper, name, cfg.seed), f"{paper}/{name} seed {cfg.seed}"):
        if not replacing.reproduced_by(result):  # (a rerun that reproduces it, as finetune's first step does, leaves
            write_json_atomic(path, result)      # the file and its provenance as they were)
    said = replacing.compare(result)
    if said:
        print(said)
    if not finetune:
        return path
    return train(paper, f"{name}_finetuned", quant_cfg, data_dir=data_dir, wandb=wandb, progress=progress,
                 results_dir=results_dir, runs_dir=runs_dir, resume=resume, checkpoint_every=checkpoint_every,
                 overwrite=overwrite,
                 extra={"ptq": report, "before_finetune": metrics, "quantized_result": str(path)})
