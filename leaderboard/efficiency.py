"""The papers' efficiency claims (``leaderboard/efficiency.yaml``: speed-ups and size reductions) judged against what
``python -m benchmarks.engine`` measured (``results/bench/engine.json``), and the engine's measured speed-up of each
shared-setting network. A claim holds when the measured factor reaches ``1 - REL_TOL`` of the claimed one."""
from __future__ import annotations

import fnmatch
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from common.errors import UserError
from common.papers import PAPERS
from common.validate import check_dataclass, key_path, nonempty, rng
from leaderboard.claims import ROOT, entry_path, read_entries
from leaderboard.collect import MAX_RESULT_BYTES

EFFICIENCY_FILE = ROOT / "leaderboard" / "efficiency.yaml"
BENCH = Path("bench") / "engine.json"  # under the results folder
REL_TOL = 0.1
LAYERS = ("binary", "ternary", "fixed")


@dataclass(frozen=True)
class Gemm:
    """Binary GEMM versus torch float32 at the benchmark's shapes matching ``gemm`` (a glob)."""
    gemm: str = field(metadata=nonempty())
    threads: int = field(metadata=rng(lo=1))


@dataclass(frozen=True)
class Network:
    """A whole shared-setting network in the engine versus float torch."""
    network: str = field(metadata=nonempty())
    batch: int = field(metadata=rng(lo=1))
    threads: int = field(metadata=rng(lo=1))


@dataclass(frozen=True)
class Size:
    """The packed file's ``layers`` versus their float32 size, over the configs matching ``size`` (a glob)."""
    size: str = field(metadata=nonempty())
    layers: Literal[LAYERS]


@dataclass(frozen=True)
class EfficiencyClaim:
    id: str = field(metadata=nonempty())
    paper: Literal[PAPERS]
    kind: Literal["speed", "size"]
    value: float = field(metadata=rng(lo=0, lo_open=True))  # the claimed factor
    measure: Union[Gemm, Network, Size]
    text: str = field(metadata=nonempty())
    source: str = field(metadata=nonempty())
    confirmed: bool
    note: Optional[str] = None

    def check(self, path: str) -> None:
        if (self.kind == "size") != isinstance(self.measure, Size):
            raise UserError(f"{key_path(path, 'measure')}: a {self.kind} claim is measured by "
                            + ("size" if self.kind == "size" else "gemm or network"))


def load_efficiency(path: Path = EFFICIENCY_FILE) -> list[EfficiencyClaim]:
    claims = [check_dataclass(EfficiencyClaim, e, entry_path(path, e, i)) for i, e in enumerate(read_entries(path))]
    if len({c.id for c in claims}) != len(claims):
        raise UserError(f"{path}: duplicate claim id")
    return claims


def load_bench(results_dir: Path) -> tuple[Optional[dict], str]:
    """The engine benchmark's measurements, or None and why not."""
    path = Path(results_dir) / BENCH
    if not path.is_file():
        return None, f"no {BENCH} (run python -m benchmarks.engine)"
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            return None, f"{BENCH}: over {MAX_RESULT_BYTES >> 20} MiB"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"{BENCH}: unreadable ({type(e).__name__})"
    if not isinstance(data, dict):
        return None, f"{BENCH}: not a JSON object"
    return data, ""


def _rows(bench: dict, key: str) -> list[dict]:
    rows = bench.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def measure(claim: EfficiencyClaim, bench: Optional[dict]) -> tuple[Optional[float], str]:
    """(the measured factor, what it is), or (None, why there is none)."""
    if bench is None:
        return None, "no benchmark results"
    m = claim.measure
    try:
        if isinstance(m, Gemm):
            got = [float(r["speedup"]) for r in _rows(bench, "gemm")
                   if fnmatch.fnmatchcase(str(r.get("layer")), m.gemm) and r.get("threads") == m.threads]
            if not got:
                return None, f"no GEMM {m.gemm!r} on {m.threads} threads in the benchmark"
            what = f"median of {len(got)} GEMMs ({min(got):.1f}-{max(got):.1f}x)" if len(got) > 1 else "GEMM"
            return statistics.median(got), f"{what} `{m.gemm}`, {m.threads} threads"
        if isinstance(m, Network):
            got = [float(r["speedup"]) for r in _rows(bench, "networks") if r.get("config") == m.network
                   and r.get("batch") == m.batch and r.get("threads") == m.threads]
            if not got:
                return None, f"`{m.network}` not timed at batch {m.batch} on {m.threads} threads"
            return got[0], f"whole network `{m.network}`, batch {m.batch}, {m.threads} threads"
        got = [(float(r["layers"][m.layers]["ratio"]), r["config"]) for r in _rows(bench, "sizes")
               if fnmatch.fnmatchcase(str(r.get("config")), m.size) and m.layers in (r.get("layers") or {})]
        if not got:
            return None, f"no {m.layers} layers of `{m.size}` exported by the engine"
        low = min(got)
        return low[0], (f"{m.layers} layers of {len(got)} networks, smallest ratio (`{low[1]}`; largest "
                        f"{max(got)[0]:.1f}x)" if len(got) > 1 else f"{m.layers} layers of `{low[1]}`")
    except (KeyError, TypeError, ValueError):
        return None, f"{BENCH}: not the benchmark's layout"


def verdict(claim: EfficiencyClaim, measured: Optional[float]) -> str:
    if measured is None:
        return "not measured"
    return "reproduced" if measured >= (1 - REL_TOL) * claim.value else "not reproduced"


def speedups(bench: Optional[dict], batch: int = 100) -> dict[str, float]:
    """Config (``paper/config``) -> the engine's whole-network speed-up over float at ``batch``, most threads."""
    best: dict[str, tuple[int, float]] = {}
    for r in _rows(bench or {}, "networks"):
        try:
            if r["batch"] == batch and r["threads"] >= best.get(r["config"], (0, 0.0))[0]:
                best[r["config"]] = (int(r["threads"]), float(r["speedup"]))
        except (KeyError, TypeError, ValueError):
            continue
    return {k: v for k, (_, v) in best.items()}


def efficiency_view(claims: list[EfficiencyClaim], bench: Optional[dict], why: str) -> list[str]:
    from common.papers import TITLES
    from leaderboard.render import MARK

    out = ["## Efficiency claims: measured on the integer engine", "",
           "Each network runs exported (1-bit binary, 2-bit ternary, integer fixed-point weights; `python -m "
           "papers.<p> export`) in `engine/`, whose predictions equal the simulated network's. Speed: `python -m "
           "benchmarks.engine` on this machine's CPU, engine (XNOR + popcount) against float32 torch, side by side; "
           "size: packed weights and scales against float32. A claim is *reproduced* when the measured factor is at "
           f"least {1 - REL_TOL:.0%} of the claimed one. † marks a claim our spec sheets do not confirm.", ""]
    if bench is None:
        out += [f"Not measured yet: {why}.", ""]
    else:
        cpu = (bench.get("cpu") or {}).get("model", "?") if isinstance(bench.get("cpu"), dict) else "?"
        out += [f"Measured on {cpu}, kernel path {bench.get('isa', '?')}, torch {bench.get('torch', '?')}"
                + (" (a `--quick` run)" if bench.get("quick") else "") + ".", ""]
    out += ["| claim | paper | claimed | measured | verdict | what was measured |", "|---|---|---|---|---|---|"]
    for c in claims:
        got, what = measure(c, bench)
        v = verdict(c, got)
        out.append(f"| {c.id}{'' if c.confirmed else ' †'} {c.text} | {TITLES.get(c.paper, c.paper)} | {c.value:g}× | "
                   f"{'—' if got is None else f'{got:.1f}×'} | {MARK.get(v, '⏳ not measured')} | {what} |")
    out += ["", "Notes: " + " ".join(f"**{c.id}**: {c.note}" for c in claims if c.note), ""]
    return out
