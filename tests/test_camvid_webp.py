"""tools/camvid_webp.py: frames shipped as lossless WebP come back pixel-equal, and a frame that
does not is refused in one line."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from helpers import make_tutorial_camvid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(*args):
    return subprocess.run([sys.executable, "tools/camvid_webp.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_pack_and_unpack_are_pixel_equal_and_a_changed_frame_is_refused(tmp_path):
    root = make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 3), ("val", 2)))
    packed, out = tmp_path / "packed", tmp_path / "out"
    r = tool("pack", f"--root={root}", f"--out={packed}", "--parts=2", "--method=0")
    assert r.returncode == 0, r.stderr
    manifests = [json.loads((packed / p / "manifest.json").read_text()) for p in ("part1", "part2")]
    assert sorted(k for m in manifests for k in m) == ["train/f000", "train/f001", "train/f002", "val/f000", "val/f001"]
    assert all(manifests)  # both parts hold frames
    r = tool("unpack", f"--src={packed}", f"--out={out}")
    assert r.returncode == 0, r.stderr
    for split in ("train", "trainannot", "val", "valannot"):
        names = sorted(p.name for p in (root / split).glob("*.png"))
        assert names == sorted(p.name for p in (out / split).glob("*.png"))
        for name in names:
            assert np.array_equal(np.array(Image.open(root / split / name)), np.array(Image.open(out / split / name)))
    key = next(iter(manifests[0]))
    split, stem = key.split("/")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(packed / "part1" / split / f"{stem}.webp", "WEBP", lossless=True)
    r = tool("unpack", f"--src={packed}", f"--out={tmp_path / 'again'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert f"{stem}.webp does not decode to the packed frame's pixels" in r.stderr
