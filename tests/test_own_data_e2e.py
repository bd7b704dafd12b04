"""Your own data, end to end, with the commands docs/own_data.md writes (read from the page):
`check`, training, evaluation on the test split and predict mode on a folder of photos, for four
tiny folder data sets of the kinds people bring:

- rgb:   4 coarse classes with RGB colour masks, JPEG images of mixed sizes;
- voc:   Pascal VOC palette PNGs with void 255 borders, file names with spaces, ß/Ü, 街景, # and ();
- ade:   ADE20K-style labels with reduce_zero_label (0 is "other");
- modes: images in the modes L, RGBA, P, I;16 and CMYK mixed together.

The model and the image size are tiny and training runs 2 iterations: what is checked is that
each command takes the data as the page says and writes what it promises (class names in
metrics.json and results.md, one prediction PNG of class indices per photo, at the photo's size).
"""
import json
import pathlib
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from segnet.data.__main__ import main as data_main
from segnet.data.base import default_palette

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = [(24, 32), (32, 48), (48, 64)]  # (height, width), mixed within every split
# what only a test adds to the page's commands: a tiny model and image size, 2 iterations, no worker
# processes, the run folder under tmp_path and no ImageNet download
TINY = ["--model=segnet_lite", "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2",
        "--max_iters=2", "--num_workers=0"]
MAINS = {"python -m segnet.data": data_main, "python Train_SegNet.py": Train_SegNet.main,
         "python Evaluate_SegNet.py": Evaluate_SegNet.main}


def documented_commands():
    """The first command block of docs/own_data.md: check, train, evaluate, predict (export aside)."""
    text = (REPO / "docs" / "own_data.md").read_text()
    block = re.search(r"```\n(python .*?)```", text, re.S).group(1)
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines()]
    assert [" ".join(c[:3]) for c in commands[:2]] == ["python -m segnet.data",
                                                        "python Train_SegNet.py --dataset=folder"]
    return [c for c in commands if not c[:3] == ["python", "-m", "segnet.export"]]


def regions(h, w, n, seed):
    """An (h, w) map of class indices 0..n-1: horizontal bands and a block, different per image."""
    rng = np.random.default_rng(seed)
    m = (np.arange(h)[:, None] * n // h).repeat(w, 1).astype(np.uint8)
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    m[y:y + 8, x:x + 8] = rng.integers(0, n)
    return m


def photo(m, palette):
    return (np.array(palette, np.uint8)[m] // 2 + 50).astype(np.uint8)


def write_split(root, split, names, make_pair):
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i, name in enumerate(names):
        make_pair(root / "images" / split, root / "labels" / split, name, i)


def rgb_kind(root):
    palette = [[0, 0, 0], [128, 0, 0], [128, 64, 128], [0, 128, 0]]
    (root / "dataset.json").write_text(json.dumps({"classes": ["background", "building", "road", "vegetation"],
                                                   "palette": palette, "ignore_colors": [[255, 255, 255]]}))

    def pair(images, labels, name, i):
        h, w = SIZES[i % 3]
        m = regions(h, w, 4, i)
        mask = np.array(palette, np.uint8)[m]
        mask[0, :5] = 255  # void
        Image.fromarray(photo(m, palette)).save(images / f"{name}.jpg", quality=90)
        Image.fromarray(mask).save(labels / f"{name}.png")
    return pair, ["background", "building", "road", "vegetation"], ".jpg"


def voc_kind(root):
    classes = ["background", "aeroplane", "bicycle"]
    (root / "dataset.json").write_text(json.dumps({"classes": classes}))  # VOC's palette is the default one
    voc = np.array(default_palette(256), np.uint8)

    def pair(images, labels, name, i):
        h, w = SIZES[i % 3]
        m = regions(h, w, 3, i)
        m[:, w // 2] = 255  # VOC's void object borders
        label = Image.fromarray(m, "P")
        label.putpalette(voc.ravel().tolist())
        Image.fromarray(photo(np.where(m == 255, 0, m), voc[:3])).save(images / f"{name}.jpg", quality=90)
        label.save(labels / f"{name}.png")
    return pair, classes, ".jpg"


VOC_NAMES = ["street 01", "Straße Ü", "街景 #3 (a)"]


def ade_kind(root):
    classes = ["wall", "building", "sky"]
    (root / "dataset.json").write_text(json.dumps({"classes": classes, "reduce_zero_label": True}))

    def pair(images, labels, name, i):
        h, w = SIZES[i % 3]
        m = regions(h, w, 4, i)  # 0 "other" (void), 1..3 the classes
        Image.fromarray(photo(m, default_palette(4))).save(images / f"{name}.png")
        Image.fromarray(m).save(labels / f"{name}.png")
    return pair, classes, ".png"


MODES = ["L", "RGBA", "P", "I;16", "CMYK"]


def in_mode(rgb, mode):
    """An image of `rgb`'s content in `mode`, and the file suffix that holds it."""
    im = Image.fromarray(rgb)
    if mode == "I;16":
        return Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257), ".png"
    return im.convert(mode), ".tif" if mode == "CMYK" else ".png"


def modes_kind(root):
    classes = ["ground", "object"]
    (root / "dataset.json").write_text(json.dumps({"classes": classes}))

    def pair(images, labels, name, i):
        h, w = SIZES[i % 3]
        m = regions(h, w, 2, i)
        im, suffix = in_mode(photo(m, [[20, 20, 20], [230, 200, 90]]), MODES[i % len(MODES)])
        im.save(images / f"{name}{suffix}")
        Image.fromarray(m).save(labels / f"{name}.png")
    return pair, classes, None


KINDS = {"rgb": rgb_kind, "voc": voc_kind, "ade": ade_kind, "modes": modes_kind}


def file_name(kind, split, i):
    if kind != "voc":
        return f"{split}_{i:02d}"
    return VOC_NAMES[i] if split == "test" else f"{VOC_NAMES[i % 3]} {i}"


def build(kind, root):
    """The data set in the folder layout (train 5, val 3, test 3 images) and a folder of photos
    without labels, each photo in its own size; returns (class names, {photo name: (w, h)}, the
    test split's file names)."""
    root.mkdir()
    make_pair, classes, photo_suffix = KINDS[kind](root)
    names = {split: [file_name(kind, split, i) for i in range(n)]
             for split, n in (("train", 5), ("val", 3), ("test", 3))}
    for split, split_names in names.items():
        write_split(root, split, split_names, make_pair)
    photos, sizes = root.parent / "photos", {}
    photos.mkdir()
    for i, (h, w) in enumerate([(30, 44), (52, 40)]):
        rgb = photo(regions(h, w, 2, 10 + i), [[30, 30, 30], [200, 180, 60]])
        if kind == "modes":
            im, suffix = in_mode(rgb, MODES[(i + 3) % len(MODES)])  # I;16 and CMYK
        else:
            im, suffix = Image.fromarray(rgb), photo_suffix
        name = f"{VOC_NAMES[i]}" if kind == "voc" else f"photo {i}"
        im.save(photos / f"{name}{suffix}")
        sizes[name] = (w, h)
    return classes, sizes, names["test"]


@pytest.mark.slow  # a training, an evaluation and a prediction per kind: 4-8 s each on 2 cores
@pytest.mark.parametrize("kind", list(KINDS))
def test_own_data_from_check_to_predict(kind, tmp_path, capsys):
    root, run = tmp_path / "DIR", tmp_path / "run"
    classes, photo_sizes, test_names = build(kind, root)
    words = {"DIR": str(root), "checkpoints/RUN": str(run), "photos/": str(tmp_path / "photos")}
    check, train, evaluate, predict = documented_commands()
    for argv in (check, train, evaluate, predict):  # the page's words, with this test's folders
        for i, word in enumerate(argv):
            for placeholder, path in words.items():
                argv[i] = argv[i].replace(placeholder, path)

    def run_command(argv, *extra):
        main = next(f for prefix, f in MAINS.items() if " ".join(argv).startswith(prefix))
        start = 3 if argv[1] == "-m" else 2
        assert main([*argv[start:], *extra]) == 0, argv
        return capsys.readouterr().out

    out = run_command(check)
    assert f"folder data set at {root}: {len(classes)} classes ({', '.join(classes)}), void 255" in out
    assert "train: 5 images" in out and "val: 3 images" in out and "test: 3 images" in out
    assert "no problems found" in out and "sizes (width x height): " in out

    run_command(train, *TINY, f"--out_dir={run}")
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert list(json.loads((run / "class_weights.json").read_text())["weights"]) == classes

    run_command(evaluate, "--num_workers=0")
    out_dir = run / "eval-test"  # Evaluate_SegNet's default: beside the checkpoint
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and list(metrics["per_class"]) == classes
    results = (out_dir / "results.md").read_text()
    assert all(f"| {name} |" in results for name in classes)
    for name, (h, w) in zip(test_names, SIZES):  # scored at each label's own size, named after the image
        assert Image.open(out_dir / "predictions" / f"{name}.png").size == (w, h)

    out = run_command(predict, "--num_workers=0")
    assert f"predicting the checkpoint's {len(classes)} classes: {', '.join(classes)}" in out
    written = sorted(p.name for p in (run / "predict" / "predictions").iterdir())
    assert written == sorted(f"{name}.png" for name in photo_sizes)
    for name, size in photo_sizes.items():
        pred = Image.open(run / "predict" / "predictions" / f"{name}.png")
        # class indices, 0-based as the model's outputs (reduce_zero_label's c + 1 is not written back)
        assert pred.size == size and pred.mode == "L" and np.asarray(pred).max() < len(classes)
        colour = np.asarray(Image.open(run / "predict" / "colour" / f"{name}.png").convert("RGB")).reshape(-1, 3)
        palette = torch.load(run / "best.pt", weights_only=True)["palette"]
        assert {tuple(c) for c in np.unique(colour, axis=0)} <= {tuple(c) for c in palette}

