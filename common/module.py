"""The one LightningModule every paper trains with: classification with a quantized model.

Parameterised by the config: loss (``cross_entropy`` or ``squared_hinge``), optimizer (``adam``/``sgd``/``shift_adamax``),
exponential or linear per-epoch learning-rate decay from ``lr_start`` to ``lr_end`` (or step, or piecewise), a
momentum ramp, BinaryConnect's per-layer "Glorot" learning-rate scaling, frozen layers, max-norm, latent-weight
clipping and stored-value quantization after each optimizer step, top-1/top-5 error. A training loss that is not finite
(on any process) stops the run with ``Diverged``. Epoch metrics are averaged over all processes (DDP).
A paper that needs more overrides a hook in its own package; it never copies this loop.
"""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from common.config import Config, validate
from common.errors import Diverged
from common.models import build_model
from common.optim import build_optimizer
from common.quant import activation_quantizers, after_step, convert, convertible_layers, quant_layers, select
from common.quant.pow2 import ap2_scalar
from common.results import upgrade_config


def squared_hinge(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L2-SVM loss (BinaryConnect, BNN): mean over batch x classes of max(0, 1 - t * out)^2, t = +-1 one-hot."""
    t = F.one_hot(y, out.shape[1]).to(out.dtype) * 2 - 1
    return torch.clamp(1 - t * out, min=0).square().mean()


LOSSES = {"cross_entropy": F.cross_entropy, "squared_hinge": squared_hinge}


def glorot_lr_scale(fan_in: int, fan_out: int) -> float:
    """W_LR_scale = 1 / sqrt(1.5 / (fan_in + fan_out)) (BinaryConnect code; conv fans include the kernel area)."""
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


def topk_errors(out: torch.Tensor, y: torch.Tensor, ks: tuple[int, ...]) -> dict[int, torch.Tensor]:
    top = out.topk(max(ks), dim=1).indices
    hit = top == y[:, None]
    return {k: 1.0 - hit[:, :k].any(1).float().mean() for k in ks}


class PiecewiseFactor:
    """Learning-rate factor: 1 before the first milestone (0-based epoch), then factors[i] from milestones[i]."""

    def __init__(self, milestones: list[int], factors: list[float]):
        self.milestones, self.factors = milestones, factors

    def __call__(self, epoch: int) -> float:
        f = 1.0
        for m, factor in zip(self.milestones, self.factors):
            if epoch >= m:
                f = factor
        return f


class DecayFactor:
    """Learning-rate factor decaying from 1 to ``end`` over ``epochs`` epochs, then constant: ``exponential``
    (geometric) or ``linear``."""

    def __init__(self, end: float, epochs: int, kind: str):
        self.end, self.epochs, self.kind = end, epochs, kind

    def __call__(self, epoch: int) -> float:
        t = min(epoch, self.epochs) / self.epochs
        return self.end**t if self.kind == "exponential" else 1 + (self.end - 1) * t


class Classifier(L.LightningModule):
    def __init__(self, config: dict, in_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.save_hyperparameters()
        self.cfg: Config = validate(upgrade_config(config))  # (a checkpoint's config may be of an earlier version)
        self.num_classes = num_classes
        model = build_model(self.cfg.model, in_shape, num_classes)
        names = convertible_layers(model)
        trained = set(select(self.cfg.optim.train_layers, names, "optim.train_layers"))
        self.model = convert(model, [vars(r) for r in self.cfg.quant.rules])
        for n in names:  # layers outside optim.train_layers keep their weights (fine-tuning schemes)
            if n not in trained:
                self.model.get_submodule(n).requires_grad_(False)
        self.loss_fn = LOSSES[self.cfg.loss]
        self.ks = (1, 5) if num_classes >= 10 else (1,)
        self._train_sums: list | None = None  # this epoch's training loss and error sums, sample count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        out = self(x)
        loss = self.loss_fn(out, y)
        errs = topk_errors(out.detach(), y, self.ks if stage == "test" else (1,))
        if stage == "train":  # per step, this process's loss; per epoch: ``train_epoch_metrics``
            if self._trainer is None or (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
                # only on the steps the loggers write (and the progress bar refreshes from): a log call costs
                # about 1% of a small network's step
                self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
            self._accumulate(loss.detach(), errs[1], len(y))
            return loss
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage != "test", batch_size=len(y), sync_dist=True)
        self.log(f"{stage}_err", errs[1], on_epoch=True, prog_bar=stage != "test", batch_size=len(y), sync_dist=True)
        if 5 in errs:
            self.log(f"{stage}_err_top5", errs[5], on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        local = bool(torch.isfinite(loss.detach()))
        # decided together, so that every process stops at the same step (none is left waiting in a collective)
        finite = local if self._trainer is None else self.trainer.strategy.reduce_boolean_decision(local, all=True)
        if not finite:
            raise Diverged(self.current_epoch, self.global_step, math.nan if local else float(loss.detach()))
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    # ---------------------------------------------------------- epoch training metrics (kept in checkpoints)

    def _accumulate(self, loss: torch.Tensor, err: torch.Tensor, n: int) -> None:
        """Sample-weighted sums of this epoch's training loss and error (float32, in the order Lightning's own epoch
        means use), kept here rather than in Lightning's logger so that a run resumed mid-epoch has them."""
        if self._train_sums is None:
            self._train_sums = [torch.tensor(0.0, device=loss.device), torch.tensor(0.0, device=loss.device), 0]
        s = self._train_sums
        self._train_sums = [s[0] + loss.float() * n, s[1] + err.float() * n, s[2] + n]

    def train_epoch_metrics(self) -> dict[str, float]:
        """This epoch's mean training loss and top-1 error (a fraction) over the samples of every process."""
        if self._train_sums is None:
            return {}
        loss, err, n = self._train_sums
        total = torch.stack([loss, err, torch.tensor(float(n), device=loss.device)])
        if self._trainer is not None and self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            loss, err, n = total[0], total[1], total[2]
        return {"train_loss": float(loss / n), "train_err": float(err / n)}

    def on_train_epoch_end(self):
        metrics = self.train_epoch_metrics()  # for the loggers and the progress bar
        if metrics:
            self.log("train_loss_epoch", metrics["train_loss"], on_epoch=True, sync_dist=True)  # (equal on all)
            self.log("train_err", metrics["train_err"], on_epoch=True, prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every process's sums (under DDP every process builds the checkpoint; rank 0 writes it)."""
        if self._train_sums is None:
            return
        loss, err, n = self._train_sums
        local = torch.stack([loss, err, torch.tensor(float(n), device=loss.device)])
        every = self.all_gather(local).reshape(-1, 3).cpu() if self.trainer.world_size > 1 else local[None].cpu()
        checkpoint["train_epoch_sums"] = {"loss": every[:, 0], "err": every[:, 1],
                                          "samples": [int(v) for v in every[:, 2].tolist()]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sums = checkpoint.get("train_epoch_sums")
        if sums is not None:
            r = self.global_rank if len(sums["samples"]) > 1 else 0
            self._train_sums = [sums["loss"][r].to(self.device), sums["err"][r].to(self.device), sums["samples"][r]]

    def param_groups(self) -> list[dict]:
        """Parameter groups with an ``lr_scale``: 1 for everything, except BinaryConnect/BNN's Glorot scale on the
        quantized weights (and their biases with ``glorot_bias``), rounded to a power of two if asked."""
        o = self.cfg.optim
        groups, scaled = [], set()
        if o.glorot_lr_scale:
            for _, m in quant_layers(self.model):
                if m.weight_quantizer is None:
                    continue
                scale = glorot_lr_scale(*m.fans())
                if o.glorot_round_pow2:
                    scale = ap2_scalar(scale)
                params = [m.weight] + ([m.bias] if o.glorot_bias and m.bias is not None else [])
                groups.append({"params": params, "lr_scale": scale})
                scaled.update(id(p) for p in params)
        rest = [p for p in self.parameters() if id(p) not in scaled and p.requires_grad]
        return [{"params": rest, "lr_scale": 1.0}] + groups

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = build_optimizer(o.name, self.param_groups(), lr=o.lr_start, momentum=o.momentum, nesterov=o.nesterov,
                              weight_decay=o.weight_decay, eps=o.eps)
        if o.lr_end is not None and o.lr_decay == "exponential" and o.lr_decay_epochs is None:
            gamma = (o.lr_end / o.lr_start) ** (1.0 / self.cfg.trainer.max_epochs)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
        elif o.lr_end is not None:
            factor = DecayFactor(o.lr_end / o.lr_start, o.lr_decay_epochs or self.cfg.trainer.max_epochs, o.lr_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        elif o.step_every is not None:
            sched = torch.optim.lr_scheduler.StepLR(opt, o.step_every, o.step_gamma)
        elif o.lr_milestones is not None:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, PiecewiseFactor(o.lr_milestones, o.lr_factors))
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_train_start(self):
        if self.trainer.ckpt_path is None:  # (a resumed run's are already)
            after_step(self.model)  # stored values start on their grid (layers with an ``update`` quantizer)

    def on_train_epoch_start(self):  # (not called when a run resumes mid-epoch)
        self._train_sums = None
        o = self.cfg.optim
        if o.momentum_end is not None:  # linear momentum ramp (Courbariaux et al. 2015)
            t = min(self.current_epoch, o.momentum_epochs) / o.momentum_epochs
            for group in self.trainer.optimizers[0].param_groups:
                group["momentum"] = o.momentum + (o.momentum_end - o.momentum) * t

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """What follows every optimizer step: max-norm where configured, then the quantized layers' after-step
        pass (latent clip, stored-value quantization)."""
        if self.cfg.optim.max_norm is not None:  # cap each output unit's incoming weight norm (maxout papers)
            with torch.no_grad():
                for m in self.model.modules():
                    if isinstance(m, (nn.Linear, nn.Conv2d)) and m.weight.requires_grad:
                        m.weight.renorm_(2, 0, self.cfg.optim.max_norm)
        after_step(self.model)


def parameter_bits(model: nn.Module) -> int:
    """Memory of the parameters in bits: quantized weights at their quantizer's bits, everything else 32."""
    quantized = {id(m.weight): m.bits()["w"] for _, m in quant_layers(model)}
    return sum(p.numel() * quantized.get(id(p), 32) for p in model.parameters())


def bits_summary(model: nn.Module) -> tuple[dict[str, int], list[dict]]:
    """(W/A/G bits: the lowest over quantized layers and activation quantizers, 32 where nothing is quantized;
    per-layer detail). Activation quantizers placed in the model (``act: {name: sign}``) count as ``a``."""
    per_layer = [{"layer": n, **m.bits()} for n, m in quant_layers(model)]
    per_layer += [{"layer": n, "activation": q.bits} for n, q in activation_quantizers(model)]
    overall = {k: min([r[k] for r in per_layer if k in r], default=32) for k in ("w", "a", "g")}
    overall["a"] = min([overall["a"]] + [r["activation"] for r in per_layer if "activation" in r])
    return overall, per_layer
