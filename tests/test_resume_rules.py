"""What a resume may continue and change, a new run from a checkpoint's weights (--init_from), and
the start-up checks that end in one line: a best.pt is not resumed, best_metric and the class
names cannot change, a --max_iters already reached rewrites nothing, an unknown device, memory
that runs out, Ctrl-C in the pre-flight check, and a run stopped before its first last.pt."""
import errno
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from helpers import make_tutorial_camvid
from segnet import engine, files, training_data
from segnet.checkpoint import save_checkpoint
from segnet.errors import run_cli

HW = (16, 24)
OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes. Error code 12"


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_tutorial_camvid(tmp_path_factory.mktemp("data") / "CamVid", hw=HW)


def args(data, out, *extra):
    return [f"--data_root={data}", f"--out_dir={out}", "--model=segnet_lite", "--init_encoder=none",
            f"--height={HW[0]}", f"--width={HW[1]}", "--batch_size=2", "--num_workers=0", "--bn_recompute=false",
            "--eval_interval=0", "--max_iters=2", "--log_interval=1", "--lr=0.01", *extra]


@pytest.fixture(scope="module")
def run(camvid, tmp_path_factory):
    """A finished run of 2 iterations: its final validation saved best.pt and last.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert Train_SegNet.main(args(camvid, out)) == 0
    return out


def one_line_exit(capsys, argv, main=Train_SegNet.main, status=2):
    """run_cli(main, argv) exits with `status` and one line, the last on stderr, without a traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == status and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [err.splitlines()[-1]], err
    return err.splitlines()[-1]


def snapshot(folder):
    """Every file of a run folder with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def load(path):
    return torch.load(path, weights_only=True)


# -- only last.pt continues a run -----------------------------------------------------------
def test_best_pt_is_not_resumed_and_names_the_runs_last_pt(run, tmp_path, capsys):
    before = snapshot(run)
    err = one_line_exit(capsys, [f"--resume={run / 'best.pt'}", "--max_iters=6"])
    assert load(run / "best.pt")["iter"] == load(run / "last.pt")["iter"] == 2  # the same weights, even
    assert err.startswith(f"error: --resume={run / 'best.pt'} is a best.pt (iteration ")
    assert f"only the run's last.pt ({run / 'last.pt'}) continues a run" in err
    assert f"--init_from={run / 'best.pt'}" in err
    # decided by what the file records, not by its name; a file without the record goes by its name
    copy = tmp_path / "snapshot.pt"
    copy.write_bytes((run / "best.pt").read_bytes())
    assert "is a best.pt" in one_line_exit(capsys, [f"--resume={copy}", "--max_iters=6"])
    old = {k: v for k, v in load(run / "best.pt").items() if k not in ("kind", "saved_as", "finished")}
    (tmp_path / "old").mkdir()
    save_checkpoint(tmp_path / "old" / "best.pt", old)
    assert "is a best.pt" in one_line_exit(capsys, [f"--resume={tmp_path / 'old' / 'best.pt'}", "--max_iters=6"])
    assert snapshot(run) == before
    assert load(run / "last.pt")["saved_as"] == "last.pt" and load(run / "best.pt")["saved_as"] == "best.pt"


def test_init_from_starts_a_new_run_from_the_weights_only(run, camvid, tmp_path, capsys):
    new = tmp_path / "new"
    # lr 0: the trained parameters pass through one step unchanged
    assert Train_SegNet.main(args(camvid, new, f"--init_from={run / 'best.pt'}", "--lr=0.0", "--max_iters=1")) == 0
    assert f"model weights from {run / 'best.pt'}" in capsys.readouterr().out
    best, got = load(run / "best.pt"), load(new / "last.pt")
    assert got["iter"] == 1 and got["config"]["init_from"] == str(run / "best.pt")
    params = {n for n, _ in Train_SegNet.build_model(got["config"], init=False).named_parameters()}
    assert all(torch.equal(got["model"][n], best["model"][n]) for n in params)
    assert len(got["optimizer"]["state"]) == len(params)  # a fresh optimizer: one step's momentum only
    # a model the weights do not fit is one line, and no folder is left
    err = one_line_exit(capsys, args(camvid, tmp_path / "other", f"--init_from={run / 'best.pt'}",
                                     "--model=segnet_basic"))
    assert (f"--init_from={run / 'best.pt'} holds a segnet_lite with 11 classes, but this run trains a "
            f"segnet_basic with 11 classes") in err
    assert not (tmp_path / "other").exists()


# -- what a resume may change ---------------------------------------------------------------
def test_best_metric_cannot_change_on_resume(run, capsys):
    before = snapshot(run)
    err = one_line_exit(capsys, [f"--resume={run / 'last.pt'}", "--max_iters=6", "--best_metric=global_accuracy"])
    assert "--best_metric=global_accuracy cannot change when resuming (the checkpoint has 'mean_iou')" in err
    assert "best_metric" not in Train_SegNet.RESUME_MAY_CHANGE and snapshot(run) == before


def test_init_from_with_resume_is_one_line_saying_they_do_different_things(run, capsys):
    before, last, best = snapshot(run), run / "last.pt", run / "best.pt"
    err = one_line_exit(capsys, [f"--resume={last}", f"--init_from={best}", "--max_iters=6"])
    assert err == (f"error: --init_from={best} starts a new run from a file's weights, and --resume={last} "
                   f"continues its run with the weights it has: give one of them (--init_from with a new --out_dir)")
    assert snapshot(run) == before


@pytest.mark.parametrize("max_iters", [1, 2])
def test_max_iters_already_reached_is_one_line_and_rewrites_nothing(run, capsys, max_iters):
    before = snapshot(run)
    err = one_line_exit(capsys, [f"--resume={run / 'last.pt'}", f"--max_iters={max_iters}", "--num_workers=0"])
    assert err == (f"error: --max_iters={max_iters}: {run / 'last.pt'} is already at iteration 2 and its run is "
                   f"complete; nothing was changed (to train on, pass a --max_iters above 2)")
    assert snapshot(run) == before  # config.json, last.pt, metrics.csv: same bytes, same times


def make_folder_data(root, classes):
    """A folder data set (docs/own_data.md) of 3 classes in the order `classes`, a training split only
    (trained with --eval_interval=0: no validation to spend time on)."""
    rng = np.random.default_rng(0)
    for split in ("train",):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            mask = rng.integers(0, 3, HW).astype(np.uint8)
            Image.fromarray(mask * 60 + 20).convert("RGB").save(root / "images" / split / f"im{i}.png")
            Image.fromarray(mask).save(root / "labels" / split / f"im{i}.png")
    (root / "dataset.json").write_text(json.dumps({"classes": classes}))
    return root


def test_class_names_must_match_the_checkpoints_on_resume(tmp_path, capsys):
    data = make_folder_data(tmp_path / "d", ["bg", "road", "car"])
    out = tmp_path / "run"
    assert Train_SegNet.main(args(data, out, "--dataset=folder", "--max_iters=1")) == 0
    before = snapshot(out)
    for i, (names, says) in enumerate([(["car", "road", "bg"], "names the same classes in another order"),
                                       (["sky", "road", "car"], "names 3 classes (sky, road, car)")]):
        other = make_folder_data(tmp_path / f"other{i}", names)
        err = one_line_exit(capsys, [f"--resume={out / 'last.pt'}", f"--data_root={other}", "--max_iters=2"])
        assert err.startswith(f"error: --resume={out / 'last.pt'} predicts 3 classes (bg, road, car) but the data "
                              f"at {other} {says}; the class names and their order must match")
    # the stored root itself, its dataset.json edited, is checked too
    (data / "dataset.json").write_text(json.dumps({"classes": ["car", "road", "bg"]}))
    assert "another order" in one_line_exit(capsys, [f"--resume={out / 'last.pt'}", "--max_iters=2"])
    assert {k: v[0] for k, v in snapshot(out).items()} == {k: v[0] for k, v in before.items()}
    assert load(out / "last.pt")["class_names"] == ["bg", "road", "car"]
    # a new run from these weights may train other classes, but not these in another order
    err = one_line_exit(capsys, args(tmp_path / "other0", tmp_path / "new", "--dataset=folder",
                                     f"--init_from={out / 'last.pt'}"))
    assert f"--init_from={out / 'last.pt'} predicts 3 classes (bg, road, car) but this run's data names the " \
           f"same classes in another order" in err and not (tmp_path / "new").exists()


# -- start-up checks ------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_a_device_these_scripts_do_not_run_on_is_one_line_before_any_folder(camvid, tmp_path, capsys, device):
    err = one_line_exit(capsys, args(camvid, tmp_path / "run", f"--device={device}"))
    assert err == (f"error: device={device}: {device} is not a device these scripts run on; expected auto, cpu "
                   f"or cuda[:N]")
    assert not (tmp_path / "run").exists()


def oom_at_step(monkeypatch, nth):
    real, calls = engine.train_step, {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == nth:
            raise RuntimeError(OOM)
        return real(*a, **k)
    monkeypatch.setattr(engine, "train_step", step)


def test_out_of_memory_in_training_is_one_line_and_keeps_the_progress(camvid, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        oom_at_step(m, 1)  # at the first step: nothing to keep, no folder left
        err = one_line_exit(capsys, args(camvid, tmp_path / "new"))
    assert err.startswith(f"error: out of memory training batches of 2 images of 16x24 on cpu ({OOM}")
    assert err.endswith("nothing was saved; start again with a smaller --batch_size or --height/--width")
    assert not (tmp_path / "new").exists()
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        oom_at_step(m, 3)
        err = one_line_exit(capsys, args(camvid, out, "--max_iters=3"))
    last = out / "last.pt"
    assert f"saved {last} at iteration 2;" in err and f"--resume={last}" in err and f"--init_from={last}" in err
    assert load(last)["iter"] == 2 and not (out / "best.pt").exists()


def test_out_of_memory_in_the_final_evaluation_keeps_last_pt_and_the_resume_runs_it_again(camvid, tmp_path,
                                                                                         monkeypatch, capsys):
    out = tmp_path / "run"

    def final_evaluation(run):
        raise RuntimeError(OOM)
    with monkeypatch.context() as m:
        m.setattr(Train_SegNet, "final_evaluation", final_evaluation)
        err = one_line_exit(capsys, args(camvid, out))
    last = out / "last.pt"
    assert err == (f"error: out of memory in the final evaluation ({OOM}); free memory, then --resume={last} "
                   f"runs it again")
    assert load(last)["iter"] == 2
    assert Train_SegNet.main([f"--resume={last}"]) == 0  # the evaluation it had left
    assert "final" in capsys.readouterr().out


def test_out_of_memory_in_evaluation_is_one_line(run, tmp_path, monkeypatch, capsys):
    def evaluate(*a, **k):
        raise RuntimeError(OOM)
    monkeypatch.setattr(Evaluate_SegNet, "evaluate", evaluate)
    err = one_line_exit(capsys, [str(run / "last.pt"), f"--out_dir={tmp_path / 'eval'}", "--num_workers=0",
                                 "--batch_size=3"], main=Evaluate_SegNet.main)
    assert err == f"error: out of memory evaluating batches of 3 images ({OOM}); lower --batch_size"


def test_ctrl_c_in_the_pre_flight_check_is_one_line_and_leaves_no_folder(camvid, tmp_path, monkeypatch, capsys):
    def check_dataset(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(training_data, "check_dataset", check_dataset)
    try:
        err = one_line_exit(capsys, args(camvid, tmp_path / "run"), status=130)
    except KeyboardInterrupt:  # escaped as a traceback would; caught, so it does not end the test session
        pytest.fail("Ctrl-C in the pre-flight check reached the top as KeyboardInterrupt")
    assert err == "error: interrupted before the first iteration: nothing was saved"
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_before_its_first_last_pt_says_how_to_go_on(camvid, tmp_path, monkeypatch, capsys):
    """The disk fills at the first last.pt (best.pt was saved just before): each piece of advice
    leads somewhere, never back to itself."""
    out, real_write = tmp_path / "run", files._write

    def write(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}").split("/")[-1]
        if name.startswith(".segnet-tmp-") and name.endswith("-last.pt"):  # files.temp_name of last.pt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)
    with monkeypatch.context() as m:
        m.setattr(files, "_write", write)
        assert "no space left" in one_line_exit(capsys, args(camvid, out, "--eval_interval=1"))
    assert (out / "best.pt").exists() and not (out / "last.pt").exists()
    # the same command again: the folder holds a run, which only best.pt can start from
    err = one_line_exit(capsys, args(camvid, out))
    assert f"train on from its best.pt (saved before any last.pt) with --init_from={out / 'best.pt'}" in err
    assert "--resume" not in err
    err = one_line_exit(capsys, [f"--resume={out / 'last.pt'}"])
    assert "holds only best.pt" in err and f"--init_from={out / 'best.pt'}" in err and "--overwrite=true" in err
