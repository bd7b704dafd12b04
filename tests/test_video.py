import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import Evaluate_SegNet
from helpers import cli_error, train_tiny
from segnet.errors import UserError

av = pytest.importorskip("av")
REPO = pathlib.Path(__file__).resolve().parents[1]
H, W, N = 32, 48, 5


def write_video(path, frames, fps=10):
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
    stream.height, stream.width, stream.pix_fmt = frames[0].shape[0], frames[0].shape[1], "yuv420p"
    for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def read_video(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny trained SegNet-Lite and a 5-frame video of the fixture's kind of scene (a moving car)."""
    tmp = tmp_path_factory.mktemp("video")
    _, ckpt = train_tiny(tmp)
    frames = []
    for i in range(N):
        f = np.zeros((H, W, 3), np.uint8)
        f[: H // 2], f[H // 2:] = (128, 128, 128), (128, 64, 128)
        f[8:16, 4 * i:4 * i + 8] = (64, 0, 128)
        frames.append(f)
    write_video(tmp / "in.mp4", frames)
    return ckpt, tmp / "in.mp4", read_video(tmp / "in.mp4")


@pytest.mark.parametrize("side", [False, True])
def test_video_overlay_and_side_by_side(setup, tmp_path, side, capsys):
    ckpt, video, frames_in = setup
    out = tmp_path / "out.mp4"
    assert Evaluate_SegNet.main([str(ckpt), f"--video={video}", f"--out={out}", f"--side_by_side={side}"]) == 0
    captured = capsys.readouterr()
    assert "5 frames in" in captured.out and "frames/s)" in captured.out
    assert "\r" not in captured.err and re.search(r"^video: 5 frames in \d+\.\d s$", captured.err, re.M)  # a log
    frames = read_video(out)
    assert len(frames) == N and not list(tmp_path.glob(".segnet-tmp-*"))
    assert frames[0].shape == (H, 2 * W if side else W, 3)
    for f_in, f_out in zip(frames_in, frames):
        left = f_out[:, :W].astype(int)
        if side:  # the frame unchanged on the left (up to compression), the colours on the right
            assert np.abs(left - f_in).mean() < 4
            assert np.abs(f_out[:, W:].astype(int) - f_in).mean() > 10
        else:     # the colours over the frame: not the frame
            assert np.abs(left - f_in).mean() > 5


def test_video_errors_are_one_line(setup, tmp_path, monkeypatch, capsys):
    ckpt, video, _ = setup
    (tmp_path / "notes.txt").write_text("not a video")
    cases = [
        ([f"--video={tmp_path / 'missing.mp4'}"], "no such file"),
        ([f"--video={tmp_path / 'notes.txt'}"], "cannot open it as a video"),
        ([f"--video={video}", f"--out={tmp_path / 'no' / 'o.mp4'}"], "does not exist"),
        ([f"--out={tmp_path / 'o.mp4'}"], "--out and --side_by_side belong to --video=IN"),
    ]
    for i, (args, message) in enumerate(cases):
        if i == 0:  # one in a process of its own, as a user runs it
            r = subprocess.run([sys.executable, "Evaluate_SegNet.py", str(ckpt), *args], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
            code, err = r.returncode, r.stderr
        else:
            code, err = cli_error(capsys, Evaluate_SegNet.main, [str(ckpt), *args])
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and err.strip().count("\n") == 0, err
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    with pytest.raises(UserError, match="pip install av"):
        Evaluate_SegNet.main([str(ckpt), f"--video={video}", f"--out={tmp_path / 'o.mp4'}"])
