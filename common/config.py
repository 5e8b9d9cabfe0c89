"""YAML configs -> one typed, validated ``Config``.

- ``extends: other.yaml`` or ``extends: [a, b]`` (paths relative to the file, or config names in the same
  folder) deep-merges the file over its bases, in order; lists are replaced, not merged.
- ``--set key.path=value`` overrides (``quant.rules.0.weight.name=sign``); values are parsed as YAML.
- Validation is strict: an unknown key, a wrong type or a value out of range raises ``UserError`` with the key
  path and what was expected. Model and quantizer arguments are checked against their registered signatures.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from common.errors import UserError
from common.validate import check_dataclass, rng


@dataclass
class DataConfig:
    name: Literal["mnist", "fashion_mnist", "cifar10", "cifar10_jpeg", "svhn", "imagenet", "synthetic"] = "mnist"
    batch_size: int = field(default=100, metadata=rng(lo=1))
    eval_batch_size: int = field(default=1000, metadata=rng(lo=1))
    val_size: int = field(default=10000, metadata=rng(lo=0, hi=10_000_000))
    preprocess: Literal["none", "center", "pm1", "standardize", "gcn_zca"] = "none"
    augment: Literal["none", "crop_flip"] = "none"  # crop_flip: pad 4, random crop, random horizontal flip
    num_workers: int = field(default=0, metadata=rng(lo=0))
    shape: list[int] = field(default_factory=lambda: [1, 28, 28], metadata=rng(lo=1))  # synthetic only
    num_classes: int = field(default=10, metadata=rng(lo=2))  # synthetic only
    synthetic_size: int = field(default=512, metadata=rng(lo=1, hi=10_000_000))  # synthetic only: training samples


@dataclass
class QuantRule:
    layers: Union[str, list[str]] = "all"
    weight: Optional[dict] = None
    input: Optional[dict] = None
    grad: Optional[dict] = None
    clip: Optional[float] = field(default=None, metadata=rng(lo=0, lo_open=True))
    init_range: Optional[float] = field(default=None, metadata=rng(lo=0, lo_open=True))
    update: Optional[dict] = None  # quantizer of the stored weight and bias after each step (no master copy)


@dataclass
class QuantConfig:
    rules: list[QuantRule] = field(default_factory=list)
    # range initialisation: train this many epochs with every quantizer observing but not quantizing, then restart
    # from the initial parameters keeping the quantizers' state (Courbariaux et al. 2015's range-init epochs)
    calibrate_epochs: int = field(default=0, metadata=rng(lo=0))


@dataclass
class OptimConfig:
    name: Literal["adam", "sgd", "shift_adamax"] = "adam"
    lr_start: float = field(default=1e-3, metadata=rng(lo=0, lo_open=True))
    lr_end: Optional[float] = field(default=None, metadata=rng(lo=0, lo_open=True))  # decay per epoch to lr_end:
    lr_decay: Literal["exponential", "linear"] = "exponential"  # ... geometric, or linear (then constant)
    lr_decay_epochs: Optional[int] = field(default=None, metadata=rng(lo=1))  # ... over N epochs (max_epochs)
    step_every: Optional[int] = field(default=None, metadata=rng(lo=1))  # or: x step_gamma every N epochs
    step_gamma: float = field(default=0.5, metadata=rng(lo=0, lo_open=True))
    lr_milestones: Optional[list[int]] = field(default=None, metadata=rng(lo=1))  # or: piecewise constant,
    lr_factors: Optional[list[float]] = field(default=None, metadata=rng(lo=0, lo_open=True))  # lr_start x factor
    momentum: float = field(default=0.0, metadata=rng(lo=0, hi=1, hi_open=True))
    momentum_end: Optional[float] = field(default=None, metadata=rng(lo=0, hi=1, hi_open=True))  # linear ramp
    momentum_epochs: Optional[int] = field(default=None, metadata=rng(lo=1))  # ... to momentum_end over N epochs
    max_norm: Optional[float] = field(default=None, metadata=rng(lo=0, lo_open=True))  # per-unit weight norm cap
    train_layers: Union[str, list[str]] = "all"  # Linear/Conv layers updated (a selector); the others are frozen
    nesterov: bool = False
    weight_decay: float = field(default=0.0, metadata=rng(lo=0))
    eps: float = field(default=1e-8, metadata=rng(lo=0, lo_open=True))  # Adam's epsilon
    glorot_lr_scale: bool = False  # per-layer lr x 1/sqrt(1.5/(fan_in+fan_out)) for quantized weights
    glorot_bias: bool = False  # ... and for their biases (BNN Torch7)
    glorot_round_pow2: bool = False  # round that scale to a power of two (BNN Torch7 CIFAR-10/SVHN)

    def check(self, path: str) -> None:
        """The rules between fields (called by ``check_dataclass``)."""
        if sum(x is not None for x in (self.lr_end, self.step_every, self.lr_milestones)) > 1:
            raise UserError("optim: expected one schedule at a time (lr_end, step_every or lr_milestones)")
        if (self.lr_milestones is None) != (self.lr_factors is None) or (
                self.lr_milestones is not None and len(self.lr_milestones) != len(self.lr_factors)):
            raise UserError("optim.lr_factors: expected one factor per entry of optim.lr_milestones")
        if self.lr_milestones is not None and self.lr_milestones != sorted(self.lr_milestones):
            raise UserError(f"optim.lr_milestones: expected increasing epochs, got {self.lr_milestones}")
        if (self.momentum_end is None) != (self.momentum_epochs is None):
            raise UserError("optim.momentum_epochs: expected together with optim.momentum_end (a linear ramp)")
        if self.lr_end is not None and self.lr_end > self.lr_start:
            raise UserError(f"optim.lr_end: expected a value <= optim.lr_start ({self.lr_start}), got {self.lr_end}")


@dataclass
class TrainerConfig:
    max_epochs: int = field(default=10, metadata=rng(lo=1))
    accelerator: str = "auto"
    devices: Union[int, str] = 1
    num_nodes: int = field(default=1, metadata=rng(lo=1))
    strategy: str = "auto"
    precision: str = "32-true"
    limit_train_batches: Optional[Union[int, float]] = field(default=None, metadata=rng(lo=0, lo_open=True))
    limit_val_batches: Optional[Union[int, float]] = field(default=None, metadata=rng(lo=0))
    limit_test_batches: Optional[Union[int, float]] = field(default=None, metadata=rng(lo=0, lo_open=True))
    deterministic: bool = True
    log_every_n_steps: int = field(default=50, metadata=rng(lo=1))
    num_threads: Optional[int] = field(default=None, metadata=rng(lo=1))


@dataclass
class Config:
    description: str = ""
    claims: list[str] = field(default_factory=list)
    scale: Literal["paper", "cpu"] = "cpu"
    baseline: Optional[str] = None
    seed: int = field(default=1, metadata=rng(lo=0, hi=2**32 - 1))  # (what torch and NumPy seed with)
    init_from: Optional[str] = None  # fine-tune from: a .ckpt, a result .json or a config name (common.checkpoint)
    ptq: Optional[dict] = None  # post-training method {name: ..., **args} for quantize/finetune (common.ptq)
    ptq_batches: int = field(default=10, metadata=rng(lo=1))  # calibration batches it may look at
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"name": "mlp"})
    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: Literal["cross_entropy", "squared_hinge"] = "cross_entropy"
    select: Literal["best_val", "last"] = "best_val"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config (first 16 hex digits)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- YAML loading

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A YAML mapping, refusing a key given twice (which YAML would silently resolve to the last value)."""
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
MAX_VALUES = 100_000  # values in one config after its aliases are expanded (a real one has a few hundred)


def _count_values(data: Any, where: str) -> None:
    """Refuse a document whose aliases expand to more than ``MAX_VALUES`` values (an alias bomb), before any copy."""
    stack, count = [data], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where}: more than {MAX_VALUES:,} values once its aliases are expanded (not a config)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_yaml(text: str, where: str) -> Any:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply (not a config)") from None
    _count_values(data, where)
    return data


def read_yaml(path: Path) -> Any:
    """A YAML file's content, the one way the suite reads YAML (configs and the claims registries): UTF-8, a key
    given twice refused, aliases bounded; any problem is one UserError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}): expected a UTF-8 YAML file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    return parse_yaml(text, str(path))


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        raise UserError(f"{path}: 'extends' cycle: {' -> '.join(p.name for p in (*chain, path))}")
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: extends: expected a config name or a list of them, got {bases!r}")
    merged: dict = {}
    for base in bases:  # later bases override earlier ones; the file overrides them all
        base_path = path.parent / (base if base.endswith((".yaml", ".yml")) else base + ".yaml")
        merged = deep_merge(merged, _read(base_path, (*chain, path)))
    return deep_merge(merged, data)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; list items are addressed by index."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected key.path=value")
    value = parse_yaml(raw, f"--set {key}") if raw != "" else ""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"--set {key}: {where}: expected a list index below {len(node)}")
            part = int(part)
        elif not isinstance(node, dict):
            raise UserError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


# ---------------------------------------------------------------- validation

def validate(data: dict) -> Config:
    """Typed, checked config from a merged dict (registry arguments included)."""
    from common.models import check_model_spec
    from common.quant import check_quantizer_spec

    cfg = check_dataclass(Config, data)
    cfg.model = check_model_spec(cfg.model, "model")
    for key, value in cfg.model.items():  # quantizers given as model arguments (act: {name: sign, ...})
        if isinstance(value, dict) and "name" in value:
            cfg.model[key] = check_quantizer_spec(value, f"model.{key}")
    for i, rule in enumerate(cfg.quant.rules):
        for kind in ("weight", "input", "grad", "update"):
            spec = getattr(rule, kind)
            if spec is not None:
                setattr(rule, kind, check_quantizer_spec(spec, f"quant.rules[{i}].{kind}"))
    if cfg.ptq is not None:
        from common.ptq import check_ptq_spec

        cfg.ptq = check_ptq_spec(cfg.ptq, "ptq")
    return cfg


def find_config(name_or_path: str, configs_dir: Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    candidate = configs_dir / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = ", ".join(list_configs(configs_dir)) or "none"
        raise UserError(f"--config {name_or_path!r}: no such config (available: {names})")
    return candidate


def list_configs(configs_dir: Path) -> dict[str, str]:
    """Config name -> one-line description, for ``--help`` (files starting with '_' are bases)."""
    out = {}
    for p in sorted(configs_dir.glob("*.yaml")):
        if p.name.startswith("_"):
            continue
        try:
            desc = (_read(p).get("description") or "").strip().splitlines()[0]
        except (UserError, IndexError):
            desc = ""
        out[p.stem] = desc
    return out


def load_config(name_or_path: str, configs_dir: Path, overrides: list[str] = (), seed: int | None = None) -> tuple[str, Config]:
    """Resolve a config by name (in ``configs_dir``) or path, apply overrides and seed, validate."""
    path = find_config(name_or_path, configs_dir)
    data = _read(path)
    for assignment in overrides:
        apply_override(data, assignment)
    if seed is not None:
        data["seed"] = seed
    return path.stem, validate(data)
