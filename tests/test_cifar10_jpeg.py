"""CIFAR-10 as JPEG image folders (data name ``cifar10_jpeg``), on a tiny generated copy: counts, labels, order,
the decoded cache (never written into a read-only copy), and bad or missing folders (one line, exit 2, nothing
written)."""
import json
from pathlib import Path

import pytest
import torch

import common.data as data
from common.cli import EXIT_USER_ERROR, main
from common.data import CIFAR10_CLASSES, JPEG_FOLDER, jpeg_files, load_jpeg_folder
from common.errors import UserError

COUNTS = {"train": 4, "test": 2}


def _colour(label: int, i: int) -> tuple[int, int, int]:
    return 20 * label + 10, 250 - 20 * label, 40 * i + 20


def _write(root: Path, counts=COUNTS, classes=CIFAR10_CLASSES) -> Path:
    """root/cifar10-jpeg/{train,test}/<class>/NNNN.jpg, each image one colour given by its class and index."""
    from torchvision.io import write_jpeg

    for split, n in counts.items():
        for label, cls in enumerate(classes):
            folder = root / JPEG_FOLDER / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.tensor(_colour(label, i), dtype=torch.uint8)[:, None, None].expand(3, 32, 32).contiguous()
                write_jpeg(img, str(folder / f"{i:04d}.jpg"), quality=95)
    return root


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return _write(tmp_path / "data")


def test_images_labels_and_class_interleaved_order(tiny):
    x, y = load_jpeg_folder(tiny, True, COUNTS)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (40, 3, 32, 32)
    # the folders' sorted class names are CIFAR-10's label indices; the order interleaves the classes, so that the
    # validation split (the last training images) holds every class equally
    assert y.tolist() == list(range(10)) * 4
    for k in range(40):
        label, i = k % 10, k // 10
        expected = torch.tensor(_colour(label, i), dtype=torch.int16)[:, None, None]
        assert (x[k].to(torch.int16) - expected).abs().max() <= 3  # JPEG at quality 95: within a few levels
    xt, yt = load_jpeg_folder(tiny, False, COUNTS)
    assert tuple(xt.shape) == (20, 3, 32, 32) and yt.tolist() == list(range(10)) * 2


def test_decoded_once_and_cached_beside_a_writable_copy(tiny, monkeypatch):
    first = load_jpeg_folder(tiny, True, COUNTS)
    cached = list((tiny / JPEG_FOLDER).glob(".decoded-train-*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(data, "_decode", lambda files: pytest.fail("decoded again despite the cache"))
    again = load_jpeg_folder(tiny, True, COUNTS)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_a_read_only_copy_is_never_written_to(tiny, tmp_path):
    folder = tiny / JPEG_FOLDER
    folder.chmod(0o555)  # as CI's shared copy (root may still write there: the suite must not)
    try:
        before = sorted(p.name for p in folder.iterdir())
        x, _ = load_jpeg_folder(tiny, True, COUNTS)
        assert sorted(p.name for p in folder.iterdir()) == before
        assert len(list((tmp_path / "user-cache" / "lowbit-repro").glob(".decoded-train-*.pt"))) == 1
        assert torch.equal(load_jpeg_folder(tiny, True, COUNTS)[0], x)
    finally:
        folder.chmod(0o755)


def test_a_changed_copy_is_decoded_again(tiny):
    load_jpeg_folder(tiny, False, COUNTS)
    victim = tiny / JPEG_FOLDER / "test" / "cat" / "0000.jpg"
    _write(tiny.parent / "other", {"test": 2})
    victim.write_bytes((tiny.parent / "other" / JPEG_FOLDER / "test" / "dog" / "0000.jpg").read_bytes() + b"\0")
    x, _ = load_jpeg_folder(tiny, False, COUNTS)
    assert abs(int(x[3, 0, 0, 0]) - _colour(5, 0)[0]) <= 3  # (cat is label 3, its first image is at position 3)


BAD = {
    "missing split": (lambda r: __import__("shutil").rmtree(r / JPEG_FOLDER / "test"), "test: missing"),
    "missing class": (lambda r: __import__("shutil").rmtree(r / JPEG_FOLDER / "train" / "frog"), "missing frog"),
    "extra class": (lambda r: (r / JPEG_FOLDER / "train" / "unicorn").mkdir(), "unexpected unicorn"),
    "one image short": (lambda r: (r / JPEG_FOLDER / "train" / "ship" / "0001.jpg").unlink(),
                        "ship: 3 .jpg files, expected 4"),
    "not a JPEG": (lambda r: (r / JPEG_FOLDER / "train" / "deer" / "0001.jpg").write_bytes(b"not an image"),
                   "0001.jpg: not a readable JPEG"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_or_missing_folders_are_one_clear_error(tiny, case):
    damage, message = BAD[case]
    damage(tiny)
    with pytest.raises(UserError, match="dataset 'cifar10_jpeg'") as err:
        load_jpeg_folder(tiny, True, COUNTS)
    assert message in str(err.value) and "\n" not in str(err.value)


def _train_argv(tmp_path, data_dir):
    sets = {"data.val_size": 10, "data.batch_size": 10, "data.eval_batch_size": 20, "trainer.max_epochs": 1,
            "model.channels": [4, 4, 8, 8, 8, 8], "model.fc": [16, 16]}
    return ["train", "--config", "cifar10_vggsmall", "--data-dir", str(data_dir), "--wandb", "disabled",
            "--no-progress", "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
            "--set", *(f"{k}={json.dumps(v)}" for k, v in sets.items())]


def test_the_cifar10_shared_setting_trains_on_a_tiny_copy(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(data, "JPEG_COUNTS", COUNTS)
    assert main("float", "unused", _train_argv(tmp_path, tiny)) == 0
    res = json.loads((tmp_path / "results/float/cifar10_vggsmall/seed1.json").read_text())
    assert res["status"] == "ok" and res["dataset"] == "cifar10_jpeg" and res["config"]["data"]["augment"] == "crop_flip"


def test_a_bad_copy_stops_the_cli_with_one_line_and_nothing_written(tmp_path, tiny, capsys):
    (tiny / JPEG_FOLDER / "train" / "frog" / "0000.jpg").unlink()  # (the real counts are expected: 5,000 a class)
    assert main("float", "unused", _train_argv(tmp_path, tiny)) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: dataset 'cifar10_jpeg': ") and "expected 5000" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_the_real_copy_passes_the_check_when_present():
    from conftest import SHARED_DATA

    if not (SHARED_DATA / JPEG_FOLDER / "train").is_dir():
        pytest.skip("the shared CIFAR-10 JPEG copy is not here")
    files = jpeg_files(SHARED_DATA)
    assert len(files["train"]) == 50000 and len(files["test"]) == 10000
    assert [label for _, label in files["test"][:12]] == [*range(10), 0, 1]
