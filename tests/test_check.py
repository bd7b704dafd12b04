"""The pre-flight data check (the first bad file is named before any iteration runs), a file that
breaks mid-run and a loader worker that dies mid-run (last.pt is saved first, as Ctrl-C does)."""
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

import Train_SegNet
from helpers import make_tutorial_camvid
from segnet.data import CamVid
from segnet.data import camvid as camvid_module
from segnet.data.check import check_dataset
from segnet.errors import UserError, WorkerDied

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def camvid(tmp_path):
    return make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 3),), hw=(16, 24))


def test_a_good_split_passes(camvid):
    assert check_dataset(CamVid(camvid, "train")) == 3


def test_a_truncated_png_is_named(camvid):
    bad = camvid / "train" / "f001.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header still parses; the data and end marker are gone
    with pytest.raises(ValueError) as e:
        check_dataset(CamVid(camvid, "train"))
    assert str(bad) in str(e.value) and "corrupt" in str(e.value)


def test_a_flipped_byte_fails_the_checksum(camvid):
    bad = camvid / "trainannot" / "f002.png"
    data = bytearray(bad.read_bytes())
    data[60] ^= 0xFF  # inside the first data chunk: the CRC no longer matches
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="f002.png is corrupt"):
        check_dataset(CamVid(camvid, "train"))


def test_sizes_must_agree(camvid):
    Image.new("L", (12, 16)).save(camvid / "trainannot" / "f000.png")
    with pytest.raises(ValueError, match=r"f000.png is 24x16 but its label .*f000.png is 12x16"):
        check_dataset(CamVid(camvid, "train"))


def test_check_counts_only_pairs_without_a_problem(camvid):
    """A pair whose sizes differ and a pair whose label holds a value that is no class are both
    left out of the count of images and sizes, alike (the one good pair is counted)."""
    import numpy as np

    from segnet.data.check import Survey, problems
    Image.new("L", (12, 16)).save(camvid / "trainannot" / "f000.png")  # sizes differ
    Image.fromarray(np.full((16, 24), 40, np.uint8)).save(camvid / "trainannot" / "f001.png")  # value 40
    dataset = CamVid(camvid, "train")
    survey = Survey(dataset.num_classes)
    found = list(problems(dataset, survey))
    assert len(found) == 2 and "is 24x16 but its label" in found[0] and "f001.png" in found[1]
    assert survey.images == 1 and sum(survey.sizes.values()) == 1


def test_a_file_that_is_not_an_image(camvid):
    (camvid / "train" / "f000.png").write_text("not a png")
    with pytest.raises(ValueError, match="f000.png is corrupt or not an image"):
        check_dataset(CamVid(camvid, "train"))


@pytest.mark.realdata
def test_real_camvid_passes(camvid_root):
    assert [check_dataset(CamVid(camvid_root, s)) for s in ("train", "val", "test")] == [367, 101, 233]


# -- in the scripts -------------------------------------------------------------------------------


def tiny(root, out, *extra):
    return [f"--data_root={root}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            "--height=16", "--width=24", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--log_interval=1", *extra]


def test_training_names_a_bad_file_before_the_first_iteration(tmp_path):
    root = make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 4), ("val", 2)), hw=(16, 24))
    bad = root / "valannot" / "f001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    r = subprocess.run([sys.executable, "Train_SegNet.py", *tiny(root, tmp_path / "run", "--max_iters=2")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(bad) in last and "corrupt" in last
    bars = r.stderr.replace("\r", "\n").splitlines()  # training's bar never started: no iteration ran
    assert not any(b.startswith("train:") for b in bars) and not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("workers", [0, 1])  # read in this process, or in a DataLoader worker
def test_a_file_that_breaks_mid_run_keeps_a_resumable_last_pt(tmp_path, monkeypatch, workers):
    root = make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 8), ("val", 2)), hw=(16, 24))
    run = tmp_path / "run"
    real, reads = camvid_module.CamVid.load_image, {"n": 0}

    def flaky(self, i):  # the disk fails on the 7th frame read: iterations 1-3 (batch 2) are done
        reads["n"] += 1
        if reads["n"] == 7:
            raise ValueError(f"cannot read image {self.files[i][0]}: broken data stream")
        return real(self, i)
    monkeypatch.setattr(camvid_module.CamVid, "load_image", flaky)
    with pytest.raises(UserError) as e:
        Train_SegNet.main(tiny(root, run, "--max_iters=8", f"--num_workers={workers}"))
    message = str(e.value)
    assert "broken data stream" in message and f"saved {run / 'last.pt'} at iteration 3" in message
    assert "\n" not in message and "Traceback" not in message  # one line, also from a worker
    assert "--resume=" in message
    assert torch.load(run / "last.pt", weights_only=True)["iter"] == 3
    monkeypatch.setattr(camvid_module.CamVid, "load_image", real)  # the file is replaced
    assert Train_SegNet.main([f"--resume={run / 'last.pt'}", "--max_iters=8", "--num_workers=0"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["iter"] == 8


def test_a_loader_worker_killed_mid_run_keeps_a_resumable_last_pt(tmp_path, monkeypatch):
    """The out-of-memory killer (or a stray `pkill`) ends a DataLoader worker: torch's SIGCHLD handler
    would raise wherever the main process is, mid optimizer step included; the run must instead save
    the state after a whole number of steps, say so in one line, and resume to the very weights of an
    uninterrupted run."""
    root = make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 8), ("val", 2)), hw=(16, 24))
    real, reads = camvid_module.CamVid.load_image, {"n": 0}

    def killed(self, i):  # the worker is killed while it reads its 7th frame
        reads["n"] += 1
        if reads["n"] == 7 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, i)
    monkeypatch.setattr(camvid_module.CamVid, "load_image", killed)
    run = tmp_path / "run"
    with pytest.raises(WorkerDied) as e:
        Train_SegNet.main(tiny(root, run, "--max_iters=8", "--num_workers=1"))
    message = str(e.value)
    assert "DataLoader worker" in message and "killed by signal" in message or "exited unexpectedly" in message
    assert "\n" not in message and f"--resume={run / 'last.pt'}" in message and "num_workers" in message
    saved = int(re.search(r"at iteration (\d+)", message).group(1))
    assert 1 <= saved <= 3 and torch.load(run / "last.pt", weights_only=True)["iter"] == saved
    monkeypatch.setattr(camvid_module.CamVid, "load_image", real)
    assert Train_SegNet.main([f"--resume={run / 'last.pt'}", "--max_iters=8", "--num_workers=0"]) == 0
    assert Train_SegNet.main(tiny(root, tmp_path / "straight", "--max_iters=8")) == 0
    a = torch.load(run / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
