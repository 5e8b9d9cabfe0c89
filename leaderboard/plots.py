"""The leaderboard's figures (matplotlib, Agg): error versus weight and activation bits for every method of the
shared setting, and their training curves."""
from __future__ import annotations

import statistics
from pathlib import Path

from leaderboard.collect import Group

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})


def bits_plot(groups: list[Group], key: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    seen: dict[int, int] = {}
    for i, g in enumerate(sorted(groups, key=lambda g: g.label)):
        x = g.bits[key]
        k = seen[x] = seen.get(x, -1) + 1  # spread the methods that share a bit width
        ax.errorbar([x * 2 ** (0.07 * k)], [g.mean()], yerr=[g.std() or 0.0], fmt=MARKERS[i % len(MARKERS)],
                    color=COLORS[i % len(COLORS)], capsize=3, markersize=6, label=f"{g.label} ({g.mean():.2f})")
        if g.shared and g.paper == "float":
            ax.axhline(g.mean(), color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16, 32], labels=["1", "2", "4", "8", "16", "32 (float)"])
    ax.set_yscale("log")
    ax.set_xlabel(f"{title} bits (lowest over the layers)")
    ax.set_ylabel("test error % (log scale)")
    ax.set_title(f"MNIST LeNet-5, same budget: error versus {title.lower()} bits")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)


def curves_plot(groups: list[Group], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, g in enumerate(sorted(groups, key=lambda g: g.label)):
        curves = [r.data.get("curve") or [] for r in g.runs]
        epochs = sorted({p["epoch"] for c in curves for p in c if isinstance(p.get("val_err"), (int, float))})
        if len(epochs) < 2:
            continue
        ys = [statistics.fmean([p["val_err"] for c in curves for p in c if p.get("epoch") == e
                                and isinstance(p.get("val_err"), (int, float))]) for e in epochs]
        ax.plot([e + 1 for e in epochs], ys, marker=".", color=COLORS[i % len(COLORS)],
                linestyle="-" if i < len(COLORS) else "--", label=g.label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error % (mean over seeds, log scale)")
    ax.set_title("MNIST LeNet-5, same budget: training curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)


def write_plots(groups: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    shared = [g for g in groups.values() if g.shared and g.runs and g.mean() is not None]
    paths = [folder / "shared_weight_bits.png", folder / "shared_activation_bits.png", folder / "shared_curves.png"]
    if not shared:
        return []
    bits_plot(shared, "w", "Weight", paths[0])
    bits_plot(shared, "a", "Activation", paths[1])
    curves_plot([g for g in shared if g.how == "scratch"], paths[2])
    return paths
