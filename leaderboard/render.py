"""Groups and verdicts -> LEADERBOARD.md (deterministic: sorted everywhere, no timestamps)."""
from __future__ import annotations

from collections import Counter
from typing import Optional

from common.papers import PAPERS, TITLES
from leaderboard.claims import Claim
from leaderboard.collect import (ABS_TOL, REL_TOL, SETTINGS, Group, Skipped, Verdict, claim_groups, fits, judge,
                                 proxies)

MARK = {"reproduced": "✅ reproduced", "not reproduced": "❌ not reproduced", "proxy only": "🔶 proxy only",
        "qualitative": "📝 qualitative", "not run": "⏳ not run"}


def num(x: Optional[float], signed: bool = False, digits: int = 2) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def err_cell(g: Group, top5: bool = False) -> str:
    m, s = g.mean(top5), g.std(top5)
    if m is None:
        return "diverged" if g.diverged else "—"
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"


def bits_cell(bits: dict) -> str:
    return "/".join("f" if bits[k] == 32 else str(bits[k]) for k in ("w", "a", "g"))


def n_cell(g: Group) -> str:
    return str(len(g.runs)) + (f" (+{len(g.diverged)} diverged)" if g.diverged else "")


def mem_cell(g: Group) -> str:
    bits = (g.cost or {}).get("param_bits") or g.first.get("param_bits")
    return "—" if not bits else f"{bits / 8 / 1024:,.1f}"


def bops_cell(g: Group) -> str:
    bops = (g.cost or {}).get("bops")
    return "—" if not bops else f"{bops / 1e6:,.1f}"


def claimed_cell(c: Claim) -> str:
    if c.metric in ("matches_float", "statement"):
        return "= float" if c.metric == "matches_float" else "qualitative"
    unit = " (drop)" if c.metric.endswith("_drop") else ""
    top = "top-5 " if c.top5 else ""
    mark = "" if c.confirmed else " †"
    base = (f" (float {c.baseline:.2f})" if c.baseline is not None else
            f" (reference float {c.reference_baseline:.2f} ‡)" if c.reference_baseline is not None else "")
    return f"{top}{c.value:.2f}{unit}" + base + mark


def verdict_cells(v: Verdict) -> tuple[str, str]:
    if v.diff is None or v.kind == "proxy only":  # a proxy's drop is shown, never diffed against the claim
        return "—", MARK[v.kind]
    return f"{v.diff:+.2f} ({v.compared}, tol {v.tolerance:.2f})", MARK[v.kind]


def roadmap_view(claims: dict[str, Claim], groups: dict) -> list[str]:
    out = ["## The roadmap's claims (R01–R20)", "",
           "Each claim of the 2016 roadmap (`../shared/roadmap/claims.md`), with the runs that address it: the paper-scale "
           "config if it was run; a shared-setting run on the claim's own dataset at reduced width and budget (judged "
           "on its drop versus the float network of the same setting only, never on its absolute error, and counted "
           "apart from paper-scale reproductions); and the CPU-scale proxies of the same method and bits on MNIST (whose "
           "drop versus their own float network is shown for comparison, never as a reproduction).", "",
           "| id | paper | claim | claimed | our run | scale | n | error % | float % | drop | Δ vs claim | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in (c for c in claims.values() if c.kind == "roadmap"):
        direct = sorted((g for g in claim_groups(c, groups) if g.runs), key=lambda g: (g.reduced, g.label))
        rows = [(g, judge(c, g)) for g in direct] + [(g, judge(c, g, proxy=True)) for g in proxies(c, groups)
                                                     if not any(not d.reduced for d in direct)]
        if not rows:
            out.append(f"| {c.id} | `{c.paper}` | {c.text} | {claimed_cell(c)} | — | — | — | — | — | — | — | {MARK['not run']} |")
            continue
        for i, (g, v) in enumerate(rows):
            head = f"{c.id} | `{c.paper}` | {c.text} | {claimed_cell(c)}" if i == 0 else " | | | "
            diff, verdict = verdict_cells(v)
            top5 = c.top5 and v.kind != "proxy only"  # proxies (10 classes) are compared on top-1
            out.append(f"| {head} | `{g.config}` | {g.scale_label} | {n_cell(g)} | {err_cell(g, top5)} | "
                       f"{err_cell(g.baseline, top5) if g.baseline else '—'} | {num(g.drop(top5), True)} | {diff} | {verdict} |")
    notes = [f"- **{c.id}**: {c.note}" for c in claims.values() if c.kind == "roadmap" and c.note]
    return out + ([""] + ["Where the roadmap and the papers disagree, or a claim needs reading:", ""] + notes if notes else [])


def paper_view(claims: dict[str, Claim], groups: dict) -> list[str]:
    out = ["## Per paper", "",
           "Every result group of each paper (mean ± std over seeds), its float baseline trained by the same recipe, the "
           "drop, and the paper's own claim for that row. Memory = parameter storage in KiB at the stored bits; "
           "BOPs = bit-operations per inference (MACs × weight bits × input bits, in millions).", ""]
    for paper in PAPERS:
        mine = sorted((g for g in groups.values() if g.paper == paper and not g.shared), key=lambda g: g.config)
        named = {cid for g in mine for cid in g.claims}
        unrun = [c for c in claims.values() if c.paper == paper and c.kind == "paper" and c.id not in named]
        out += [f"### {TITLES[paper]} — [`papers.{paper}`](papers/{paper}/README.md)", ""]
        if mine:
            out += ["| config | scale | W/A/G | n | error % | float % | drop | claim | claimed | Δ vs claim | verdict | memory KiB | MBOPs | commit |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for g in mine:
                refs = [claims[cid] for cid in g.claims if cid in claims and fits(claims[cid], g)] or [None]
                for i, c in enumerate(refs):
                    v = judge(c, g) if c else None
                    diff, verdict = verdict_cells(v) if v else ("—", "—")
                    top5 = c.top5 if c else False
                    lead = (f"`{g.config}` | {g.scale} | {bits_cell(g.bits)} | {n_cell(g)} | {err_cell(g, top5)} | "
                            f"{err_cell(g.baseline, top5) if g.baseline and g.baseline is not g else '—'} | "
                            f"{num(g.drop(top5), True)}") if i == 0 else " | | | | | | "
                    tail = f"{mem_cell(g)} | {bops_cell(g)} | {', '.join(g.commits)}" if i == 0 else " | | "
                    out.append(f"| {lead} | {c.id if c else '—'} | {claimed_cell(c) if c else '—'} | {diff} | {verdict} | {tail} |")
            out.append("")
        if unrun:
            out += [f"Not run ({len(unrun)} paper-table claims, paper scale: a GPU run of the config that names them): "
                    + ", ".join(f"{c.id} ({claimed_cell(c)})" for c in unrun), ""]
    return out


def shared_view(groups: dict, setting: str, speed: dict[str, float] | None = None) -> list[str]:
    spec = SETTINGS[setting]
    rows = sorted((g for g in groups.values() if g.setting == setting and g.runs), key=lambda g: (g.mean(), g.label))
    if not rows:
        return []
    base = groups.get(("float", setting))
    out = [f"## Every method on the same network, data and budget: {spec.title}", "",
           f"{spec.recipe}; each method adds only its own quantizers (and, for binary weights, its Glorot-scaled learning "
           "rate); post-training methods quantize the float run of the same seed. Sorted by error.", "",
           "| # | method | config | how | W/A/G | n | error % | drop vs float | memory KiB | × smaller | MBOPs | × fewer "
           "| engine × faster |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ref_mem = (base.cost or {}).get("param_bits") if base and base.cost else None
    ref_bops = (base.cost or {}).get("bops") if base and base.cost else None
    for i, g in enumerate(rows, 1):
        mem, bops = (g.cost or {}).get("param_bits"), (g.cost or {}).get("bops")
        out.append(f"| {i} | {TITLES.get(g.paper, g.paper)} | `{g.label}` | {g.how.replace('_', '-')} | {bits_cell(g.bits)} | "
                   f"{n_cell(g)} | {err_cell(g)} | {num(g.drop(), True)} | {mem_cell(g)} | "
                   f"{num(ref_mem / mem, digits=1) if ref_mem and mem else '—'} | {bops_cell(g)} | "
                   f"{num(ref_bops / bops, digits=1) if ref_bops and bops else '—'} | "
                   f"{num((speed or {}).get(g.label), digits=2)} |")
    prefix = "shared" if setting == "mnist_lenet5" else f"shared_{setting}"
    out += ["", "*engine × faster*: the whole network run exported in the integer engine against the same network in "
                "float32 torch, batch 100, measured by `python -m benchmarks.engine` (see the efficiency claims); — "
                "where the engine does not run the method yet or it was not timed.",
            "", f"![error versus weight bits](leaderboard/plots/{prefix}_weight_bits.png) "
                f"![error versus activation bits](leaderboard/plots/{prefix}_activation_bits.png)", "",
            f"![error versus model size and bit-operations, Pareto front](leaderboard/plots/{prefix}_pareto.png)", "",
            f"![training curves](leaderboard/plots/{prefix}_curves.png)", ""]
    return out


def rank_view(groups: dict) -> list[str]:
    """Each method's rank in every shared setting it ran in (by mean error; 1 = lowest)."""
    ranks: dict[str, dict[str, tuple[int, float]]] = {}
    for setting in SETTINGS:
        rows = sorted((g for g in groups.values() if g.setting == setting and g.runs), key=lambda g: (g.mean(), g.label))
        for i, g in enumerate(rows, 1):
            ranks.setdefault(g.method, {})[setting] = (i, g.mean())
    both = {m: r for m, r in ranks.items() if len(r) == len(SETTINGS)}
    if not both:
        return []
    names = list(SETTINGS)
    out = ["## Rank of each method across the shared settings", "",
           "Where a method stands among all methods of each setting (1 = lowest test error), and the move from the "
           f"first to the second: a method whose rank moves far is one that {SETTINGS[names[0]].title} does not "
           "separate from the rest.", "",
           "| method | " + " | ".join(f"{SETTINGS[n].title}: rank (error %)" for n in names) + " | rank change |",
           "|---|" + "---|" * len(names) + "---|"]
    for method, r in sorted(both.items(), key=lambda kv: (kv[1][names[-1]][0], kv[0])):
        change = r[names[0]][0] - r[names[-1]][0]
        out.append(f"| `{method}` | " + " | ".join(f"{r[n][0]} ({r[n][1]:.2f})" for n in names)
                   + f" | {'+' if change > 0 else ''}{change if change else '='} |")
    return out + [""]


def provenance(groups: dict, skipped: list[Skipped]) -> list[str]:
    runs = [r.data for g in groups.values() for r in g.runs + g.diverged]
    out = ["## Provenance", "",
           f"{len(runs)} result files in {len(groups)} groups. Every row's commit is in its table; the result files "
           "(`results/<paper>/<config>/seed<N>.json`) hold the full config, its hash, versions and the per-epoch curve.", ""]
    for key, title in (("torch", "torch"), ("device", "hardware"), ("scale", "scale")):
        counts = Counter(str(r.get(key)) for r in runs)
        out.append(f"- {title}: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())))
    dirty = sum("dirty" in str(r.get("git_commit")) for r in runs)
    out.append(f"- commits: {len({r.get('git_commit') for r in runs})} distinct; {dirty} runs from a checkout with "
               "uncommitted changes (`+dirty`)")
    out += [f"- no memory and BOPs for `{g.label}`: {g.no_cost}" for g in groups.values() if g.no_cost]
    out += ["", "## Skipped result files", ""]
    out += [f"- `{s.path}`: {s.reason}" for s in skipped] or ["None: every result file under `results/` was read."]
    return out


def render(claims: dict[str, Claim], groups: dict, skipped: list[Skipped], bench: dict | None = None,
           bench_why: str = "no benchmark results") -> str:
    from leaderboard.efficiency import efficiency_view, load_efficiency, speedups

    pairs = [(g.reduced, judge(c, g).kind) for c in claims.values() for g in claim_groups(c, groups) if g.runs]
    verdicts, reduced = Counter(k for r, k in pairs if not r), Counter(k for r, k in pairs if r)
    head = ["# Leaderboard", "",
            "Generated by `python -m leaderboard` from `leaderboard/claims.yaml` and every result file under `results/`; "
            "do not edit by hand. Errors are test top-1 error in percent at the best-validation epoch (top-5 where the "
            "claim is top-5); ± is the standard deviation over seeds (n of them); drop = our error minus our float "
            "network's, trained by the same recipe.", "",
            f"**Verdicts.** A claim is *reproduced* when |ours − claimed| ≤ max({ABS_TOL} points, {REL_TOL:.0%} of the "
            "claimed value, 2σ), σ being the larger standard deviation over seeds of our run and of its float baseline. "
            "We compare drops when the claim states or implies one (its error minus the paper's float error) and our run "
            "has a float baseline, errors otherwise; a \"reproduces float accuracy\" claim needs drop ≤ the tolerance. "
            "*Reduced scale*: a shared-setting run on the claim's own dataset at reduced width and budget, judged on "
            "its drop only and counted apart. *Proxy only*: a CPU-scale run of the same method and bits on another "
            "dataset or network, shown for its drop and never counted as a reproduction. *Qualitative*: the claim has no single number. *Not run*: paper-scale "
            "configs exist but need a GPU. † marks a claimed number our sources could not confirm (see the claim's "
            "note in `leaderboard/claims.yaml`); ‡ a float error the paper does not report, from the same network "
            "elsewhere (the claim's note says where).", "",
            f"Claims: {len(claims)} ({sum(c.kind == 'roadmap' for c in claims.values())} roadmap, "
            f"{sum(c.kind == 'paper' for c in claims.values())} paper rows). Claim-run pairs: "
            + ", ".join(f"{MARK[k]} {verdicts[k]}" for k in MARK if k != "not run" and verdicts[k]) + "."
            + (" At reduced scale (shared settings, drops only): "
               + ", ".join(f"{MARK[k]} {reduced[k]}" for k in MARK if reduced[k]) + "." if reduced else ""), ""]
    speed = speedups(bench)
    shared = [line for setting in SETTINGS for line in shared_view(groups, setting, speed)]
    body = head + shared + rank_view(groups) + roadmap_view(claims, groups) + [""] \
        + efficiency_view(load_efficiency(), bench, bench_why) + paper_view(claims, groups) + provenance(groups, skipped)
    return "\n".join(body).rstrip() + "\n"
