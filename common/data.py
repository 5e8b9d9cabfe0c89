"""Datasets as LightningDataModules.

Small datasets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-10 as JPEG folders, SVHN, synthetic) are loaded once into tensors in memory and
batched by index (``__getitems__``): no per-sample Python in the training loop. ImageNet is read from an
ImageFolder tree with worker processes.

Data root: ``--data-dir``, else the ``LOWBIT_DATA`` environment variable, else ``./data``. Datasets that
torchvision can download are downloaded there when missing; without internet the run stops with one line that
says which directory to fill and with what. Files already there are checked first (size and IDX header of MNIST's
raw files, md5 where the dataset publishes one): a truncated or corrupt file stops the run with one line naming it.

Resuming mid-epoch (``train --resume``): the data module's state, saved in every checkpoint, holds the position in
the epoch, the seed of the epoch's shuffle and the random generators' states; a resumed run sees the same batches,
the same augmentation and the same random draws as an uninterrupted one. With several processes (DDP)
``data.batch_size`` stays the global batch: each of N processes takes ``batch_size / N`` samples per step.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

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
    "cifar10_jpeg": DatasetInfo((3, 32, 32), 10, "cifar10-jpeg/{train,test}/<class>/*.jpg (CIFAR-10 as JPEG image "
                                "folders: 10 class folders, 5,000 train and 1,000 test images each)"),
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
    (the CIFAR-10 augmentation of TWN, ResNet...). Uses torch's global generator, so seeded runs repeat; the data
    module applies it to each training batch in the main process, just before its step (so a resumed run draws the
    same windows as an uninterrupted one)."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    i, j = torch.randint(0, 2 * pad + 1, (2, n, 1))
    cols = j + torch.arange(w)
    cols = torch.where(torch.rand(n, 1) < 0.5, cols.flip(1), cols)  # a flipped window reads its columns backwards
    rows = i + torch.arange(h)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _whole_batch(batch):
    return batch


class EpochSampler(RandomSampler):
    """``RandomSampler`` (the same draw from torch's global generator, hence the same order) that remembers the seed
    of its current pass and can replay a pass from a given seed, for a run resumed mid-epoch."""

    def __init__(self, data_source, replay: int | None = None):
        super().__init__(data_source)
        self.seed, self.replay = None, replay

    def __iter__(self):
        if self.replay is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            seed, self.replay = self.replay, None
        self.seed = seed
        g = torch.Generator()
        g.manual_seed(seed)
        yield from torch.randperm(len(self.data_source), generator=g).tolist()


class ResumableBatchSampler(BatchSampler):
    """``BatchSampler`` whose next pass starts after its first ``skip`` batches (a run resumed mid-epoch). Lightning
    swaps its sampler for a ``DistributedSampler`` under DDP, keeping ``skip``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool, skip: int = 0):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = skip

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


def rng_states() -> dict:
    """The global random generators (torch CPU and CUDA, Python, NumPy) as plain values and tensors (checkpoints stay
    loadable with ``torch.load(weights_only=True)``)."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def set_rng_states(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


# ---------------------------------------------------------------- checking files already there

IDX_MAGIC = {"images": (0x00000803, (28, 28)), "labels": (0x00000801, ())}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _corrupt(name: str, path: Path, problem: str) -> UserError:
    return UserError(f"dataset {name!r}: {path}: {problem} (truncated or corrupt: replace it, or delete it to "
                     f"download it again)")


def _check_idx(name: str, path: Path, count: int, kind: str) -> None:
    """An uncompressed IDX file: its header (magic number, sizes) and its exact byte size."""
    magic, dims = IDX_MAGIC[kind]
    shape = (count, *dims)
    expected = 4 * (1 + len(shape)) + math.prod(shape)  # uint8 values after the header
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4 * (1 + len(shape)))
    fields = tuple(int.from_bytes(head[i:i + 4], "big") for i in range(0, len(head) - len(head) % 4, 4))
    if fields != (magic, *shape):
        raise _corrupt(name, path, f"not an IDX {kind} file of shape {shape} (header {fields})")
    if size != expected:
        raise _corrupt(name, path, f"{size} bytes, expected {expected}")


def verify_files(name: str, root: Path) -> None:
    """Check the files of dataset ``name`` that are already under ``root`` (missing ones are downloaded later):
    MNIST/Fashion-MNIST raw IDX files by header and size, their .gz archives, CIFAR-10's batches and SVHN's .mat
    files by the md5 torchvision publishes, the JPEG folders by their classes and counts. Raises ``UserError``
    naming the first bad file (an unreadable one included)."""
    try:
        _verify_files(name, root)
    except OSError as e:
        raise UserError(f"dataset {name!r}: {e.filename or root}: cannot be read ({e.strerror or e})") from None


def _verify_files(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    if name in ("mnist", "fashion_mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        raw = root / cls.__name__ / "raw"
        for archive, md5 in cls.resources:
            path = raw / archive.removesuffix(".gz")
            split, kind = path.name.split("-")[:2]
            count = 60000 if split == "train" else 10000
            if path.is_file():  # torchvision reads these and ignores the archive
                _check_idx(name, path, count, kind)
            elif (raw / archive).is_file() and _md5(raw / archive) != md5:
                raise _corrupt(name, raw / archive, f"md5 {_md5(raw / archive)}, expected {md5}")
    elif name == "cifar10":
        folder = root / tvd.CIFAR10.base_folder
        if folder.is_dir():
            for file, md5 in [*tvd.CIFAR10.train_list, *tvd.CIFAR10.test_list,
                              [tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["md5"]]]:
                if not (folder / file).is_file():
                    raise UserError(f"dataset 'cifar10': {folder / file}: missing (put the whole "
                                    f"{DATASETS['cifar10'].where} there, or delete {folder} to download it again)")
                if _md5(folder / file) != md5:
                    raise _corrupt(name, folder / file, f"md5 {_md5(folder / file)}, expected {md5}")
        elif (archive := root / "cifar-10-python.tar.gz").is_file() and _md5(archive) != tvd.CIFAR10.tgz_md5:
            raise _corrupt(name, archive, f"md5 {_md5(archive)}, expected {tvd.CIFAR10.tgz_md5}")
    elif name == "cifar10_jpeg":
        jpeg_files(root)
    elif name == "svhn":
        for split in ("train", "test"):
            _, file, md5 = tvd.SVHN.split_list[split]
            path = root / "svhn" / file
            if path.is_file() and _md5(path) != md5:
                raise _corrupt(name, path, f"md5 {_md5(path)}, expected {md5}")


# ---------------------------------------------------------------- CIFAR-10 as JPEG image folders

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
JPEG_FOLDER = "cifar10-jpeg"
JPEG_COUNTS = {"train": 5000, "test": 1000}  # images per class folder


def jpeg_files(root: Path, counts: dict[str, int] | None = None) -> dict[str, list[tuple[Path, int]]]:
    """The (file, label) pairs of ``root/cifar10-jpeg/{train,test}/<class>/*.jpg``, checked: both splits, exactly
    the 10 CIFAR-10 class folders (sorted, their index is the label, as in the original), ``counts[split]`` images in
    each. Anything else is a ``UserError`` naming what is missing or extra. The order interleaves the classes (the
    first image of each class, then the second...), so that the validation split, the last images of the training
    set, holds every class equally (the folders are sorted by class; the original's batches are shuffled)."""
    base = root / JPEG_FOLDER
    out: dict[str, list[tuple[Path, int]]] = {}
    for split, per_class in (counts or JPEG_COUNTS).items():
        folder = base / split
        if not folder.is_dir():
            raise UserError(f"dataset 'cifar10_jpeg': {folder}: missing (put {DATASETS['cifar10_jpeg'].where} under "
                            f"{root.resolve()}, or set --data-dir / {DATA_ENV})")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if tuple(found) != CIFAR10_CLASSES:
            missing = [c for c in CIFAR10_CLASSES if c not in found]
            extra = [c for c in found if c not in CIFAR10_CLASSES]
            raise UserError(f"dataset 'cifar10_jpeg': {folder}: expected the 10 class folders {', '.join(CIFAR10_CLASSES)}"
                            + (f"; missing {', '.join(missing)}" if missing else "")
                            + (f"; unexpected {', '.join(extra)}" if extra else ""))
        by_class = []
        for cls in CIFAR10_CLASSES:
            images = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
            if len(images) != per_class:
                raise UserError(f"dataset 'cifar10_jpeg': {folder / cls}: {len(images)} .jpg files, expected "
                                f"{per_class} (an incomplete or altered copy)")
            by_class.append(images)
        out[split] = [(images[i], label) for i in range(per_class) for label, images in enumerate(by_class)]
    return out


def _cache_dirs(base: Path) -> list[Path]:
    """Where a decoded copy may be kept: beside the images when that folder is writable, else the user's cache."""
    from common.results import writable

    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lowbit-repro"
    return [base, user] if writable(base) else [user]


def _decode(files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    images = torch.empty(len(files), *DATASETS["cifar10_jpeg"].shape, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        try:
            img = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except (OSError, RuntimeError, ValueError) as e:
            raise _corrupt("cifar10_jpeg", path, f"not a readable JPEG ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if tuple(img.shape) != images.shape[1:]:
            raise _corrupt("cifar10_jpeg", path, f"image of shape {tuple(img.shape)}, expected {tuple(images.shape[1:])}")
        images[i] = img
    return images, torch.tensor([label for _, label in files])


def load_jpeg_folder(root: Path, train: bool, counts: dict[str, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of CIFAR-10 as JPEG folders, decoded once (torchvision's libjpeg-turbo, RGB) into uint8 tensors.
    The decoded split is cached as plain tensors, keyed by the files' names, sizes and times and the decoder's
    version: beside the images when their folder is writable, else in ``$XDG_CACHE_HOME/lowbit-repro`` (a
    read-only copy is never written to); a cache that cannot be written just means decoding again next time."""
    import torchvision

    from common.results import atomic_write

    split = "train" if train else "test"
    files = jpeg_files(root, counts)[split]
    key = hashlib.sha256(torchvision.__version__.encode())
    for path, label in files:
        st = path.stat()
        key.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    name = f".decoded-{split}-{key.hexdigest()[:16]}.pt"
    dirs = _cache_dirs(root / JPEG_FOLDER)
    for folder in dirs:
        cached = folder / name
        if cached.is_file():
            try:
                x, y = (lambda d: (d["x"], d["y"]))(torch.load(cached, map_location="cpu", weights_only=True))
                if x.dtype == torch.uint8 and tuple(x.shape) == (len(files), *DATASETS["cifar10_jpeg"].shape) \
                        and y.tolist() == [label for _, label in files]:
                    return x, y
            except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError):
                pass  # unreadable or stale: decode again
    x, y = _decode(files)
    for folder in dirs:
        try:
            atomic_write(folder / name, lambda f: torch.save({"x": x, "y": y}, f))
            break
        except OSError:
            continue
    return x, y


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
        if name == "cifar10_jpeg":
            return load_jpeg_folder(root, train)
        if name == "svhn":
            ds = tvd.SVHN(root / "svhn", split="train" if train else "test", download=True)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()
    except (OSError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"dataset {name!r} not found under {root.resolve()} and could not be downloaded ({reason}): "
                        f"put {DATASETS[name].where} there, or set --data-dir / {DATA_ENV}") from None
    raise ValueError(name)


MAX_SYNTHETIC_VALUES = 1 << 30  # 4 GiB of float32


def _synthetic(cfg: DataConfig, train: bool, seed: int = 0):
    """Gaussian inputs labelled by a fixed random linear teacher (learnable, so smoke runs can improve).
    ``synthetic_size`` training samples remain after the validation split; the test set has a quarter of that."""
    g = torch.Generator().manual_seed(seed)
    dim = 1
    for s in cfg.shape:
        dim *= s
    values = (cfg.synthetic_size + cfg.val_size) * dim
    if values > MAX_SYNTHETIC_VALUES:
        raise UserError(f"data.synthetic_size + data.val_size: {cfg.synthetic_size + cfg.val_size} samples of shape "
                        f"{list(cfg.shape)} would take {4 * values / 2**30:.1f} GiB (at most "
                        f"{4 * MAX_SYNTHETIC_VALUES / 2**30:.1f} GiB of synthetic data)")
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
        self._epoch, self._taken = -1, 0  # training batches handed to the current epoch's steps
        self._replay: tuple[int | None, int] | None = None  # resuming mid-epoch: (shuffle seed, batches done)
        self._pending_rng: dict | None = None  # ... and the random state to restore before the next batch

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
            verify_files(self.cfg.name, self.root)
            self.setup()

    def prepare_data(self) -> None:
        if self.cfg.name not in ("imagenet", "synthetic"):
            for train in (False, True):
                self._raw(train)  # downloads when missing

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":  # each fit (a calibration pass, then the training) counts its own epochs
            self._epoch, self._taken = -1, 0
        if self._splits is not None:
            return
        c = self.cfg
        if c.name == "imagenet":
            self._splits = self._imagenet()
            return
        (xtr, ytr), (xte, yte) = self._raw(True), self._raw(False)
        self._cache.clear()
        for split, y in (("training", ytr), ("test", yte)):
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise UserError(f"dataset {c.name!r}: {split} labels from {int(y.min())} to {int(y.max())}, expected 0 "
                                f"to {self.num_classes - 1} (a corrupt label file: replace it)")
        if c.val_size >= len(ytr):
            raise UserError(f"data.val_size: expected fewer than the {len(ytr)} training samples, got {c.val_size}")
        n = len(ytr) - c.val_size
        xtr, xval, ytr, yval = xtr[:n], xtr[n:], ytr[:n], ytr[n:]
        xtr, xval, xte = preprocess(c.preprocess, xtr, [xval, xte])
        self._splits = {"train": TensorDataset(xtr, ytr), "val": TensorDataset(xval, yval),
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
        collate = _whole_batch if isinstance(ds, TensorDataset) else None
        common = dict(num_workers=self.cfg.num_workers, collate_fn=collate, persistent_workers=self.cfg.num_workers > 0)
        if not train:
            return DataLoader(ds, batch_size=self.cfg.eval_batch_size, shuffle=False, **common)
        seed, skip = self._replay or (None, 0)
        self._replay = None
        sampler = ResumableBatchSampler(EpochSampler(ds, replay=seed), self._process_batch_size(), False, skip=skip)
        return DataLoader(ds, batch_sampler=sampler, **common)

    def _process_batch_size(self) -> int:
        """``data.batch_size`` is the global batch: with N processes (DDP) each takes batch_size / N."""
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.cfg.batch_size % world:
            raise UserError(f"data.batch_size: expected a multiple of the {world} processes (trainer.devices x "
                            f"trainer.num_nodes), got {self.cfg.batch_size}")
        return self.cfg.batch_size // world

    def calibration_dataloader(self) -> DataLoader:
        """Training images in their stored order, without augmentation (post-training calibration)."""
        assert self._splits is not None
        ds = self._splits["train"]
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=False, num_workers=self.cfg.num_workers,
                          collate_fn=_whole_batch if isinstance(ds, TensorDataset) else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", False) if len(self._splits["val"]) else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    # ------------------------------------------------------------ per training batch, and resuming

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        if self._pending_rng is not None:  # resumed mid-epoch: the random state the interrupted run had here
            set_rng_states(self._pending_rng)
            self._pending_rng = None
        if trainer.current_epoch != self._epoch:
            self._epoch, self._taken = trainer.current_epoch, 0
        self._taken += 1
        if self.cfg.augment == "crop_flip":
            x, y = batch
            batch = crop_flip(x), y
        return batch

    def state_dict(self) -> dict:
        """Saved in every checkpoint: where in the epoch training is, and the random state after the last step."""
        trainer = self.trainer
        mid_epoch = trainer is not None and self._epoch == trainer.current_epoch and \
            0 < self._taken < trainer.num_training_batches
        loader = trainer.train_dataloader if mid_epoch else None
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        return {"rng": rng_states(), "epoch": self._epoch,
                "batches_done": self._taken if mid_epoch else 0, "shuffle_seed": getattr(sampler, "seed", None)}

    def load_state_dict(self, state: dict) -> None:
        if self.trainer is None or self.trainer.state.fn != "fit":  # testing a checkpoint: nothing to resume
            return
        if state["batches_done"]:  # mid-epoch: the same shuffle from the next batch on, and the random state just
            self._replay = (state["shuffle_seed"], state["batches_done"])  # before it (restored at that batch: the
            self._pending_rng = state["rng"]  # loader is made and iterated in between)
            self._epoch, self._taken = state["epoch"], state["batches_done"]
        else:  # at an epoch's end: the next epoch's shuffle is drawn from the restored state, as it was
            set_rng_states(state["rng"])
