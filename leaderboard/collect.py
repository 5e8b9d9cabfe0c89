"""Result files -> validated runs -> groups by (paper, config) with statistics, baselines, costs and verdicts.

A malformed, partial or unknown-schema result file becomes a ``Skipped`` entry with the reason; it never enters
a mean. Runs whose status is ``diverged`` are counted but never averaged.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from common.errors import UserError
from common.results import check_head, stored_config
from leaderboard.claims import Claim


@dataclass(frozen=True)
class Setting:
    """A shared setting (``common/configs/<name>.yaml``): every method on the same network, data and budget; the
    config names of its runs start with its name."""
    name: str
    title: str        # the table's and plots' title
    recipe: str       # one sentence: data, network, optimizer, budget
    scale_label: str  # how a run of it is named where it meets a paper-scale claim


SETTINGS = {s.name: s for s in (
    Setting("mnist_lenet5", "MNIST, LeNet-5",
            "MNIST, LeNet-5 20-50-500 with batch norm, Adam 1e-3 → 1e-5 over 6 epochs, batch 100, cross entropy "
            "(`common/configs/mnist_lenet5.yaml`)", "MNIST shared setting"),
    Setting("cifar10_vggsmall", "CIFAR-10 (JPEG), VGG-small at 1/4 width",
            "CIFAR-10 as JPEG folders (quality 75: errors run higher than on the lossless set, so compare drops versus "
            "the float network trained here), VGG-small (2×32C3)-MP2-(2×64C3)-MP2-(2×128C3)-MP2-(2×256FC)-10 with batch "
            "norm, crop and flip, Adam 1e-3 → 1e-5 over 15 epochs, batch 100, cross entropy "
            "(`common/configs/cifar10_vggsmall.yaml`)", "CIFAR-10 (JPEG), reduced width and budget"),
)}
SHARED = tuple(SETTINGS)
MAX_RESULT_BYTES = 16 << 20  # a real result file is a few tens of KiB

# The tolerance rule, stated once: |ours - claimed| <= max(ABS_TOL, REL_TOL x |claimed|, 2 sigma), where sigma is
# the larger standard deviation over seeds of our run and of its float baseline (0 with one seed). Drops are compared
# when the claim gives (or implies) one and our run has a float baseline; errors otherwise.
ABS_TOL = 0.2
REL_TOL = 0.1


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class Run:
    path: str
    data: dict

    @property
    def key(self) -> tuple[str, str]:
        return self.data["paper"], self.data["config_name"]


@dataclass
class Group:
    paper: str
    config: str
    runs: list[Run]
    diverged: list[Run] = field(default_factory=list)
    baseline: Optional["Group"] = None
    cost: Optional[dict] = None
    no_cost: Optional[str] = None  # why the cost could not be computed

    @property
    def first(self) -> dict:
        return (self.runs or self.diverged)[0].data

    @property
    def label(self) -> str:
        return f"{self.paper}/{self.config}"

    @property
    def shared(self) -> bool:
        return self.config.startswith(SHARED)

    @property
    def setting(self) -> Optional[str]:
        """The shared setting this group belongs to, or None."""
        return next((s for s in SHARED if self.config.startswith(s)), None)

    @property
    def method(self) -> str:
        """The method, the same across shared settings: paper/config without the setting's name."""
        rest = self.config.removeprefix(self.setting or "").lstrip("_")
        return (f"{self.paper}/{rest}" if rest else self.paper) if self.setting else self.label

    @property
    def scale_label(self) -> str:
        return SETTINGS[self.setting].scale_label if self.setting else self.scale

    @property
    def reduced(self) -> bool:
        """A shared-setting run that addresses a paper-scale claim: judged on drops only, counted apart."""
        return self.setting is not None
    @property
    def scale(self) -> str:
        return self.first["scale"]

    @property
    def bits(self) -> dict:
        return self.first["bits"]

    @property
    def how(self) -> str:
        cfg = self.first["config"]
        if cfg.get("ptq"):
            return "post_training+finetune" if self.config.endswith("_finetuned") else "post_training"
        return "finetune" if cfg.get("init_from") else "scratch"

    @property
    def claims(self) -> list[str]:
        return list(self.first.get("claims") or [])

    def errors(self, top5: bool = False) -> list[float]:
        key = "test_top5_err" if top5 else "test_top1_err"
        return [r.data["metrics"][key] for r in self.runs if isinstance(r.data["metrics"].get(key), (int, float))]

    def mean(self, top5: bool = False) -> Optional[float]:
        e = self.errors(top5)
        return statistics.fmean(e) if e else None

    def std(self, top5: bool = False) -> Optional[float]:
        e = self.errors(top5)
        return statistics.stdev(e) if len(e) > 1 else None

    def drop(self, top5: bool = False) -> Optional[float]:
        if self.baseline is None or self.baseline is self:
            return None
        ours, base = self.mean(top5), self.baseline.mean(top5)
        return None if ours is None or base is None else ours - base

    @property
    def commits(self) -> list[str]:
        return sorted({r.data.get("git_commit", "unknown")[:7] + ("+dirty" if "dirty" in r.data.get("git_commit", "")
                                                                   else "") for r in self.runs + self.diverged})


def _check(path: Path, root: Path) -> Run | Skipped:
    rel = str(path.relative_to(root.parent)) if path.is_relative_to(root.parent) else str(path)
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            return Skipped(rel, f"{path.stat().st_size} bytes (a result file is under {MAX_RESULT_BYTES})")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Skipped(rel, f"not readable JSON ({type(e).__name__}: {str(e)[:80]})")
    except RecursionError:
        return Skipped(rel, "not readable JSON (nested too deeply)")
    if not isinstance(data, dict):
        return Skipped(rel, "not a JSON object")
    try:
        check_head(data, "")
    except UserError as err:
        return Skipped(rel, str(err))
    if path.parent.name != data["config_name"] or path.parent.parent.name != data["paper"] \
            or path.name != f"seed{data['seed']}.json":
        return Skipped(rel, f"path does not match its content ({data['paper']}/{data['config_name']}/seed{data['seed']})")
    return Run(rel, data)


def load_runs(results_dir: Path) -> tuple[list[Run], list[Skipped]]:
    runs, skipped = [], []
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        if path.parent.parent.name == "bench":
            continue
        item = _check(path, Path(results_dir))
        (runs if isinstance(item, Run) else skipped).append(item)
    return runs, skipped


def _cost(group: Group) -> tuple[Optional[dict], Optional[str]]:
    """Parameter memory (bits) and BOPs of the group's network, rebuilt from its stored config; or None and why not
    (a stored config that today's code no longer accepts: the leaderboard says so)."""
    from common.cost import inference_cost
    from common.data import DATASETS
    from common.module import Classifier
    from common.papers import package

    try:
        package(group.paper)  # the paper's own models and post-training methods
        cfg = stored_config(group.first["config"])
    except (ModuleNotFoundError, UserError) as e:
        return None, f"its stored config no longer builds ({str(e)[:160]})"
    info = DATASETS[cfg.data.name]
    model = Classifier(cfg.to_dict(), info.shape, info.num_classes).model
    return {"param_bits": group.first.get("param_bits"), **inference_cost(model, info.shape)}, None


def group_runs(runs: list[Run], with_cost: bool = True) -> dict[tuple[str, str], Group]:
    groups: dict[tuple[str, str], Group] = {}
    for run in sorted(runs, key=lambda r: (r.key, r.data["seed"])):
        g = groups.setdefault(run.key, Group(*run.key, runs=[]))
        (g.runs if run.data["status"] == "ok" else g.diverged).append(run)
    for g in groups.values():
        ref = (g.first.get("baseline") or {}).get("config")
        if ref:
            owner, _, name = ref.rpartition("/")
            g.baseline = groups.get((owner or g.paper, name))
        if with_cost:
            g.cost, g.no_cost = _cost(g)
    return groups


@dataclass
class Verdict:
    claim: Claim
    group: Optional[Group]
    kind: str          # reproduced | not reproduced | proxy only | qualitative | not run
    ours: Optional[float] = None      # our number compared (error or drop)
    claimed: Optional[float] = None   # the claim's number compared
    compared: str = ""                # "error" | "drop"
    tolerance: Optional[float] = None

    @property
    def diff(self) -> Optional[float]:
        return None if self.ours is None or self.claimed is None else self.ours - self.claimed


def _sigma(group: Group, top5: bool) -> float:
    return max([s for s in (group.std(top5), group.baseline.std(top5) if group.baseline else None) if s] or [0.0])


def judge(claim: Claim, group: Group, proxy: bool = False) -> Verdict:
    top5 = claim.top5
    drop = group.drop(top5)
    if not group.runs:
        return Verdict(claim, group, "not run")
    if group.reduced and not proxy and claim.metric not in ("matches_float", "statement") and \
            (claim.claimed_drop is None or drop is None):  # another copy, width and budget: never its absolute error
        return Verdict(claim, group, "qualitative", ours=drop, compared="drop")
    if claim.metric == "statement":
        return Verdict(claim, group, "qualitative", ours=drop if drop is not None else group.mean(top5), compared="drop"
                       if drop is not None else "error")
    if claim.metric == "matches_float":
        ours, claimed, compared = drop, 0.0, "drop"
    elif claim.claimed_drop is not None and drop is not None:
        ours, claimed, compared = drop, claim.claimed_drop, "drop"
    else:
        ours, claimed, compared = group.mean(top5), claim.value, "error"
    if ours is None or claimed is None or (compared == "error" and claim.metric.endswith("_drop")):
        return Verdict(claim, group, "proxy only" if proxy else "qualitative", ours=ours, compared=compared)
    tol = max(ABS_TOL, REL_TOL * abs(claimed), 2 * _sigma(group, top5))
    if proxy:
        return Verdict(claim, group, "proxy only", ours, claimed, compared, tol)
    ok = ours <= claimed + tol if claim.metric == "matches_float" else abs(ours - claimed) <= tol
    return Verdict(claim, group, "reproduced" if ok else "not reproduced", ours, claimed, compared, tol)


def fits(claim: Claim, group: Group) -> bool:
    """Whether the group was obtained the claim's way: a post-training config that is also fine-tuned names its
    claims in both its results, and a claim is about the fine-tuned network or about the other."""
    how = {"finetune": ("finetune", "post_training+finetune"), "post_training": ("post_training",),
           "scratch": ("scratch",)}[claim.how]
    return group.how in how


def claim_groups(claim: Claim, groups: dict) -> list[Group]:
    """The groups whose config names the claim and which were obtained the claim's way."""
    return [g for g in groups.values() if claim.id in g.claims and fits(claim, g)]


def proxies(claim: Claim, groups: dict) -> list[Group]:
    """CPU-scale runs of the claim's paper with the claim's W/A/G bits (and, if any, its way of training)."""
    same = [g for g in groups.values() if g.paper == claim.paper and not g.shared and g.scale == "cpu"
            and g.bits == asdict(claim.bits) and g.runs]
    how = [g for g in same if g.how.startswith(claim.how)]
    return sorted(how or same, key=lambda g: g.config)
