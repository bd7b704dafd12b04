"""Every long stage shows its progress (segnet/progress.py): a tqdm bar named after the stage on a
terminal; in a log (stderr not a terminal, or CI set) exactly one line per stage, with its name,
its count and its time, never a line per update."""
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segnet import engine, evaluation, progress
from segnet.class_weights import compute_class_weights
from segnet.data import Folder
from segnet.data.__main__ import main as data_main
from segnet.errors import read_errors

LINE = r"\d+\.\d s"  # the stage's seconds


def tiny_folder(root, n=3):
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(root / "images" / split / f"{i}.png")
            Image.fromarray(np.eye(8, 12, dtype=np.uint8)).save(root / "labels" / split / f"{i}.png")
    (root / "dataset.json").write_text(json.dumps({"classes": ["a", "b"]}))
    return root


def batches(n=5, batch=2):
    """(images, masks) batches of n images in all; a list, so no size is known beforehand."""
    return [(torch.rand(min(batch, n - b), 3, 8, 12), torch.zeros(min(batch, n - b), 8, 12, dtype=torch.long))
            for b in range(0, n, batch)]


def stderr_is(monkeypatch, terminal):
    """capsys's stderr (the test's own: fixtures see another) as a terminal or a log file, CI unset."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)


def test_check_prints_one_line_per_split_in_a_log(tmp_path, monkeypatch, capsys):
    stderr_is(monkeypatch, False)
    root = tiny_folder(tmp_path / "d")
    assert data_main(["check", "--dataset=folder", f"--data_root={root}"]) == 0
    captured = capsys.readouterr()
    assert re.fullmatch(f"check train: 3 images in {LINE}\ncheck val: 3 images in {LINE}\n", captured.err), \
        captured.err
    assert "check train" not in captured.out  # the report (stdout) stays as it was


def test_every_stage_prints_its_one_line_in_a_log(tmp_path, monkeypatch, capsys):
    stderr_is(monkeypatch, False)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
    engine.recompute_bn_statistics(model, batches(), torch.device("cpu"), torch.float32)
    m = evaluation.evaluate(model, batches(), 2, torch.device("cpu"), torch.float32)
    evaluation.evaluate(model, batches(3), 2, torch.device("cpu"), torch.float32, stage="evaluation test")
    compute_class_weights("median_frequency", Folder(tiny_folder(tmp_path / "d"), "train"))
    assert m["num_images"] == 5
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(LINE, "T", line) for line in lines] == [
        "BN recompute: 5 images in T", "validation: 5 images in T", "evaluation test: 3 images in T",
        "class weights: 3 labels in T"]


def test_ci_set_means_a_log_even_on_a_terminal(monkeypatch, capsys):
    stderr_is(monkeypatch, True)
    monkeypatch.setenv("CI", "true")
    assert list(progress.track(range(4), "stage")) == [0, 1, 2, 3]
    assert re.fullmatch(f"stage: 4 images in {LINE}\n", capsys.readouterr().err)


def test_a_terminal_gets_a_tqdm_bar_named_after_the_stage(tmp_path, monkeypatch, capsys):
    stderr_is(monkeypatch, True)
    made = []

    class Recorded(progress.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(progress, "tqdm", Recorded)
    root = tiny_folder(tmp_path / "d")
    assert data_main(["check", "--dataset=folder", f"--data_root={root}"]) == 0
    err = capsys.readouterr().err
    assert [(bar.desc, bar.total, bar.n, bar.unit) for bar in made] == [("check train", 3, 3, "image"),
                                                                       ("check val", 3, 3, "image")]
    assert "check train: 100%" in err and "3/3" in err and not re.search(f"images in {LINE}", err)
    # evaluation's bar knows how many images its loader (wrapped as the scripts wrap it) reads
    images = torch.utils.data.TensorDataset(torch.rand(5, 3, 8, 12), torch.zeros(5, 8, 12, dtype=torch.long))
    loader = read_errors(torch.utils.data.DataLoader(images, batch_size=2))
    evaluation.evaluate(torch.nn.Conv2d(3, 2, 1), loader, 2, torch.device("cpu"), torch.float32, stage="predict")
    assert (made[-1].desc, made[-1].total, made[-1].n) == ("predict", 5, 5)


def test_a_stage_stopped_by_an_error_prints_no_line_and_closes_its_source(monkeypatch, capsys):
    stderr_is(monkeypatch, False)
    closed = []

    def source():
        try:
            yield from range(10)
        finally:
            closed.append(True)

    with pytest.raises(ValueError):
        for i in progress.track(source(), "stage"):
            if i == 3:
                raise ValueError("a broken file")
    assert capsys.readouterr().err == "" and closed == [True]
    stages = progress.track(source(), "early")
    next(stages)
    stages.close()
    assert closed == [True, True] and capsys.readouterr().err == ""


def test_other_ranks_show_nothing(monkeypatch, capsys):
    stderr_is(monkeypatch, True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    with progress.Stage("validation", 4) as stage:
        stage.update(4)
    monkeypatch.setenv("CI", "1")
    with progress.Stage("validation", 4) as stage:
        stage.update(4)
    assert capsys.readouterr().err == ""
