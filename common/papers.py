"""The one registry of papers: the packages under ``papers/``, in the order the leaderboard lists them.

Every paper package has a ``__main__.py`` (``python -m papers.<name>``), a ``configs/`` folder and a README;
importing it registers its models and post-training methods. ``float`` is the float baseline every method is
compared with; ``PAPERS`` are the reproduced papers.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from common.errors import UserError

# package -> how the leaderboard names it, in the leaderboard's order
TITLES = {"float": "float", "binaryconnect": "BinaryConnect", "bnn": "BNN", "xnor": "XNOR-Net / BWN", "qnn": "QNN",
          "twn": "TWN", "dorefa": "DoReFa-Net", "gupta": "Gupta (stochastic rounding)", "lowprec": "Courbariaux (DFXP)",
          "fxptrain": "Lin & Talathi (fixed-point training)", "sung": "Sung (uniform, L2 step)",
          "sqnr": "Lin et al. (SQNR bits)", "ristretto": "Ristretto", "moons": "Moons (per-layer bits)",
          "qiu": "Qiu (dynamic precision)"}
ALL = tuple(TITLES)
PAPERS = ALL[1:]
FOLDER = Path(__file__).resolve().parent.parent / "papers"


def package(name: str, what: str = "paper"):
    """The paper's package, imported (its models and methods registered); an unknown name is a ``UserError``."""
    if name not in ALL:
        raise UserError(f"{what} {name!r}: no such paper (available: {', '.join(sorted(ALL))})")
    return importlib.import_module(f"papers.{name}")


def import_all() -> None:
    """Import every paper package, so that every model and post-training method a config may name exists."""
    for name in ALL:
        importlib.import_module(f"papers.{name}")


def configs_dir(name: str) -> Path:
    """The paper's ``configs/`` folder."""
    return FOLDER / name / "configs"
