"""The claims registry: the roadmap's claims R01-R20 and the papers' own table rows, validated on load.

Each claim names its paper, dataset, network, W/A/G bits, how the network was obtained, and a metric:
``top1_err``/``top5_err`` (test error, %), ``top1_drop``/``top5_drop`` (error increase over the same network in
float, points), ``matches_float`` (the low-bit network reproduces the float accuracy) or ``statement`` (qualitative).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from common.config import read_yaml
from common.errors import UserError
from common.results import Bits
from common.validate import check_dataclass, key_path, nonempty, rng
from common.papers import ALL, PAPERS, configs_dir, package

ROOT = Path(__file__).resolve().parent.parent
CLAIMS_FILE = ROOT / "leaderboard" / "claims.yaml"
DATASETS = ("mnist", "pimnist", "cifar10", "svhn", "imagenet")
HOW = ("scratch", "finetune", "post_training")
METRICS = ("top1_err", "top5_err", "top1_drop", "top5_drop", "matches_float", "statement")


@dataclass(frozen=True)
class Claim:
    id: str = field(metadata=nonempty())
    kind: Literal["roadmap", "paper"]
    paper: Literal[PAPERS]
    dataset: Literal[DATASETS]
    model: str = field(metadata=nonempty())
    bits: Bits
    how: Literal[HOW]
    metric: Literal[METRICS]
    value: Optional[float]
    baseline: Optional[float] = field(metadata=rng(lo=0, hi=100))  # the paper's float error, percent
    source: str = field(metadata=nonempty())
    text: str = field(metadata=nonempty())
    confirmed: bool
    paper_claim: Optional[str] = None
    note: Optional[str] = None
    # where the paper reports no float run of its own: the float error of the same network elsewhere (its note says
    # where), from which a drop is implied
    reference_baseline: Optional[float] = None

    def check(self, path: str) -> None:
        needs_value = self.metric not in ("matches_float", "statement")
        if needs_value != (self.value is not None):
            raise UserError(f"{key_path(path, 'value')}: metric {self.metric} " + ("needs a number" if needs_value else "takes null"))
        if self.metric.endswith("_err") and not 0 <= self.value <= 100:
            raise UserError(f"{key_path(path, 'value')}: expected an error in percent (0..100), got {self.value}")
        if self.kind == "roadmap" and not (self.id[:1] == "R" and self.id[1:].isdigit()):
            raise UserError(f"{key_path(path, 'id')}: a roadmap claim's id is R01..R20, got {self.id!r}")

    @property
    def top5(self) -> bool:
        return self.metric.startswith("top5")

    @property
    def claimed_drop(self) -> Optional[float]:
        """The drop versus float the claim states or implies (error minus the paper's float error)."""
        if self.metric.endswith("_drop"):
            return self.value
        base = self.baseline if self.baseline is not None else self.reference_baseline
        if self.metric.endswith("_err") and self.value is not None and base is not None:
            return round(self.value - base, 2)
        return None


def read_entries(path: Path) -> list:
    """The ``claims:`` list of a registry file (``claims.yaml``, ``efficiency.yaml``), read as configs are."""
    data = read_yaml(Path(path))
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise UserError(f"{path}: expected a mapping with a list 'claims'")
    return data["claims"]


def entry_path(path: Path, entry: object, i: int) -> str:
    """How an error names a registry entry: the file and the claim's id (or its position)."""
    cid = entry.get("id") if isinstance(entry, dict) else None
    return f"{Path(path).name}: claim {cid}: " if isinstance(cid, str) else f"{Path(path).name}: claims[{i}]: "


def load_claims(path: Path = CLAIMS_FILE) -> dict[str, Claim]:
    """All claims by id, in file order; any problem raises UserError naming the claim and the key."""
    claims: dict[str, Claim] = {}
    for i, entry in enumerate(read_entries(path)):
        claim = check_dataclass(Claim, entry, entry_path(path, entry, i))
        if claim.id in claims:
            raise UserError(f"claims.yaml: claim {claim.id}: duplicate id")
        claims[claim.id] = claim
    roadmap = {f"R{i:02d}" for i in range(1, 21)}
    if missing := sorted(roadmap - set(claims)):
        raise UserError(f"claims.yaml: roadmap claim(s) {', '.join(missing)} missing")
    for c in claims.values():
        if c.paper_claim and c.paper_claim not in claims:
            raise UserError(f"claims.yaml: claim {c.id}: paper_claim {c.paper_claim} is not a claim id")
    return claims


def config_claim_ids() -> dict[str, list[str]]:
    """Claim id -> the configs (``paper/config``) that name it, from every paper's configs."""
    from common.config import list_configs, load_config

    named: dict[str, list[str]] = {}
    for paper in ALL:
        package(paper)  # the paper's own models and post-training methods
        folder = configs_dir(paper)
        for name in list_configs(folder):
            _, cfg = load_config(name, folder)
            for cid in cfg.claims:
                named.setdefault(cid, []).append(f"{paper}/{name}")
    return named


def check_registry() -> dict[str, Claim]:
    """Load the registry and check that every claim id a config names exists."""
    claims = load_claims()
    unknown = {cid: where for cid, where in config_claim_ids().items() if cid not in claims}
    if unknown:
        cid, where = sorted(unknown.items())[0]
        raise UserError(f"config {where[0]}: claim {cid} is not in leaderboard/claims.yaml"
                        + (f" (and {len(unknown) - 1} more unknown ids)" if len(unknown) > 1 else ""))
    return claims


if __name__ == "__main__":
    try:
        claims = check_registry()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    kinds = {k: sum(c.kind == k for c in claims.values()) for k in ("roadmap", "paper")}
    print(f"claims.yaml: {len(claims)} claims ({kinds['roadmap']} roadmap, {kinds['paper']} paper rows), "
          "every config's claim ids present")
