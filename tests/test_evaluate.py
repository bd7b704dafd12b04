import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from helpers import cli_error, make_tutorial_camvid
from segnet.checkpoint import save_checkpoint
from segnet.errors import UserError
from segnet.evaluation import Batch, tally

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1", "per_class",
        "confusion_matrix", "num_images", "split", "checkpoint"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SegNet-Lite trained for a few iterations on a tiny CamVid, with and without dropout."""
    tmp = tmp_path_factory.mktemp("eval")
    root = make_tutorial_camvid(tmp / "CamVid", hw=(24, 40))
    out = {}
    for bayes in (False, True):
        run = tmp / f"run{int(bayes)}"
        assert Train_SegNet.main([f"--data_root={root}", f"--out_dir={run}", "--model=segnet_lite",
                                  "--init_encoder=none", "--height=24", "--width=40", "--batch_size=2",
                                  "--num_workers=0", "--bn_recompute=false", "--eval_interval=0",
                                  "--max_iters=6", "--lr=0.01", f"--bayesian={bayes}"]) == 0
        out[bayes] = run / "last.pt"
    return root, out


def test_metrics_json_predictions_and_pictures(trained, tmp_path, capsys):
    root, ckpts = trained
    out = tmp_path / "e"
    assert Evaluate_SegNet.main([str(ckpts[False]), f"--out_dir={out}", "--num_workers=0", "--collages=2"]) == 0
    # fp32 by default on every machine (training's dtype=auto would be bf16 on AMX / AVX512-BF16 CPUs)
    assert "cpu, float32 (no autocast); outputs in" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(m) and m["num_images"] == 4 and m["split"] == "test"
    assert set(m["per_class"]) == {"Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence",
                                   "Car", "Pedestrian", "Bicyclist"}
    assert set(m["per_class"]["Road"]) == {"accuracy", "iou", "boundary_f1"}
    assert m["per_class"]["Bicyclist"]["iou"] is None  # absent from the ground truth: reported so
    for k in ("global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1"):
        assert 0 <= m[k] <= 1
    # the metrics agree with the written predictions, recomputed here from the files
    cm = np.zeros((11, 11), np.int64)
    for f in sorted((root / "testannot").glob("*.png")):
        gt = np.asarray(Image.open(f)).astype(np.int64)
        pred = np.asarray(Image.open(out / "predictions" / f.name)).astype(np.int64)
        assert pred.shape == gt.shape == (24, 40) and pred.max() < 11
        keep = gt != 11
        cm += np.bincount(11 * gt[keep] + pred[keep], minlength=121).reshape(11, 11)
        assert np.asarray(Image.open(out / "colour" / f.name)).shape == (24, 40, 3)
    assert cm.tolist() == m["confusion_matrix"]
    assert abs(m["global_accuracy"] - np.trace(cm) / cm.sum()) < 1e-12
    assert len(list((out / "collages").glob("*.png"))) == 2 and (out / "confusion_matrix.png").exists()


def test_predictions_are_scored_at_label_resolution(trained, tmp_path):
    """A model run at a smaller size still writes label-size predictions (bilinear logits)."""
    root, ckpts = trained
    ck = torch.load(ckpts[False], weights_only=True)
    ck["config"]["height"], ck["config"]["width"] = 12, 20
    small = tmp_path / "small.pt"
    save_checkpoint(small, {k: v for k, v in ck.items() if k != "kind"})
    out = tmp_path / "e"
    assert Evaluate_SegNet.main([str(small), f"--data_root={root}", f"--out_dir={out}", "--num_workers=0",
                                 "--boundary=false"]) == 0
    pred = np.asarray(Image.open(next((out / "predictions").glob("*.png"))))
    assert pred.shape == (24, 40)
    assert json.loads((out / "metrics.json").read_text())["boundary_f1"] is None


def test_mc_dropout_uncertainty_only_with_dropout(trained, tmp_path):
    _, ckpts = trained
    levels = {}
    for bayes, ck in ckpts.items():
        out = tmp_path / f"mc{int(bayes)}"
        assert Evaluate_SegNet.main([str(ck), f"--out_dir={out}", "--num_workers=0", "--mc_samples=4",
                                     "--boundary=false"]) == 0
        maps = sorted((out / "uncertainty").glob("*.png"))
        assert len(maps) == 4
        levels[bayes] = max(int(np.asarray(Image.open(p)).max()) for p in maps)
    assert levels[False] == 0 and levels[True] > 0


def test_predict_mode(trained, tmp_path):
    _, ckpts = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(folder / "a.jpg")
    Image.fromarray(np.full((24, 40, 3), 200, np.uint8)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "p"
    assert Evaluate_SegNet.main([str(ckpts[False]), f"--images={folder}", f"--out_dir={out}", "--num_workers=0",
                                 "--mc_samples=2"]) == 0  # two sizes in one batch
    assert sorted(p.name for p in (out / "predictions").glob("*.png")) == ["a.png", "b.png"]
    assert np.asarray(Image.open(out / "predictions" / "a.png")).shape == (30, 50)  # at the input's size
    assert np.asarray(Image.open(out / "colour" / "b.png")).shape == (24, 40, 3)
    assert np.asarray(Image.open(out / "uncertainty" / "a.png")).shape == (30, 50, 3)
    assert not (out / "metrics.json").exists()


def test_predict_mode_writes_collages_skips_unreadable_photos_and_keeps_names_apart(trained, tmp_path, capsys):
    """input | prediction collages at each photo's size; a photo that does not decode is one line
    and the rest are predicted; a.jpg and a.png both get their own outputs."""
    _, ckpts = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(folder / "a.jpg")
    Image.fromarray(np.full((24, 40, 3), 200, np.uint8)).save(folder / "a.png")
    good = (folder / "a.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 2])  # a JPEG cut short
    (folder / "fake.png").write_text("not an image")
    out = tmp_path / "p"
    capsys.readouterr()
    assert Evaluate_SegNet.main([str(ckpts[False]), f"--images={folder}", f"--out_dir={out}", "--num_workers=0",
                                 "--batch_size=4"]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {folder / 'broken.jpg'}: not a readable image" in printed
    assert f"skipped {folder / 'fake.png'}: not a readable image" in printed
    assert printed.count("keep it in their outputs' names") == 1
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["a.jpg.png", "a.png.png"]
    for name, (h, w) in (("a.jpg.png", (30, 50)), ("a.png.png", (24, 40))):
        collage = np.asarray(Image.open(out / "collages" / name))
        assert collage.shape == (h, 2 * w + 4, 3)  # input | 4 px gap | prediction
        np.testing.assert_array_equal(collage[:, w + 4:], np.asarray(Image.open(out / "colour" / name)))


def test_bad_inputs_one_line(trained, tmp_path, capsys):
    root, ckpts = trained
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    ck = torch.load(ckpts[False], weights_only=True)
    ck["class_names"] = [f"c{i}" for i in range(11)]
    save_checkpoint(tmp_path / "other_classes.pt", {k: v for k, v in ck.items() if k != "kind"})
    cases = [
        ([str(tmp_path / "missing.pt")], "not found"),
        ([str(tmp_path / "corrupt.pt")], "cannot be read"),
        ([str(tmp_path / "foreign.pt")], "not a SegNet checkpoint"),
        ([str(tmp_path / "other_classes.pt"), f"--data_root={root}"], "but the camvid data at"),
        ([str(ckpts[False]), f"--data_root={tmp_path / 'nodata'}"], "does not exist"),
        ([str(ckpts[False]), f"--images={tmp_path / 'empty'}"], "no images found"),
        ([str(ckpts[False]), "--split=dev"], "--split=dev: expected one of"),
        ([str(ckpts[False]), "--batch_size=0"], "--batch_size=0: expected a value >= 1"),
        ([], "usage: python Evaluate_SegNet.py CHECKPOINT"),
    ]
    for i, (args, message) in enumerate(cases):
        if i == 0:  # one in a process of its own, as a user runs it
            r = subprocess.run([sys.executable, "Evaluate_SegNet.py", *args, "--num_workers=0"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
            code, err = r.returncode, r.stderr
        else:  # the rest in this one (a second each, not a torch import each)
            code, err = cli_error(capsys, Evaluate_SegNet.main, [*args, "--num_workers=0"])
        assert code == 2, (args, err)
        *stages, last = err.strip().splitlines()  # a stage done before it says so in one line (a log)
        assert message in last and "Traceback" not in err, err
        assert all(re.fullmatch(r"[\w ]+: \d+ images in \d+\.\d s", line) for line in stages), err
    with pytest.raises(UserError):
        Evaluate_SegNet.main([str(tmp_path / "missing.pt")])


def test_tally_takes_predictions_from_any_source(trained, tmp_path):
    """The one evaluation loop scores predictions read from files exactly as it scores the model's."""
    root, ckpts = trained
    out = tmp_path / "e"
    assert Evaluate_SegNet.main([str(ckpts[False]), f"--out_dir={out}", "--num_workers=0", "--boundary=false"]) == 0
    from_model = json.loads((out / "metrics.json").read_text())
    batches, seen = [], []
    for f in sorted((root / "testannot").glob("*.png")):
        gt = torch.from_numpy(np.asarray(Image.open(f)).astype(np.int64))
        gt[gt == 11] = 255
        pred = torch.from_numpy(np.asarray(Image.open(out / "predictions" / f.name)).astype(np.int64))
        batches.append(Batch(None, gt[None], [pred], None))
    m = tally(iter(batches), 11, torch.device("cpu"), on_batch=lambda b, first: seen.append(first))
    assert seen == [0, 1, 2, 3] and m["num_images"] == 4
    assert m["confusion_matrix"] == from_model["confusion_matrix"]
    assert m["mean_iou"] == pytest.approx(from_model["mean_iou"], abs=1e-12)
    perfect = tally([Batch(None, b.masks, [b.masks[0] % 255], None) for b in batches], 11,  # void (top row) -> sky
                    torch.device("cpu"), boundary=True)
    assert perfect["global_accuracy"] == perfect["mean_iou"] == 1.0
    assert 0.9 < perfect["boundary_f1"] <= 1.0  # BF only differs where void borders a class


def test_model_from_checkpoint_one_message_for_a_misfit(trained, tmp_path):
    from segnet.checkpoint import model_from_checkpoint
    _, ckpts = trained
    model, ck = model_from_checkpoint(ckpts[False])
    assert not model.training and ck["iter"] == 6
    assert torch.equal(model.state_dict()["classifier.weight"], ck["model"]["classifier.weight"])
    ck["model"]["classifier.weight"] = ck["model"]["classifier.weight"][:5]
    save_checkpoint(tmp_path / "misfit.pt", {k: v for k, v in ck.items() if k != "kind"})
    with pytest.raises(ValueError, match="misfit.pt does not fit this model: .*classifier.weight"):
        model_from_checkpoint(tmp_path / "misfit.pt")
    r = subprocess.run([sys.executable, "Evaluate_SegNet.py", str(tmp_path / "misfit.pt"), "--num_workers=0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: checkpoint ") and "does not fit" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_a_checkpoint_without_a_newer_key_takes_the_training_default(trained, tmp_path):
    """Library code reads every config key directly: a v1 checkpoint written before a key existed
    gets the value the training default had then (checkpoint.migrate_v1)."""
    from segnet.checkpoint import model_from_checkpoint
    ckpt = torch.load(trained[1][False], weights_only=True)
    ckpt["kind"] = "segnet-checkpoint-v1"
    for key in ("dropout", "bayesian", "hflip"):
        del ckpt["config"][key]
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt)
    model, loaded = model_from_checkpoint(old)
    assert {k: loaded["config"][k] for k in ("dropout", "bayesian", "hflip")} == \
        {k: Train_SegNet.DEFAULTS[k] for k in ("dropout", "bayesian", "hflip")}
    assert Evaluate_SegNet.main([str(old), f"--out_dir={tmp_path / 'e'}", "--num_workers=0", "--collages=0"]) == 0
