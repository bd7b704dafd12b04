"""The repository itself: what every clone (and every copy shipped to a GPU machine) pays for."""
import subprocess

import pytest

from conftest import REPO

LARGEST_FILE = 8 * 2**20  # a run checkpoint with optimizer state is ~11 MB; the shipped weights 5.7 MB


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files failed)")
    return [REPO / p for p in out.decode().split("\0") if p]


def test_no_tracked_file_over_8_mb():
    big = {str(p.relative_to(REPO)): p.stat().st_size for p in tracked_files()
           if p.is_file() and p.stat().st_size > LARGEST_FILE}
    assert not big, f"tracked files over 8 MB (keep run checkpoints out of git): {big}"


def test_only_the_shipped_weights_are_tracked_checkpoints():
    pts = sorted(str(p.relative_to(REPO)) for p in tracked_files() if p.suffix in (".pt", ".pth"))
    assert pts == ["weights/segnet_basic_camvid.pt"]
