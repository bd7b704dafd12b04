"""Writes stay inside their folder, and evaluation owns its folder (docs/reliability.md): the lock
file is never followed nor truncated, temp files carry a name only this project makes, output
folders that are symlinks are refused, export and segnet.weights keep checkpoints, the derived-mask
cache stays out of the data folder, a checkpoint's data_root never creates folders, and an
evaluation holds its out_dir's lock and marks it INCOMPLETE until metrics.json is written."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import Evaluate_SegNet
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import evaluation, export, files, weights
from segnet.errors import run_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
HW = (16, 24)


def one_line_exit(capsys, main, argv):
    """run_cli(main, argv): exit status 2 and one line on stderr, no traceback; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in err.splitlines()) == 1, err
    return err.splitlines()[-1]


def train_args(root, out, *extra):
    return [f"--data_root={root}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            f"--height={HW[0]}", f"--width={HW[1]}", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--max_iters=1", "--download=false", "--dtype=float32", *extra]


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_tutorial_camvid(tmp_path_factory.mktemp("data") / "CamVid", sizes=(("train", 2), ("val", 2),
                                                                                    ("test", 3)), hw=HW)


@pytest.fixture(scope="module")
def trained(camvid, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert Train_SegNet.main(train_args(camvid, run)) == 0
    return run / "last.pt"


# -- the lock file --------------------------------------------------------------------------------
def test_a_symlink_at_the_lock_path_is_refused_and_never_written_through(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("my notes")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(files.NotALockFile, match=r"\.lock is a symbolic link \(to .*precious.txt\)"):
        files.lock_folder(run)
    assert target.read_text() == "my notes"
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(tmp_path / "nowhere")  # dangling: would create a file outside run/
    with pytest.raises(files.NotALockFile, match="symbolic link"):
        files.lock_folder(run)
    assert not (tmp_path / "nowhere").exists()


def test_a_lock_path_that_is_not_a_pid_file_is_never_truncated(tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("12")
    os.link(other, tmp_path / ".lock")  # a hard link to someone's file
    with pytest.raises(files.NotALockFile, match="hard link"):
        files.lock_folder(tmp_path)
    assert other.read_text() == "12"
    os.remove(tmp_path / ".lock")
    (tmp_path / ".lock").write_text("a user's own file, not a lock")
    with pytest.raises(files.NotALockFile, match="other content"):
        files.lock_folder(tmp_path)
    assert (tmp_path / ".lock").read_text() == "a user's own file, not a lock"
    (tmp_path / ".lock").write_text("99999")  # a lock a finished run left: ours, reused
    files.unlock_folder(files.lock_folder(tmp_path))
    assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_training_refuses_a_planted_lock_link_in_one_line(camvid, tmp_path, capsys):
    target = tmp_path / "target"
    target.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    err = one_line_exit(capsys, Train_SegNet.main, train_args(camvid, run))
    assert err == (f"error: lock file {run / '.lock'} is a symbolic link (to {target}); expected a plain file "
                   f"holding a process id (remove it, or choose another folder)")
    assert target.read_text() == "keep"


# -- temp names -----------------------------------------------------------------------------------
def test_temp_names_are_the_projects_own_and_a_users_tmp_file_is_kept(camvid, tmp_path, capsys):
    assert files.temp_name(tmp_path / "last.pt").name == f".segnet-tmp-{os.getpid()}-last.pt"
    run = tmp_path / "run"
    run.mkdir()
    (run / ".notes.2025.tmp").write_text("mine")
    (run / ".best.pt.123.tmp").write_text("an old-style name: not ours any more")
    (run / ".segnet-tmp-123-best.pt").write_bytes(b"PK half")  # a killed save
    assert [p.name for p in files.temp_files(run)] == [".segnet-tmp-123-best.pt"]
    assert files.temp_files(run, "last.pt") == []
    capsys.readouterr()
    assert Train_SegNet.main(train_args(camvid, run)) == 0
    assert "removed 1 temp file(s) left in" in capsys.readouterr().out
    assert (run / ".notes.2025.tmp").read_text() == "mine" and (run / ".best.pt.123.tmp").exists()
    assert not (run / ".segnet-tmp-123-best.pt").exists()


# -- export and segnet.weights keep checkpoints -------------------------------------------------
def test_export_and_weights_never_overwrite_a_checkpoint_without_overwrite(trained, tmp_path, capsys):
    run = trained.parent
    before = trained.read_bytes()
    other = tmp_path / "other.pt"
    other.write_bytes(before)  # another run's checkpoint
    for main, extra in ((export.main, ["--format=torchscript", "--check=false"]), (weights.main, [])):
        err = one_line_exit(capsys, main, [str(trained), *extra, f"--out={trained}"])
        assert err == (f"error: --out={trained} is the checkpoint this command reads; it is kept: choose another "
                       f"--out, or replace it with --overwrite=true")
        err = one_line_exit(capsys, main, [str(trained), *extra, f"--out={other}"])
        assert err == (f"error: --out={other} is a training checkpoint or weights file; it is kept: choose "
                       f"another --out, or replace it with --overwrite=true")
        assert trained.read_bytes() == before == other.read_bytes()
    # fresh outputs work, and a weights file is kept from the next write too
    assert weights.main([str(trained), f"--out={tmp_path / 'w.pt'}"]) == 0
    assert one_line_exit(capsys, weights.main, [str(trained), f"--out={tmp_path / 'w.pt'}"]).endswith(
        "--overwrite=true")
    assert weights.main([str(trained), f"--out={tmp_path / 'w.pt'}", "--overwrite=true"]) == 0
    ts = tmp_path / "m.torchscript.pt"
    for _ in range(2):  # an export replaces its own earlier file: that is not a checkpoint
        assert export.main([str(trained), "--format=torchscript", "--check=false", f"--out={ts}"]) == 0
    assert export.main([str(trained), "--format=torchscript", "--check=false", f"--out={other}",
                        "--overwrite=true"]) == 0
    assert not files.saved_by_torch(other) and files.saved_by_torch(trained)
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]


def test_export_under_a_file_says_it_is_a_file(trained, tmp_path, capsys):
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    err = one_line_exit(capsys, export.main, [str(trained), f"--out={a_file / 'm.pt'}"])
    assert err == f"error: --out={a_file / 'm.pt'}: {a_file} is a file, not a folder"
