"""The leaderboard: claims registry validation, robustness to bad result files, verdicts, costs, determinism, the
sweep's up-to-date check, and the committed LEADERBOARD.md being what the committed results give."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from torch import nn

from common.config import load_config
from common.errors import UserError
from leaderboard.claims import CLAIMS_FILE, Claim, check_registry, load_claims
from leaderboard.collect import ABS_TOL, Group, Run, group_runs, judge, load_runs
from leaderboard.render import render

ROOT = Path(__file__).resolve().parent.parent
GOOD = ROOT / "results" / "bnn" / "mnist_cpu" / "seed1.json"
BASE = ROOT / "results" / "bnn" / "mnist_cpu_float" / "seed1.json"


def claim(**kw) -> Claim:
    base = dict(id="X-1", kind="paper", paper="bnn", dataset="mnist", model="MLP", bits={"w": 1, "a": 1, "g": 32},
                how="scratch", metric="top1_err", value=1.4, baseline=1.0, source="Table 1", text="t", confirmed=True)
    return Claim(**{**base, **kw})


def group(errors, paper="bnn", config="c", baseline=None, bits=None) -> Group:
    runs = [Run(f"{config}/seed{i}.json", {"paper": paper, "config_name": config, "seed": i, "status": "ok",
                                           "scale": "cpu", "bits": bits or {"w": 1, "a": 1, "g": 32},
                                           "metrics": {"test_top1_err": e}, "config": {}, "claims": ["X-1"]})
            for i, e in enumerate(errors, 1)]
    return Group(paper, config, runs, baseline=baseline)


# --- the registry -----------------------------------------------------------------------------------------------

def test_registry_loads_and_every_config_claim_exists():
    claims = check_registry()
    assert {f"R{i:02d}" for i in range(1, 21)} <= set(claims)
    assert all(c.kind == "roadmap" for c in claims.values() if c.id.startswith("R") and c.id[1:].isdigit())


@pytest.mark.parametrize("change, message", [
    ({"metric": "accuracy"}, "metric: expected one of"),
    ({"bits": {"w": 0, "a": 32, "g": 32}}, "bits.w: expected a value in 1..32"),
    ({"value": None}, "needs a number"),
    ({"value": 140.0}, "error in percent"),
    ({"paper": "nope"}, "paper: expected one of"),
    ({"confirmed": "yes"}, "confirmed"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"text": "  "}, "text: expected a non-empty string"),
    ({"baseline": 101}, "baseline: expected a value in 0..100"),
])
def test_registry_rejects_a_bad_entry_naming_claim_and_key(tmp_path, change, message):
    data = yaml.safe_load(CLAIMS_FILE.read_text())
    entry = next(e for e in data["claims"] if e["kind"] == "paper" and e["metric"] == "top1_err")
    entry.update(change)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_claims(path)
    assert entry["id"] in str(err.value)


def test_registry_names_a_missing_key(tmp_path):
    data = yaml.safe_load(CLAIMS_FILE.read_text())
    del data["claims"][0]["source"]
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=f"claim {data['claims'][0]['id']}: source: missing required key"):
        load_claims(tmp_path / "claims.yaml")


def test_registry_rejects_duplicates_and_missing_roadmap_claims(tmp_path):
    data = yaml.safe_load(CLAIMS_FILE.read_text())
    dup = copy.deepcopy(data)
    dup["claims"].append(copy.deepcopy(dup["claims"][-1]))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(dup))
    with pytest.raises(UserError, match="duplicate id"):
        load_claims(tmp_path / "a.yaml")
    data["claims"] = [e for e in data["claims"] if e["id"] != "R07"]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="R07 missing"):
        load_claims(tmp_path / "b.yaml")


# --- result files -----------------------------------------------------------------------------------------------

def test_bad_result_files_are_skipped_with_a_reason_and_never_averaged(tmp_path):
    good = json.loads(GOOD.read_text())
    folder = tmp_path / "results" / "bnn" / "mnist_cpu"
    folder.mkdir(parents=True)
    (folder / "seed1.json").write_text(json.dumps(good))
    (folder / "seed2.json").write_text(json.dumps({**good, "seed": 2})[:300])  # truncated
    (folder / "seed3.json").write_text(json.dumps({**good, "seed": 3, "schema": 99}))
    (folder / "seed4.json").write_text(json.dumps({k: v for k, v in {**good, "seed": 4}.items() if k != "metrics"}))
    (folder / "seed5.json").write_text(json.dumps({**good, "seed": 5, "metrics": {"test_top1_err": "NaN"}}))
    (folder / "seed6.json").write_text(json.dumps({**good, "seed": 6, "status": "running"}))
    (folder / "seed7.json").write_text(json.dumps({**good, "seed": 8}))  # path and content disagree
    (folder / "seed9.json").write_text("[1, 2]")
    (folder / "seed10.json").write_text(json.dumps({**good, "seed": 10, "status": "diverged", "metrics": None}))
    runs, skipped = load_runs(tmp_path / "results")
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {f"seed{i}.json" for i in (2, 3, 4, 5, 6, 7, 9)}
    assert "not readable JSON" in reasons["seed2.json"] and "schema: expected 1, got 99" in reasons["seed3.json"]
    assert "metrics: missing required key" in reasons["seed4.json"] and "test_top1_err" in reasons["seed5.json"]
    groups = group_runs(runs, with_cost=False)
    g = groups[("bnn", "mnist_cpu")]
    assert g.errors() == [good["metrics"]["test_top1_err"]] and len(g.diverged) == 1  # diverged: counted, not averaged
    text = render(check_registry(), groups, skipped)
    assert "## Skipped result files" in text and "seed3.json`: schema: expected 1, got 99" in text
    assert "(+1 diverged)" in text


def test_groups_mean_std_and_drop_against_the_float_baseline():
    base = group([1.0, 1.2], config="float")
    g = group([1.5, 1.9, 1.7], baseline=base)
    assert g.mean() == pytest.approx(1.7) and g.std() == pytest.approx(0.2)
    assert g.drop() == pytest.approx(0.6)


# --- verdicts ---------------------------------------------------------------------------------------------------

def test_verdict_compares_drops_within_the_stated_tolerance():
    base = group([1.0])
    c = claim(value=1.4, baseline=1.0)  # claimed drop 0.4
    assert judge(c, group([1.0 + 0.4 + ABS_TOL - 0.01], baseline=base)).kind == "reproduced"
    v = judge(c, group([1.0 + 0.4 + ABS_TOL + 0.05], baseline=base))
    assert v.kind == "not reproduced" and v.compared == "drop" and v.diff == pytest.approx(ABS_TOL + 0.05)
    # two seeds with a large spread widen the tolerance to 2 sigma
    wide = group([1.2, 2.6], baseline=base)
    assert judge(c, wide).tolerance == pytest.approx(2 * wide.std())


def test_verdict_without_baseline_compares_errors_and_matches_float_and_proxy():
    assert judge(claim(value=1.4), group([1.45])).compared == "error"
    assert judge(claim(value=1.4), group([1.45])).kind == "reproduced"
    assert judge(claim(value=1.4), group([2.0])).kind == "not reproduced"
    base = group([1.0])
    mf = claim(metric="matches_float", value=None)
    assert judge(mf, group([1.1], baseline=base)).kind == "reproduced"
    assert judge(mf, group([1.5], baseline=base)).kind == "not reproduced"
    assert judge(claim(value=1.4), group([5.0]), proxy=True).kind == "proxy only"
    assert judge(claim(metric="statement", value=None), group([5.0])).kind == "qualitative"


# --- costs ------------------------------------------------------------------------------------------------------

def test_bops_count_macs_times_weight_and_input_bits():
    from common.cost import inference_cost
    from common.quant.convert import convert

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert inference_cost(net, (4,)) == {"macs": 12 + 6, "bops": (12 + 6) * 32 * 32}
    q = convert(net, [{"layers": "all", "weight": {"name": "sign"}},
                      {"layers": "last", "weight": {"name": "sign"}, "input": {"name": "sign"}}])
    assert inference_cost(q, (4,)) == {"macs": 18, "bops": 12 * 1 * 32 + 6 * 1 * 1}
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1))  # 4 x 5 x 5 outputs x 2 x 3 x 3 MACs each
    assert inference_cost(conv, (2, 5, 5))["macs"] == 4 * 25 * 18


# --- determinism and the committed leaderboard ------------------------------------------------------------------

def test_render_is_deterministic_and_the_committed_leaderboard_is_up_to_date(tmp_path):
    """CI's check: the committed LEADERBOARD.md is exactly what the committed results and claims give."""
    from leaderboard.plots import write_plots

    from leaderboard.efficiency import load_bench

    runs, skipped = load_runs(ROOT / "results")
    groups = group_runs(runs)
    bench, why = load_bench(ROOT / "results")
    text = render(check_registry(), groups, skipped, bench, why)
    assert render(check_registry(), groups, skipped, bench, why) == text
    assert text == (ROOT / "LEADERBOARD.md").read_text(), \
        "LEADERBOARD.md is out of date: run python -m leaderboard and commit it"
    assert not skipped, f"committed result files the leaderboard cannot read: {skipped}"
    first = {p.name: p.read_bytes() for p in write_plots(groups, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_plots(groups, tmp_path / "b")}
    assert first and first == second


# --- the sweep --------------------------------------------------------------------------------------------------

def test_sweep_skips_a_result_only_while_its_config_is_unchanged(tmp_path):
    from leaderboard.sweep import plan, up_to_date

    _, cfg = load_config("mnist_cpu", ROOT / "papers/bnn/configs", seed=1)
    assert up_to_date(GOOD, cfg)[0]
    _, changed = load_config("mnist_cpu", ROOT / "papers/bnn/configs", ["optim.lr_start=0.5"], seed=1)
    assert up_to_date(GOOD, changed) == (False, "config changed")
    assert up_to_date(tmp_path / "none.json", cfg) == (False, "no result")
    stale = json.loads(GOOD.read_text())
    stale["config_hash"], stale["config"]["optim"]["lr_start"] = "x", -1  # a value today's schema refuses
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    assert up_to_date(tmp_path / "stale.json", cfg) == (False, "stored config no longer valid")
    folder = tmp_path / "bnn" / "mnist_cpu"
    folder.mkdir(parents=True)
    shutil.copy(GOOD, folder / "seed1.json")
    items = {(j.config, j.seed): ok for j, ok, _ in plan("cpu", [1, 2], ["bnn"], "*", tmp_path)}
    assert items[("mnist_cpu", 1)] and not items[("mnist_cpu", 2)] and not items[("mnist_cpu_float", 1)]
    assert not any(config.startswith("mnist_theano") for config, _ in items)  # paper scale: not in a cpu sweep


def test_sweep_plans_fine_tuning_after_what_it_starts_from(tmp_path):
    from leaderboard.sweep import plan

    jobs = [j for j, _, _ in plan("cpu", [1], ["sung"], "mnist_cpu_w64_*", tmp_path)]
    ft = next(j for j in jobs if j.command == "finetune")
    assert ft.config == "mnist_cpu_w64_b2" and ("sung", "mnist_cpu_w64_b2") in ft.needs
    assert ("sung", "mnist_cpu_w64_float") in next(j for j in jobs if j.config == "mnist_cpu_w64_b4").needs


# --- the shared settings: reduced-scale verdicts, ranks, the Pareto front ------------------------------------------

def _shared(config, errors, paper="binaryconnect", claims=(), ptq=False, baseline=None):
    g = group(errors, paper=paper, config=config, baseline=baseline)
    for r in g.runs:
        r.data["claims"], r.data["config"] = list(claims), ({"ptq": {"name": "sung"}} if ptq else {})
    return g


def test_a_reduced_scale_run_is_judged_on_its_drop_never_on_its_absolute_error():
    base = _shared("cifar10_vggsmall", [14.0, 14.2, 14.1], paper="float")
    # R12-like: 8.27 vs float 10.64 claimed (a drop of -2.37); ours 14.1 -> 16.0 on the JPEG copy: a drop of +1.9
    bc = _shared("cifar10_vggsmall_stoch", [16.0, 16.1, 15.9], claims=["R12"], baseline=base)
    c = claim(id="R12", kind="roadmap", dataset="cifar10", value=8.27, baseline=10.64, bits={"w": 1, "a": 32, "g": 32})
    v = judge(c, bc)
    assert bc.reduced and bc.scale_label == "CIFAR-10 (JPEG), reduced width and budget"
    assert v.compared == "drop" and v.kind == "not reproduced" and v.ours == pytest.approx(1.9)
    assert v.claimed == pytest.approx(-2.37)
    # a claim with neither a drop nor a float error to imply one: no verdict from an absolute JPEG error
    lone = claim(id="R15", kind="roadmap", dataset="cifar10", value=10.15, baseline=None)
    assert judge(lone, bc).kind == "qualitative"
    # ... but a reference float error (the same network elsewhere) implies one
    assert judge(claim(id="R15", value=10.15, baseline=None, reference_baseline=10.64), bc).compared == "drop"
    # "= float" claims need the drop within the tolerance
    same = _shared("cifar10_vggsmall_fl12_sr", [14.1, 14.0, 14.2], paper="gupta", claims=["R17"], baseline=base)
    assert judge(claim(id="R17", metric="matches_float", value=None, baseline=None), same).kind == "reproduced"


def test_a_claim_is_matched_only_to_results_obtained_its_way():
    from leaderboard.collect import claim_groups

    quantized = _shared("cifar10_vggsmall_b2", [20.0], paper="sung", claims=["R06"], ptq=True)
    finetuned = _shared("cifar10_vggsmall_b2_finetuned", [15.0], paper="sung", claims=["R06"], ptq=True)
    groups = {(g.paper, g.config): g for g in (quantized, finetuned)}
    assert claim_groups(claim(id="R06", how="finetune"), groups) == [finetuned]
    assert claim_groups(claim(id="R06", how="post_training"), groups) == [quantized]


def test_ranks_across_settings_and_the_pareto_front():
    from leaderboard.plots import pareto_front
    from leaderboard.render import rank_view

    groups = {}
    for setting, errs in (("mnist_lenet5", (0.7, 1.0, 3.0)), ("cifar10_vggsmall", (14.0, 25.0, 18.0))):
        for (paper, suffix), e in zip((("float", ""), ("bnn", ""), ("twn", "")), errs):
            g = _shared(setting + suffix, [e], paper=paper)
            groups[(g.paper, g.config)] = g
    rows = [ln for ln in rank_view(groups) if ln.startswith("| `")]
    assert rows == ["| `float` | 1 (0.70) | 1 (14.00) | = |", "| `twn` | 3 (3.00) | 2 (18.00) | +1 |",
                    "| `bnn` | 2 (1.00) | 3 (25.00) | -1 |"]
    assert pareto_front([(1, 5.0), (2, 3.0), (3, 4.0), (4, 1.0), (4, 2.0)]) == [(1, 5.0), (2, 3.0), (4, 1.0)]
