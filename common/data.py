"""Datasets as LightningDataModules.

Small datasets (MNIST, Fashion-MNIST, CIFAR-10, SVHN, synthetic) are loaded once into tensors in memory and
batched by index (``__getitems__``): no per-sample Python in the training loop. ImageNet is read from an
ImageFolder tree with worker processes.

Data root: ``--data-dir``, else the ``LOWBIT_DATA`` environment variable, else ``./data``. Datasets that
torchvision can download are downloaded there when missing; without internet the run stops with one line that
says which directory to fill and with what.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from common.config import DataConfig
from common.errors import UserError

DATA_ENV = "LOWBIT_DATA"


def data_root(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get(DATA_ENV) or "data")


@dataclass(frozen=True)
class DatasetInfo:
    shape: tuple[int, int, int]
    num_classes: int
    where: str  # what a user must put where, if it is missing


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo((1, 28, 28), 10, "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the original IDX files)"),
    "fashion_mnist": DatasetInfo((1, 28, 28), 10, "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "cifar10": DatasetInfo((3, 32, 32), 10, "cifar-10-batches-py/ (the python version of CIFAR-10)"),
    "svhn": DatasetInfo((3, 32, 32), 10, "svhn/{train,test}_32x32.mat (SVHN format 2)"),
    "imagenet": DatasetInfo((3, 224, 224), 1000, "imagenet/{train,val}/<class>/*.JPEG (ImageFolder layout)"),
    "synthetic": DatasetInfo((1, 28, 28), 10, ""),
}


class TensorDataset(Dataset):
    """(x, y) tensors; a whole batch is fetched with one indexing operation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]):
        idx = torch.as_tensor(idx)
        return self.x[idx], self.y[idx]


def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Per image: zero-pad by ``pad``, crop a random window of the original size, flip horizontally with p = 1/2
    (the CIFAR-10 augmentation of TWN, ResNet...). Uses torch's global generator, so seeded runs repeat."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    i, j = torch.randint(0, 2 * pad + 1, (2, n, 1))
    cols = j + torch.arange(w)
    cols = torch.where(torch.rand(n, 1) < 0.5, cols.flip(1), cols)  # a flipped window reads its columns backwards
    rows = i + torch.arange(h)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


class AugmentedTensorDataset(TensorDataset):
    """Training split with ``crop_flip`` applied to every fetched batch."""

    def __getitems__(self, idx: list[int]):
        x, y = super().__getitems__(idx)
        return crop_flip(x), y


def _whole_batch(batch):
    return batch


# ---------------------------------------------------------------- raw loading

def _torchvision(name: str, root: Path, train: bool):
    import torchvision.datasets as tvd

    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=True)
            return ds.data.unsqueeze(1), ds.targets
        if name == "fashion_mnist":
            ds = tvd.FashionMNIST(root, train=train, download=True)
            return ds.data.unsqueeze(1), ds.targets
        if name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=True)
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
        if name == "svhn":
            ds = tvd.SVHN(root / "svhn", split="train" if train else "test", download=True)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()
    except (OSError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"dataset {name!r} not found under {root.resolve()} and could not be downloaded ({reason}): "
                        f"put {DATASETS[name].where} there, or set --data-dir / {DATA_ENV}") from None
    raise ValueError(name)


def _synthetic(cfg: DataConfig, train: bool, seed: int = 0):
    """Gaussian inputs labelled by a fixed random linear teacher (learnable, so smoke runs can improve).
    ``synthetic_size`` training samples remain after the validation split; the test set has a quarter of that."""
    g = torch.Generator().manual_seed(seed)
    dim = 1
    for s in cfg.shape:
        dim *= s
    teacher = torch.randn(dim, cfg.num_classes, generator=g)
    n = cfg.synthetic_size + cfg.val_size if train else max(cfg.synthetic_size // 4, 1)
    g.manual_seed(seed + (1 if train else 2))
    x = torch.randn(n, *cfg.shape, generator=g)
    return x, (x.flatten(1) @ teacher).argmax(1)


# ---------------------------------------------------------------- preprocessing

def gcn(x: torch.Tensor, scale: float = 55.0, min_divisor: float = 1e-8) -> torch.Tensor:
    """Global contrast normalisation per image: x <- scale * (x - mean) / ||x - mean||  (pylearn2, scale 55)."""
    flat = x.flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True).clamp_min(min_divisor)
    return (scale * flat / norm).view_as(x)


class ZCA:
    """ZCA whitening fitted on the training set: x <- (x - mu) U diag(1/sqrt(s + bias)) U^T (pylearn2, bias 0.1)."""

    def __init__(self, x: torch.Tensor, bias: float = 0.1):
        flat = x.flatten(1).double()
        self.mean = flat.mean(0)
        c = flat - self.mean
        cov = c.T @ c / len(c)
        s, u = torch.linalg.eigh(cov)
        self.w = (u * (1.0 / torch.sqrt(s.clamp_min(0) + bias))) @ u.T

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1).double() - self.mean) @ self.w).float().view_as(x)


def preprocess(kind: str, train: torch.Tensor, others: list[torch.Tensor]) -> list[torch.Tensor]:
    """Apply preprocessing ``kind`` with statistics from ``train`` only; returns [train, *others] as float."""
    xs = [t.float() / 255.0 if t.dtype == torch.uint8 else t.float() for t in (train, *others)]
    if kind == "none":
        return xs
    if kind == "center":  # pylearn2 MNIST center=True: subtract the per-pixel mean
        mu = xs[0].mean(0, keepdim=True)
        return [x - mu for x in xs]
    if kind == "pm1":  # BNN: x -> 2x - 1 in [-1, 1]
        return [2 * x - 1 for x in xs]
    if kind == "standardize":  # per-channel mean/std
        mu = xs[0].mean((0, 2, 3), keepdim=True)
        sd = xs[0].std((0, 2, 3), keepdim=True)
        return [(x - mu) / sd for x in xs]
    if kind == "gcn_zca":  # BinaryConnect/BNN CIFAR-10 (pylearn2 gcn_whitened)
        xs = [gcn(x) for x in xs]
        zca = ZCA(xs[0])
        return [zca(x) for x in xs]
    raise ValueError(kind)


# ---------------------------------------------------------------- data module

class ClassificationData(L.LightningDataModule):
    """Train / validation / test splits of one dataset. The validation set is the *last* ``val_size`` training
    samples (as the BinaryConnect and BNN code); 0 disables validation."""

    def __init__(self, cfg: DataConfig, root: Path):
        super().__init__()
        self.cfg, self.root = cfg, Path(root)
        info = DATASETS[cfg.name]
        self.shape = tuple(cfg.shape) if cfg.name == "synthetic" else info.shape
        self.num_classes = cfg.num_classes if cfg.name == "synthetic" else info.num_classes
        self._splits: dict[str, Dataset] | None = None
        self._cache: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    def _raw(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if train not in self._cache:
            self._cache[train] = (_synthetic(self.cfg, train) if self.cfg.name == "synthetic"
                                  else _torchvision(self.cfg.name, self.root, train))
        return self._cache[train]

    def check_available(self) -> None:
        """Fail early (before anything is written) when the data is missing and cannot be downloaded."""
        if self.cfg.name == "imagenet":
            for split in ("train", "val"):
                if not (self.root / "imagenet" / split).is_dir():
                    raise UserError(f"dataset 'imagenet' not found: put {DATASETS['imagenet'].where} "
                                    f"under {self.root.resolve()} (it cannot be downloaded automatically)")
        else:
            self.setup()

    def prepare_data(self) -> None:
        if self.cfg.name not in ("imagenet", "synthetic"):
            for train in (False, True):
                self._raw(train)  # downloads when missing

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        c = self.cfg
        if c.name == "imagenet":
            self._splits = self._imagenet()
            return
        (xtr, ytr), (xte, yte) = self._raw(True), self._raw(False)
        self._cache.clear()
        if c.val_size >= len(ytr):
            raise UserError(f"data.val_size: expected fewer than the {len(ytr)} training samples, got {c.val_size}")
        n = len(ytr) - c.val_size
        xtr, xval, ytr, yval = xtr[:n], xtr[n:], ytr[:n], ytr[n:]
        xtr, xval, xte = preprocess(c.preprocess, xtr, [xval, xte])
        train_set = AugmentedTensorDataset if c.augment == "crop_flip" else TensorDataset
        self._splits = {"train": train_set(xtr, ytr), "val": TensorDataset(xval, yval),
                        "test": TensorDataset(xte, yte)}

    def _imagenet(self) -> dict[str, Dataset]:
        import torchvision.transforms as T
        from torchvision.datasets import ImageFolder

        norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        train = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
        test = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
        val = ImageFolder(self.root / "imagenet" / "val", test)
        return {"train": ImageFolder(self.root / "imagenet" / "train", train), "val": val, "test": val}

    def _loader(self, split: str, train: bool) -> DataLoader:
        assert self._splits is not None
        ds = self._splits[split]
        in_memory = isinstance(ds, TensorDataset)
        return DataLoader(ds, batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size, shuffle=train,
                          num_workers=self.cfg.num_workers, collate_fn=_whole_batch if in_memory else None,
                          persistent_workers=self.cfg.num_workers > 0, drop_last=False)

    def calibration_dataloader(self) -> DataLoader:
        """Training images in their stored order, without augmentation (post-training calibration)."""
        assert self._splits is not None
        ds = self._splits["train"]
        if isinstance(ds, AugmentedTensorDataset):
            ds = TensorDataset(ds.x, ds.y)
        in_memory = isinstance(ds, TensorDataset)
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=False, num_workers=self.cfg.num_workers,
                          collate_fn=_whole_batch if in_memory else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", False) if len(self._splits["val"]) else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
