import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tmp_path(tmp_path):
    """pytest's tmp_path, deleted when the test ends: smoke runs write checkpoints of up to ~500 MB."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST (shared/datasets or $LOWBIT_DATA); tests that need it are skipped with a reason otherwise."""
    for d in (os.environ.get("LOWBIT_DATA"), SHARED_DATA):
        if d and (Path(d) / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
            return Path(d)
    pytest.skip("real MNIST not found (set LOWBIT_DATA to a folder holding MNIST/raw)")
