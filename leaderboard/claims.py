"""The claims registry: the roadmap's claims R01-R20 and the papers' own table rows, validated on load.

Each claim names its paper, dataset, network, W/A/G bits, how the network was obtained, and a metric:
``top1_err``/``top5_err`` (test error, %), ``top1_drop``/``top5_drop`` (error increase over the same network in
float, points), ``matches_float`` (the low-bit network reproduces the float accuracy) or ``statement`` (qualitative).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from common.errors import UserError
from common.papers import ALL, PAPERS, configs_dir, package

ROOT = Path(__file__).resolve().parent.parent
CLAIMS_FILE = ROOT / "leaderboard" / "claims.yaml"
DATASETS = ("mnist", "pimnist", "cifar10", "svhn", "imagenet")
HOW = ("scratch", "finetune", "post_training")
METRICS = ("top1_err", "top5_err", "top1_drop", "top5_drop", "matches_float", "statement")
REQUIRED = ("id", "kind", "paper", "dataset", "model", "bits", "how", "metric", "value", "baseline", "source", "text",
            "confirmed")
OPTIONAL = ("paper_claim", "note", "reference_baseline")


@dataclass(frozen=True)
class Claim:
    id: str
    kind: str
    paper: str
    dataset: str
    model: str
    bits: dict
    how: str
    metric: str
    value: Optional[float]
    baseline: Optional[float]
    source: str
    text: str
    confirmed: bool
    paper_claim: Optional[str] = None
    note: Optional[str] = None
    # where the paper reports no float run of its own: the float error of the same network elsewhere (its note says
    # where), from which a drop is implied
    reference_baseline: Optional[float] = None

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


def _check(entry: object, i: int) -> Claim:
    if not isinstance(entry, dict):
        raise UserError(f"claims.yaml: claims[{i}]: expected a mapping, got {type(entry).__name__}")
    where = f"claims.yaml: claim {entry.get('id', f'#{i}')!s}"
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key, allowed in (("kind", ("roadmap", "paper")), ("paper", PAPERS), ("dataset", DATASETS), ("how", HOW),
                         ("metric", METRICS)):
        if entry[key] not in allowed:
            raise UserError(f"{where}: {key}: expected one of {', '.join(allowed)}, got {entry[key]!r}")
    bits = entry["bits"]
    if not (isinstance(bits, dict) and set(bits) == {"w", "a", "g"}
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 32 for v in bits.values())):
        raise UserError(f"{where}: bits: expected {{w: N, a: N, g: N}} with integers 1..32, got {bits!r}")
    for key in ("value", "baseline", "reference_baseline"):
        v = entry.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UserError(f"{where}: {key}: expected a number or null, got {v!r}")
    if entry["baseline"] is not None and not 0 <= entry["baseline"] <= 100:
        raise UserError(f"{where}: baseline: expected an error in percent (0..100), got {entry['baseline']}")
    needs_value = entry["metric"] not in ("matches_float", "statement")
    if needs_value != (entry["value"] is not None):
        raise UserError(f"{where}: value: metric {entry['metric']} " + ("needs a number" if needs_value else "takes null"))
    if entry["metric"].endswith("_err") and not 0 <= entry["value"] <= 100:
        raise UserError(f"{where}: value: expected an error in percent (0..100), got {entry['value']}")
    for key in ("id", "model", "source", "text"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise UserError(f"{where}: {key}: expected a non-empty string")
    if not isinstance(entry["confirmed"], bool):
        raise UserError(f"{where}: confirmed: expected true or false")
    if entry["kind"] == "roadmap" and not (entry["id"][:1] == "R" and entry["id"][1:].isdigit()):
        raise UserError(f"{where}: a roadmap claim's id is R01..R20")
    return Claim(**{k: entry.get(k) for k in (*REQUIRED, *OPTIONAL)})


def load_claims(path: Path = CLAIMS_FILE) -> dict[str, Claim]:
    """All claims by id, in file order; any problem raises UserError naming the claim and the key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: claims file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise UserError(f"{path}: expected a mapping with a list 'claims'")
    claims: dict[str, Claim] = {}
    for i, entry in enumerate(data["claims"]):
        claim = _check(entry, i)
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
