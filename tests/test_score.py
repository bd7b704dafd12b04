"""Score mode: a folder of predicted label PNGs scored without a checkpoint, against metrics
computed here from the same files; bad folders are one-line errors naming the file.
Run: python -m pytest tests/test_score.py -q
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
from helpers import make_tutorial_camvid
from segnet.errors import run_cli
from segnet.metrics import ConfusionMatrix, boundary_f1_image
from segnet.bench.scoring import time_scoring, write_shifted_predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1", "per_class",
        "confusion_matrix", "num_images", "split", "checkpoint", "predictions"}


@pytest.fixture
def camvid(tmp_path):
    """Three 24x40 test labels (sky, road, a car, a little void) and their predictions shifted 2 px."""
    root = make_tutorial_camvid(tmp_path / "CamVid", sizes=(("test", 3),), hw=(24, 40))
    preds = tmp_path / "preds"
    assert write_shifted_predictions(root, "test", preds, shift=2) == 3
    return root, preds


def test_shifted_predictions_by_hand(camvid):
    root, preds = camvid
    gt = np.asarray(Image.open(root / "testannot" / "f000.png"))
    pred = np.asarray(Image.open(preds / "f000.png"))
    filled = np.where(gt == 11, 0, gt)  # void becomes class 0
    assert (pred[:, 2:] == filled[:, :-2]).all()
    assert (pred[:, 0] == filled[:, 0]).all() and (pred[:, 1] == filled[:, 0]).all()  # the gap repeats column 0


def test_score_mode_equals_metrics_of_the_files(camvid, tmp_path):
    root, preds = camvid
    out = tmp_path / "scores"
    assert Evaluate_SegNet.main([f"--predictions={preds}", f"--data_root={root}", f"--out_dir={out}",
                                 "--num_workers=0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(m) and m["checkpoint"] is None and m["num_images"] == 3 and m["split"] == "test"
    assert (out / "confusion_matrix.png").exists()
    cm, scores = ConfusionMatrix(11), []
    for f in sorted((root / "testannot").glob("*.png")):
        gt = torch.from_numpy(np.asarray(Image.open(f)).astype(np.int64))
        gt[gt == 11] = 255
        pred = torch.from_numpy(np.asarray(Image.open(preds / f.name)).astype(np.int64))
        cm.update(pred, gt)
        scores.append(boundary_f1_image(pred, gt, 11)[0])
    ref = cm.compute()
    assert m["confusion_matrix"] == ref["confusion_matrix"]
    for k in ("global_accuracy", "class_average_accuracy", "mean_iou"):
        assert m[k] == pytest.approx(ref[k])
    assert m["boundary_f1"] == pytest.approx(sum(scores) / 3) and 0 < m["boundary_f1"] < 1
    assert set(m["per_class"]["Car"]) == {"accuracy", "iou", "boundary_f1"}


def test_time_scoring(camvid):
    root, preds = camvid
    r = time_scoring(root, "test", shift=2)
    assert r["images"] == 3 and r["seconds"] > 0
    assert r["boundary_f1"] == pytest.approx(sum(
        boundary_f1_image(torch.from_numpy(np.asarray(Image.open(preds / f.name)).astype(np.int64)),
                          torch.from_numpy(np.where(np.asarray(Image.open(f)) == 11, 255,
                                                    np.asarray(Image.open(f))).astype(np.int64)), 11)[0]
        for f in sorted((root / "testannot").glob("*.png"))) / 3)


def _error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        run_cli(Evaluate_SegNet.main, argv)
    err = capsys.readouterr().err
    # the progress bar (stderr) may stand before it; the error itself is one line, the last
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert e.value.code == 2 and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum("error" in line for line in lines) == 1, err
    return lines[-1]


def test_bad_prediction_folders_one_line(camvid, tmp_path, capsys):
    root, preds = camvid
    base = [f"--predictions={preds}", f"--data_root={root}", f"--out_dir={tmp_path / 'o'}", "--num_workers=0"]
    (preds / "f001.png").rename(tmp_path / "f001.png")
    assert "prediction " + str(preds / "f001.png") + " is missing" in _error(capsys, base)
    (tmp_path / "f001.png").rename(preds / "f001.png")
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(preds / "zz.png")
    assert str(preds / "zz.png") + " has no test annotation" in _error(capsys, base)
    (preds / "zz.png").unlink()
    good = np.asarray(Image.open(preds / "f002.png"))
    Image.fromarray(good[:, :39]).save(preds / "f002.png")
    assert str(preds / "f002.png") + " is 39x24 but its annotation" in _error(capsys, base)
    bad = good.copy()
    bad[0, 0] = 11
    Image.fromarray(bad).save(preds / "f002.png")
    assert str(preds / "f002.png") + " holds class 11; expected class indices 0..10" in _error(capsys, base)
    Image.fromarray(np.stack([good] * 3, -1)).save(preds / "f002.png")
    assert "has 3 channels" in _error(capsys, base)
    assert "no such folder" in _error(capsys, [f"--predictions={tmp_path / 'nope'}", f"--data_root={root}"])
    assert "without a checkpoint; drop x.pt" in _error(capsys, ["x.pt", f"--predictions={preds}"])


def test_score_mode_error_from_the_command_line(camvid, tmp_path):
    root, preds = camvid
    (preds / "f000.png").unlink()
    r = subprocess.run([sys.executable, "Evaluate_SegNet.py", f"--predictions={preds}", f"--data_root={root}",
                        f"--out_dir={tmp_path / 'o'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert "f000.png is missing" in r.stderr


def test_score_mode_reads_the_training_default_folder(camvid, tmp_path, capsys, monkeypatch):
    """Without --data_root, score mode reads where Train_SegNet.py reads that data set by default."""
    root, preds = camvid
    assert Evaluate_SegNet.score_data({"dataset": "", "data_root": ""}) == ("camvid", "data/CamVid")
    assert Evaluate_SegNet.score_data({"dataset": "multidigit_mnist", "data_root": ""}) == \
        ("multidigit_mnist", "data/mnist")
    assert Evaluate_SegNet.score_data({"dataset": "folder", "data_root": str(root)}) == ("folder", str(root))
    assert "--dataset=folder has no default folder: pass --data_root=DIR" in \
        _error(capsys, [f"--predictions={preds}", "--dataset=folder"])
    (tmp_path / "data").mkdir()
    root.rename(tmp_path / "data" / "CamVid")
    monkeypatch.chdir(tmp_path)  # a user's repo root: data/CamVid
    out = tmp_path / "scored"
    assert Evaluate_SegNet.main([f"--predictions={preds}", f"--out_dir={out}", "--num_workers=0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 3
