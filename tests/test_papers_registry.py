"""The one list of papers (common.papers) is the set of paper packages on disk, and an unknown name is a one-line
user error."""
import pytest

from common.errors import UserError
from common.papers import ALL, FOLDER, PAPERS, package


def test_registry_lists_every_paper_package_once():
    on_disk = {p.name for p in FOLDER.iterdir() if (p / "__main__.py").is_file()}
    assert sorted(ALL) == sorted(on_disk) and len(set(ALL)) == len(ALL)
    assert all((FOLDER / name / "configs").is_dir() for name in ALL)
    assert all((FOLDER / name / "README.md").is_file() for name in PAPERS)  # (float is the reference, not a paper)


def test_unknown_paper_is_a_user_error_naming_the_known_ones():
    with pytest.raises(UserError, match=r"paper 'nopaper': no such paper \(available: .*binaryconnect"):
        package("nopaper")
    assert package("bnn").__name__ == "papers.bnn"
