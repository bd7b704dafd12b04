"""Writes stay inside their folder, and evaluation owns its folder (docs/reliability.md): the lock
file is never followed nor truncated, temp files carry a name only this project makes, output
folders that are symlinks are refused, export and segnet.weights keep checkpoints, the derived-mask
cache stays out of the data folder, a checkpoint's data_root never creates folders, and an
evaluation holds its out_dir's lock and marks it INCOMPLETE until metrics.json is written."""
import json
import os

import pytest

import Evaluate_SegNet
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import export, files, outputs, weights
from segnet.errors import run_cli

HW = (16, 24)


def one_line_exit(capsys, main, argv, status=2):
    """run_cli(main, argv): exit `status` and one line on stderr, no traceback; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == status and "Traceback" not in err, err
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
    assert files.torch_archive(other) == "torchscript" and files.torch_archive(trained) == "saved"
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]


def test_export_under_a_file_says_it_is_a_file(trained, tmp_path, capsys):
    a_file = tmp_path / "FILE"
    a_file.write_text("x")
    err = one_line_exit(capsys, export.main, [str(trained), f"--out={a_file / 'm.pt'}"])
    assert err == f"error: --out={a_file / 'm.pt'}: {a_file} is a file, not a folder"


# -- evaluation owns its folder ---------------------------------------------------------------------
def eval_args(trained, out, *extra):
    return [str(trained), f"--out_dir={out}", "--num_workers=0", "--boundary=false", "--batch_size=1",
            "--dtype=float32", *extra]


def test_a_planted_picture_folder_symlink_is_refused_and_nothing_is_written_through_it(trained, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "f000.png").write_bytes(b"not yours")
    out = tmp_path / "e"
    out.mkdir()
    (out / "colour").symlink_to(elsewhere)
    err = one_line_exit(capsys, Evaluate_SegNet.main, eval_args(trained, out))
    assert err == (f"error: output folder {out / 'colour'} is a symbolic link (to {elsewhere}); outputs are never "
                   f"written through one: remove it, or choose another folder")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["f000.png"]
    assert (elsewhere / "f000.png").read_bytes() == b"not yours"
    assert sorted(p.name for p in out.iterdir()) == ["colour"]  # the folder as it was: no marker, no lock


def test_a_run_folder_that_is_a_symlink_is_refused(camvid, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").symlink_to(elsewhere)
    err = one_line_exit(capsys, Train_SegNet.main, train_args(camvid, tmp_path / "run"))
    assert err.startswith(f"error: output folder {tmp_path / 'run'} is a symbolic link (to {elsewhere})")
    assert not any(elsewhere.iterdir())


def test_a_second_evaluation_or_a_training_run_in_a_folder_in_use_is_refused(trained, camvid, tmp_path, capsys):
    out = tmp_path / "e"
    out.mkdir()
    held = files.lock_folder(out)  # an evaluation under way in this folder
    try:
        err = one_line_exit(capsys, Evaluate_SegNet.main, eval_args(trained, out))
        assert err == (f"error: --out_dir={out} is in use by another evaluation or training run (process "
                       f"{os.getpid()}, lock {out / '.lock'}); wait for it to end, or choose another --out_dir")
        err = one_line_exit(capsys, Train_SegNet.main, train_args(camvid, out))
        assert err.startswith(f"error: --out_dir={out} is in use by another run (process {os.getpid()}")
    finally:
        files.unlock_folder(held)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written by either


@pytest.mark.parametrize("where", ["model_from_checkpoint", "check_data_fits"])
def test_ctrl_c_before_an_evaluation_writes_anything_is_one_line_and_leaves_no_folder(trained, tmp_path, capsys,
                                                                                      monkeypatch, where):
    out = tmp_path / "e"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Evaluate_SegNet, where, interrupt)
    err = one_line_exit(capsys, Evaluate_SegNet.main, eval_args(trained, out), status=130)
    assert err == "error: interrupted before any output was written"
    assert not out.exists()


def test_ctrl_c_mid_evaluation_is_one_line_and_leaves_the_folder_marked_incomplete(trained, tmp_path, capsys,
                                                                                    monkeypatch):
    out = tmp_path / "e"
    assert Evaluate_SegNet.main(eval_args(trained, out)) == 0  # model A's evaluation
    assert not (out / "INCOMPLETE").exists() and (out / "results.md").exists()
    real = outputs.PictureWriter.__call__

    def interrupt_at_second_image(self, batch, first):
        if first == 1:
            raise KeyboardInterrupt
        return real(self, batch, first)
    with monkeypatch.context() as m:
        m.setattr(outputs.PictureWriter, "__call__", interrupt_at_second_image)
        err = one_line_exit(capsys, Evaluate_SegNet.main, eval_args(trained, out), status=130)  # as a shell's
    assert err == (f"error: interrupted: {out} holds a partial evaluation (its INCOMPLETE file says so); run the "
                   f"evaluation again to complete it")
    assert (out / "INCOMPLETE").is_file()
    assert not any((out / n).exists() for n in ("metrics.json", "results.md", "confusion_matrix.png"))
    files.unlock_folder(files.lock_folder(out))  # the lock went with the evaluation
    assert Evaluate_SegNet.main(eval_args(trained, out)) == 0  # run again: whole, unmarked
    assert not (out / "INCOMPLETE").exists() and json.loads((out / "metrics.json").read_text())["num_images"] == 3


def test_a_failed_evaluation_into_a_new_folder_leaves_nothing(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "new"

    def broken(*a, **k):
        raise OSError("cannot read the disk")
    with monkeypatch.context() as m:
        m.setattr(outputs.PictureWriter, "__call__", broken)
        with pytest.raises(OSError):
            Evaluate_SegNet.main(eval_args(trained, out))
    assert not out.exists()


# -- data folders are read, never written -----------------------------------------------------------
def original_camvid(root):
    """The original layout with one test frame (named as in the SegNet split) and its colour mask."""
    from PIL import Image
    from segnet.data.camvid import LABEL_COLORS, _names
    name = _names("test")[0]
    (root / "CamVid_Raw").mkdir(parents=True)
    (root / "CamVid_Labeled").mkdir()
    Image.new("RGB", (24, 16), (128, 128, 128)).save(root / "CamVid_Raw" / f"{name}.png")
    Image.new("RGB", (24, 16), (128, 64, 128)).save(root / "CamVid_Labeled" / f"{name}_L.png")  # Road
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for (r, g, b), n in LABEL_COLORS))
    return root


def test_evaluation_creates_nothing_in_the_data_folder(trained, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    data = original_camvid(tmp_path / "orig")
    trap = tmp_path / "trap"
    trap.mkdir()
    (data / ".cache").symlink_to(trap)  # planted where the mask cache used to go
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    os.chmod(data, 0o555)
    try:
        assert Evaluate_SegNet.main(eval_args(trained, tmp_path / "e", f"--data_root={data}")) == 0
    finally:
        os.chmod(data, 0o755)
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before and not any(trap.iterdir())
    assert len(list(cache.glob("segnet/camvid-masks/*/masks11_*/*.png"))) == 1  # the decoded mask is cached here


def test_an_out_dir_in_the_data_folder_is_refused_and_nothing_is_written_there(camvid, trained, capsys):
    before = sorted(camvid.rglob("*"))
    for main, argv, out in ((Train_SegNet.main, train_args(camvid, camvid / "runs" / "r"), camvid / "runs" / "r"),
                            (Evaluate_SegNet.main, eval_args(trained, camvid, f"--data_root={camvid}"), camvid),
                            (Evaluate_SegNet.main, eval_args(trained, camvid / "test", f"--data_root={camvid}"),
                             camvid / "test")):
        where = "the" if out == camvid else "inside the"
        assert one_line_exit(capsys, main, argv) == (
            f"error: --out_dir={out} is {where} data folder {camvid}: outputs are never written into the data they "
            f"are read with (a file there would be read as data); choose an --out_dir outside it")
    assert sorted(camvid.rglob("*")) == before  # its curves.png or confusion_matrix.png would be read as data


def test_a_checkpoints_data_root_is_never_created_nor_fetched(trained, tmp_path, capsys):
    from segnet.checkpoint import load_checkpoint, save_checkpoint
    gone = tmp_path / "gone" / "CamVid"
    ck = load_checkpoint(trained)
    resume = tmp_path / "run" / "last.pt"
    resume.parent.mkdir()
    save_checkpoint(resume, {**{k: v for k, v in ck.items() if k != "kind"},
                             "config": {**ck["config"], "data_root": str(gone), "download": True, "max_iters": 2}})
    err = one_line_exit(capsys, Train_SegNet.main, [f"--resume={resume}", "--num_workers=0"])
    assert err == (f"error: CamVid not found at {gone} (no such folder); pass --data_root=DIR where it is, or get it "
                   f"with `python -m segnet.data download --root={gone}`")
    assert not (tmp_path / "gone").exists()


def test_a_mistyped_data_root_is_not_downloaded_into_and_leaves_no_folders(tmp_path, capsys):
    typo = tmp_path / "dta" / "CamVid"
    argv = train_args(typo, tmp_path / "run")
    argv.remove("--download=false")
    err = one_line_exit(capsys, Train_SegNet.main, argv)
    assert err == (f"error: data folder {typo} does not exist, nor does {typo.parent}, so nothing is downloaded there: "
                   f"check --data_root (a download goes into a new folder inside an existing one, e.g. data/CamVid), "
                   f"or fetch it first with `python -m segnet.data download`")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
