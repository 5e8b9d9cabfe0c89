"""The leaderboard's figures (matplotlib, Agg), per shared setting: error versus weight and activation bits for every
method, error versus model size and versus bit-operations with the Pareto front marked, and the training curves."""
from __future__ import annotations

import statistics
from pathlib import Path

from leaderboard.collect import SETTINGS, Group

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})


def bits_plot(groups: list[Group], key: str, title: str, path: Path, setting: str = "mnist_lenet5") -> None:
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
    ax.set_title(f"{SETTINGS[setting].title}, same budget: error versus {title.lower()} bits")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)


def curves_plot(groups: list[Group], path: Path, setting: str = "mnist_lenet5") -> None:
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
    ax.set_title(f"{SETTINGS[setting].title}, same budget: training curves")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost and error (lower is better for both), by increasing cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def pareto_plot(groups: list[Group], path: Path, setting: str) -> None:
    """Error versus parameter memory and versus bit-operations per inference, the Pareto front of each marked."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    costed = sorted((g for g in groups if g.cost and g.cost.get("param_bits") and g.cost.get("bops")),
                    key=lambda g: g.label)
    for ax, key, scale, unit in ((axes[0], "param_bits", 8 * 1024, "parameter memory, KiB"),
                                 (axes[1], "bops", 1e6, "bit-operations per inference, millions")):
        points = [(g.cost[key] / scale, g.mean()) for g in costed]
        front = pareto_front(points)
        for i, (g, (x, y)) in enumerate(zip(costed, points)):
            on = (x, y) in front
            ax.scatter([x], [y], marker=MARKERS[i % len(MARKERS)], color=COLORS[i % len(COLORS)], s=60 if on else 30,
                       edgecolors="black" if on else "none", zorder=3, label=g.method)
        if front:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="black", linewidth=1, linestyle="--", zorder=2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # (minor labels of a log axis overlap)
        ax.set_xlabel(f"{unit} (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test error % (mean over seeds, log scale)")
    fig.suptitle(f"{SETTINGS[setting].title}: error versus size and bit-operations (outlined: on the Pareto front)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], color=COLORS[i % len(COLORS)], linestyle="none",
                      label=g.method) for i, g in enumerate(costed)]
    handles.append(Line2D([], [], color="black", linewidth=1, linestyle="--", label="Pareto front"))
    axes[1].legend(handles=handles, fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    plt.close(fig)


def write_plots(groups: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    for setting in SETTINGS:
        shared = [g for g in groups.values() if g.setting == setting and g.runs and g.mean() is not None]
        if not shared:
            continue
        prefix = folder / ("shared" if setting == "mnist_lenet5" else f"shared_{setting}")
        mine = [Path(f"{prefix}_{kind}.png") for kind in ("weight_bits", "activation_bits", "pareto", "curves")]
        bits_plot(shared, "w", "Weight", mine[0], setting)
        bits_plot(shared, "a", "Activation", mine[1], setting)
        pareto_plot(shared, mine[2], setting)
        curves_plot([g for g in shared if g.how == "scratch"], mine[3], setting)
        paths += mine
    return paths
