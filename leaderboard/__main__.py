"""``python -m leaderboard [--check]``: write LEADERBOARD.md and leaderboard/plots/*.png from the claims registry and
the result files; with ``--check``, write nothing and exit 1 if the committed LEADERBOARD.md is out of date."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import UserError
from leaderboard.claims import ROOT, check_registry
from leaderboard.collect import group_runs, load_runs
from leaderboard.efficiency import load_bench, load_efficiency
from leaderboard.plots import write_plots
from leaderboard.render import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard", description=__doc__)
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="result files (default: results/)")
    parser.add_argument("--out", default=str(ROOT / "LEADERBOARD.md"), help="the Markdown file to write")
    parser.add_argument("--plots-dir", default=str(ROOT / "leaderboard" / "plots"), help="where the figures go")
    parser.add_argument("--no-plots", action="store_true", help="only the Markdown")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if --out differs from what the results and claims give (writes nothing)")
    args = parser.parse_args(argv)
    try:
        claims = check_registry()
        load_efficiency()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_dir, out = Path(args.results_dir), Path(args.out)
    if not results_dir.is_dir():
        print(f"error: --results-dir {results_dir}: no such folder", file=sys.stderr)
        return 2
    if out.is_dir():
        print(f"error: --out {out}: a folder (expected the Markdown file to write)", file=sys.stderr)
        return 2
    runs, skipped = load_runs(results_dir)
    if not runs:
        print(f"error: --results-dir {results_dir}: no result file (results/<paper>/<config>/seed<N>.json) that can "
              f"be read{f'; {len(skipped)} skipped, the first: {skipped[0].path}: {skipped[0].reason}' if skipped else ''}",
              file=sys.stderr)
        return 2
    groups = group_runs(runs)
    bench, why = load_bench(results_dir)
    text = render(claims, groups, skipped, bench, why)
    if args.check:
        current = out.read_text() if out.is_file() else ""
        if current != text:
            print(f"{out} is out of date: run python -m leaderboard and commit it", file=sys.stderr)
            return 1
        print(f"{out} is up to date ({len(runs)} runs, {len(skipped)} skipped)")
        return 0
    from common.results import write_text_atomic

    write_text_atomic(out, text)
    plots = [] if args.no_plots else write_plots(groups, Path(args.plots_dir))
    print(f"wrote {out} ({len(runs)} runs in {len(groups)} groups, {len(skipped)} skipped) and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
