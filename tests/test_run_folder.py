"""A run folder loses nothing to a start that fails: --overwrite=true replaces the previous run only
when the new run writes its first output, and a failed start leaves no folder behind (or, where
the folder existed, leaves it as it was)."""
import json
import os

import pytest

import Train_SegNet
from segnet.errors import run_cli
from segnet.files import lock_folder, unlock_folder
from test_folder import make_folder

TINY = ["--dataset=folder", "--model=segnet_lite", "--init_encoder=none", "--height=16", "--width=24",
        "--batch_size=2", "--num_workers=0", "--bn_recompute=false"]


def snapshot(folder):
    """Every file under `folder` (but the lock) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture
def previous_run(tmp_path):
    """A finished run (checkpoints, metrics, config, class weights) with an evaluation folder."""
    root = make_folder(tmp_path / "d", splits=("train", "val"))
    run = tmp_path / "run"
    assert Train_SegNet.main(TINY + [f"--data_root={root}", f"--out_dir={run}", "--max_iters=2",
                                     "--eval_interval=1"]) == 0
    (run / "eval-test").mkdir()
    (run / "eval-test" / "metrics.json").write_text("{}")
    return root, run


@pytest.mark.parametrize("breaks", ["data", "vgg16"])
def test_a_failed_overwrite_leaves_the_previous_run_exactly_as_it_was(previous_run, tmp_path, breaks, capsys):
    root, run = previous_run
    before = snapshot(run)
    assert {"last.pt", "best.pt", "metrics.csv", "config.json", "class_weights.json", "eval-test/metrics.json"} \
        <= set(before)
    args = TINY + [f"--data_root={root}", f"--out_dir={run}", "--overwrite=true", "--max_iters=3"]
    if breaks == "data":
        (root / "labels" / "train" / "im1.png").unlink()  # the new start's data check fails
    else:
        args += [f"--init_encoder={tmp_path / 'missing_vgg16.pth'}", "--model=segnet"]  # no encoder weights
    with pytest.raises(SystemExit) as e:
        from segnet.errors import run_cli
        run_cli(Train_SegNet.main, args)
    assert e.value.code == 2
    assert snapshot(run) == before  # nothing removed, nothing rewritten
    assert not (run / "eval-test" / ".lock").exists()  # the lock it held there, made by this start, goes too
    assert "stay until this run writes its first checkpoint" in capsys.readouterr().out


def test_an_overwrite_refuses_an_evaluation_folder_in_use_and_leaves_the_run_as_it_was(previous_run, capsys):
    root, run = previous_run
    before, busy = snapshot(run), run / "eval-test"
    fd = lock_folder(busy)  # an evaluation writing its outputs there (Evaluate_SegNet.py's default --out_dir)
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            run_cli(Train_SegNet.main, TINY + [f"--data_root={root}", f"--out_dir={run}", "--overwrite=true",
                                               "--max_iters=3"])
        err = capsys.readouterr().err
    finally:
        unlock_folder(fd)
    assert e.value.code == 2 and err == (f"error: --overwrite=true would replace {busy}, which is in use by an "
                                         f"evaluation (process {os.getpid()}, lock {busy / '.lock'}); wait for it "
                                         f"to end, or choose another --out_dir\n")
    assert snapshot(run) == before


def test_an_overwrite_replaces_the_whole_previous_run_at_its_first_output(previous_run):
    root, run = previous_run
    old_config = json.loads((run / "config.json").read_text())
    assert Train_SegNet.main(TINY + [f"--data_root={root}", f"--out_dir={run}", "--overwrite=true", "--max_iters=3",
                                     "--eval_interval=0", "--seed=7"]) == 0
    assert not (run / "eval-test").exists()
    assert [r.split(",")[0] for r in (run / "metrics.csv").read_text().splitlines()[1:]] == ["3"]  # no old rows
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 7 and old_config["seed"] == 0 and config["max_iters"] == 3
    assert (run / "last.pt").exists() and (run / "class_weights.json").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".segnet-tmp-")]


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    root = make_folder(tmp_path / "d", splits=("train", "val"))
    (root / "labels" / "train" / "im1.png").unlink()
    new, existing = tmp_path / "new" / "run", tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for out in (new, existing):
        with pytest.raises(SystemExit):
            from segnet.errors import run_cli
            run_cli(Train_SegNet.main, TINY + [f"--data_root={root}", f"--out_dir={out}", "--max_iters=2"])
    assert not new.exists() and (tmp_path / "new").exists()  # the run folder made by this start goes
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # a folder that was there stays as it was
