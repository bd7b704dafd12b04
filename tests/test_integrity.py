"""What is read is what it claims to be, and what is wrong with it is one line: the shipped weights'
sha256 on every load, malformed checkpoints, oversized images, dataset.json, the class-weight
cache, all-void labels, results.md's table (docs/reliability.md, "Integrity" and "One-line errors")."""
import hashlib
import json
import pathlib
import re
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import hubconf
import Train_SegNet
from segnet import checkpoint
from segnet.checkpoint import load_checkpoint, save_checkpoint
from segnet.data.__main__ import main as run_data
from segnet.data.base import read_image
from segnet.errors import run_cli
from segnet.export import main as export_main
from segnet.model import SegNet
from segnet.weights import main as weights_main

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "segnet_basic_camvid.pt"


def one_line(capsys, main, argv):
    """The command's error line, after checking it is one line, no traceback, exit status 2 (the
    stages' progress lines may stand before it: stderr is not a terminal here)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    lines = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and lines[-1].startswith("error: ") and "Traceback" not in "\n".join(lines), lines
    assert all(" in " in line and not line.startswith("error") for line in lines[:-1]), lines
    return lines[-1] + "\n"


# -- integrity: the shipped weights are checked on every load -------------------------------------
def test_the_sha256_list_names_the_shipped_file_with_its_hash():
    listed = dict(line.split()[::-1] for line in (REPO / "weights" / "files.sha256").read_text().splitlines())
    assert listed == {SHIPPED.name: hashlib.sha256(SHIPPED.read_bytes()).hexdigest()}
    assert f"`{listed[SHIPPED.name]}`" in (REPO / "README.md").read_text()


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """The shipped file and its sha256 list in a repo-like weights/ folder the loaders treat as the repo's."""
    folder = tmp_path / "repo" / "weights"
    folder.mkdir(parents=True)
    shutil.copy(SHIPPED, folder)
    shutil.copy(REPO / "weights" / "files.sha256", folder)
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", folder)
    monkeypatch.setitem(hubconf.SHIPPED, "segnet_basic", folder / SHIPPED.name)
    return folder / SHIPPED.name


def flip_a_weight(path):
    """One byte flipped inside the classifier's weight tensor: torch.load reads it without a word."""
    data = bytearray(path.read_bytes())
    tensor = torch.load(path, weights_only=True)["model"]["classifier.weight"]
    at = bytes(data).find(tensor.numpy().tobytes())
    assert at > 0
    data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)["model"]["classifier.weight"]
    assert not torch.equal(changed, tensor)  # the change reaches the model unless the hash stops it


def test_a_changed_shipped_file_is_refused_by_the_hub_evaluation_export_and_weights(weights_copy, tmp_path, capsys):
    model = hubconf.segnet_basic(pretrained=True)  # the untouched copy loads
    assert model.class_names[0] == "Sky"
    flip_a_weight(weights_copy)
    found = hashlib.sha256(weights_copy.read_bytes()).hexdigest()
    expected = (REPO / "weights" / "files.sha256").read_text().split()[0]
    message = (f"{weights_copy} is not the file this repo ships: its sha256 is {found}, files.sha256 lists "
               f"{expected}; restore it (git checkout -- weights/{SHIPPED.name}, or clone the repo again), or put "
               f"a file of your own outside weights/")
    with pytest.raises(ValueError) as e:
        hubconf.segnet_basic(pretrained=True)
    assert str(e.value) == message
    for main, argv in ((Evaluate_SegNet.main, [str(weights_copy), f"--out_dir={tmp_path / 'eval'}"]),
                       (export_main, [str(weights_copy), f"--out={tmp_path / 'm.onnx'}"])):
        assert one_line(capsys, main, argv) == f"error: {message}\n"
    assert not (tmp_path / "eval").exists() and not (tmp_path / "m.onnx").exists()


def test_a_copy_outside_the_weights_folder_is_the_users_own(weights_copy, tmp_path):
    mine = tmp_path / SHIPPED.name  # same name, another folder: not in the list
    shutil.copy(weights_copy, mine)
    flip_a_weight(mine)
    assert load_checkpoint(mine, kinds=(checkpoint.WEIGHTS_KIND,))["class_names"][0] == "Sky"
    link = weights_copy.parent / "link.pt"  # a link into weights/ is judged by where it leads
    link.symlink_to(mine)
    assert checkpoint.listed_sha256(link) is None and checkpoint.listed_sha256(weights_copy) is not None


def test_the_list_is_read_afresh_on_every_load(weights_copy):
    load_checkpoint(weights_copy, kinds=(checkpoint.WEIGHTS_KIND,))
    listing = weights_copy.parent / "files.sha256"
    listing.write_text(f"{'0' * 64}  {SHIPPED.name}\n")
    with pytest.raises(ValueError, match="files.sha256 lists 0000"):
        load_checkpoint(weights_copy, kinds=(checkpoint.WEIGHTS_KIND,))


# -- a checkpoint's contents are checked once, at load --------------------------------------------
def lite_checkpoint(path, **changes):
    """A SegNet-Lite checkpoint of 3 classes, written as Train_SegNet.py writes one, with `changes`
    to its config (None removes the key); `changes["_drop"]` removes a top-level key."""
    drop = changes.pop("_drop", None)
    config = {"config": "camvid", **Train_SegNet.DEFAULTS, "model": "segnet_lite", "num_classes": 3,
              "init_encoder": "none", "height": 16, "width": 24}
    config = {k: v for k, v in {**config, **changes}.items() if v is not None}
    ck = {"model": SegNet(3, spec="segnet_lite").state_dict(), "config": config, "class_names": ["a", "b", "c"],
          "iter": 1, "best_metric": 0.0, "optimizer": {}}
    ck.pop(drop, None)
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, ck)
    return path


@pytest.mark.parametrize("changes, said", [
    ({"height": "abc"}, "its config's height='abc' is not int"),
    ({"height": -5}, "its config's height=-5 is below 1"),
    ({"width": None}, "its config has no 'width'"),
    ({"dropout": float("nan")}, "its config's dropout=nan is not a number"),
    ({"bayesian": 1}, "its config's bayesian=1 is not bool"),
    ({"_drop": "config"}, "no 'config' dict"),
    ({"_drop": "model"}, "no 'model' dict"),
    ({"_drop": "class_names"}, "no 'class_names' list of strings"),
    ({"num_classes": 4}, "3 class names for num_classes=4"),
])
def test_a_malformed_checkpoint_is_one_line_naming_the_key(tmp_path, capsys, changes, said):
    path = lite_checkpoint(tmp_path / "run" / "last.pt", **changes)
    expected = f"error: checkpoint {path}: {said}; the file is damaged or was not written by this repo\n"
    for main, argv in ((Evaluate_SegNet.main, [str(path), f"--out_dir={tmp_path / 'eval'}"]),
                       (export_main, [str(path), f"--out={tmp_path / 'm.onnx'}"]),
                       (weights_main, [str(path), f"--out={tmp_path / 'w.pt'}"]),
                       (Train_SegNet.main, [f"--resume={path}"])):
        assert one_line(capsys, main, argv) == expected, main.__module__


def test_a_run_folder_or_a_torchscript_export_given_as_checkpoint_is_one_line_saying_what_it_is(tmp_path, capsys,
                                                                                               recwarn):
    run = tmp_path / "run"
    run.mkdir()
    scripted = tmp_path / "model.pt"  # what python -m segnet.export --format=torchscript writes
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 2, 1)), str(scripted))
    said = {run: f"error: checkpoint {run} is a folder, not a file: name the checkpoint in it, {run / 'last.pt'} "
                 f"(to resume) or {run / 'best.pt'}\n",
            scripted: f"error: {scripted} is a TorchScript export (python -m segnet.export), not a checkpoint: load "
                      f"it with torch.jit.load; expected last.pt or best.pt written by Train_SegNet.py\n"}
    for path, expected in said.items():
        for main, argv in ((Evaluate_SegNet.main, [str(path), f"--out_dir={tmp_path / 'eval'}"]),
                           (export_main, [str(path), f"--out={tmp_path / 'm.onnx'}"]),
                           (weights_main, [str(path), f"--out={tmp_path / 'w.pt'}"]),
                           (Train_SegNet.main, [f"--resume={path}"])):
            assert one_line(capsys, main, argv) == expected, main.__module__
    assert not [w for w in recwarn if "TorchScript" in str(w.message)]  # torch.load's warning is not shown


def test_a_v1_file_without_a_config_is_one_line(tmp_path):
    torch.save({"kind": "segnet-checkpoint-v1", "model": {}}, tmp_path / "v1.pt")
    with pytest.raises(ValueError, match=r"v1.pt: no 'config' dict;"):
        load_checkpoint(tmp_path / "v1.pt")


def test_segnet_weights_given_a_weights_file_says_so(tmp_path, capsys):
    err = one_line(capsys, weights_main, [str(SHIPPED), f"--out={tmp_path / 'w.pt'}"])
    assert err == (f"error: {SHIPPED} already is a weights file (written by python -m segnet.weights): evaluate or "
                   f"export it as it is; give a training checkpoint (RUN/best.pt) to make one\n")
    assert "resume" not in err and not (tmp_path / "w.pt").exists()


def test_the_hubs_missing_weights_advice_names_the_file_it_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(hubconf, "SHIPPED", {"segnet_basic": hubconf.HERE / "weights" / "gone.pt"})
    with pytest.raises(ValueError) as e:
        hubconf.segnet_basic(pretrained=True)
    assert "--out=weights/gone.pt" in str(e.value) and "segnet_basic.pt" not in str(e.value)


# -- data: oversized images, dataset.json, truncated JPEGs, all-void labels ------------------------
def make_folder(root, splits=("train", "val"), void=False):
    """A folder data set of two classes, two 16x24 pairs per split (JPEG images, index labels)."""
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["bg", "fg"]}))
    for split in splits:
        for sub in ("images", "labels"):
            (root / sub / split).mkdir(parents=True)
        for i in range(2):
            label = np.full((16, 24), 255, np.uint8) if void else np.zeros((16, 24), np.uint8)
            label[8:, :] = 255 if void else 1
            Image.fromarray(label * 100).convert("RGB").save(root / "images" / split / f"im{i}.jpg")
            Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
    return root


def png_claiming(path, width, height):
    """A PNG of a few bytes whose header says width x height (RGB): opening it allocates nothing."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


TRAIN = ["--dataset=folder", "--model=segnet_lite", "--init_encoder=none", "--height=16", "--width=24",
         "--batch_size=2", "--num_workers=0", "--max_iters=1", "--bn_recompute=false"]


def check_and_train(capsys, root, tmp_path):
    """check's and training's one-line errors on the folder data set at `root`."""
    check = one_line(capsys, run_data, ["check", "--dataset=folder", f"--data_root={root}"])
    train = one_line(capsys, Train_SegNet.main, [*TRAIN, f"--data_root={root}", f"--out_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "last.pt").exists()
    return check, train


@pytest.mark.parametrize("width, height", [(30000, 30000), (10000, 10000)])  # PIL: error at 2x its limit, warning at 1x
def test_an_image_over_the_pixel_limit_is_one_line_in_check_and_training(tmp_path, capsys, width, height):
    root = make_folder(tmp_path / "d")
    big = root / "images" / "train" / "im1.png"
    (root / "images" / "train" / "im1.jpg").unlink()
    png_claiming(big, width, height)
    size = f"{width}x{height}, " if width == 10000 else ""
    said = (f"{big} is {size}{width * height:,} pixels: more than the 89,478,485 pixels an image may have "
            f"(PIL's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS); resize it")
    check, train = check_and_train(capsys, root, tmp_path)
    assert check == f"error: 1 problem in {root}, the first: {said}\n"
    assert train == f"error: {said}\n"
    with pytest.raises(ValueError, match=re.escape(said)):
        read_image(big)  # predict mode and evaluation read through the same function


def test_a_deeply_nested_dataset_json_is_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    (root / "dataset.json").write_text("[" * 100000 + "]" * 100000)
    check, train = check_and_train(capsys, root, tmp_path)
    said = f"error: {root / 'dataset.json'} is not valid JSON (nested too deeply)\n"
    assert check == train == said


def test_a_truncated_jpeg_is_a_problem_in_check(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    jpeg = root / "images" / "train" / "im1.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 24, 3), np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])  # the header parses; the scan data is cut
    check, train = check_and_train(capsys, root, tmp_path)
    assert check.startswith(f"error: 1 problem in {root}, the first: {jpeg} is corrupt or not an image (")
    assert train.startswith(f"error: {jpeg} is corrupt or not an image (")


def test_all_void_labels_are_a_problem_in_check_and_training_refuses_them(tmp_path, capsys):
    root = make_folder(tmp_path / "d", void=True)
    check, train = check_and_train(capsys, root, tmp_path)
    said = (f"{root / 'labels' / 'train'}: every pixel of its 2 labels is void (255): nothing to learn from or "
            f"score; the labels do not hold the class indices (or colours) this data set expects")
    assert check == f"error: 2 problems in {root}, the first: {said}\n"
    assert train == f"error: {said}\n"
    out = capsys.readouterr().out
    assert "no problems found" not in out


def test_a_class_without_a_pixel_in_train_is_a_problem_in_check(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    for i in range(2):  # train: background only; val keeps both classes
        Image.fromarray(np.zeros((16, 24), np.uint8)).save(root / "labels" / "train" / f"im{i}.png")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(run_data, ["check", "--dataset=folder", f"--data_root={root}"])
    out, err = capsys.readouterr()
    said = (f"{root / 'labels' / 'train'}: no pixel of 1 of the 2 classes (fg) in its 2 labels: their "
            f"median-frequency weight is 0 and they are never learned")
    assert err.splitlines()[-1] == f"error: 1 problem in {root}, the first: {said}"  # after the stages' lines
    assert "median-frequency weights (train): bg 1.0000, fg 0.0000" in out


@pytest.mark.parametrize("content, why", [
    ("{not json", "cannot be read (JSONDecodeError)"),
    ("[" * 100000, "cannot be read (RecursionError)"),
    (json.dumps({"weights": [1, 2]}), "does not hold 2 weights"),
    ("[1.0]", "does not hold 2 weights"),
    ("[1.0, NaN]", "holds a weight that is negative or not finite"),
    ('[1.0, "x"]', "does not hold 2 weights"),
])
def test_a_damaged_class_weight_cache_is_noted_and_recounted(tmp_path, capsys, content, why):
    from segnet.class_weights import compute_class_weights
    from segnet.data import Folder
    train = Folder(make_folder(tmp_path / "d", splits=("train",)), "train")
    first = compute_class_weights("median_frequency", train, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").iterdir()
    good = cache.read_text()
    cache.write_text(content)
    capsys.readouterr()
    again = compute_class_weights("median_frequency", train, cache_dir=tmp_path / "cache")
    assert torch.equal(again, first) and cache.read_text() == good
    assert capsys.readouterr().out == (f"note: class-weight cache {cache} {why}; counting the labels again and "
                                       f"rewriting it\n")
    compute_class_weights("median_frequency", train, cache_dir=tmp_path / "cache")
    assert capsys.readouterr().out == ""  # the rewritten cache is used


# -- results.md stays a table ---------------------------------------------------------------------
def table_rows(text):
    """Each Markdown table row of `text` as its cells, unescaped (a `\\|` is a pipe inside a cell)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells, cell, chars = [], "", iter(line[1:])
        for c in chars:
            if c == "\\":
                cell += next(chars)
            elif c == "|":
                cells.append(cell.strip())
                cell = ""
            else:
                cell += c
        assert cell.strip() == "", line  # every row ends with a pipe
        rows.append(cells)
    return rows


def test_results_md_escapes_pipes_and_line_breaks_in_every_cell(tmp_path):
    from segnet.metrics import METRICS, PER_CLASS_METRICS
    from segnet.outputs import write_results_md
    names = ["sky|cloud", "road\nlane", "back\\slash|", "car"]
    result = {"iter": 3, "num_images": 2, "split": "test", "checkpoint": "run|x/last.pt",
              **{k.key: 0.5 for k in METRICS},
              "per_class": {n: {k.per_class: 0.25 for k in PER_CLASS_METRICS} for n in names}}
    config = {"model": "segnet|lite", "dataset": "folder", "height": 16, "width": 24}
    rows = [("published | row\nsplit", 80.0, 60.0, 50.0, None)]
    write_results_md(tmp_path / "results.md", result, config, rows, "python Evaluate_SegNet.py x", "cpu", 1.0)
    text = (tmp_path / "results.md").read_text()
    table = table_rows(text)
    assert [len(r) for r in table] == [len(METRICS) + 1] * 4 + [len(PER_CLASS_METRICS) + 1] * (2 + len(names))
    assert table[2][0].startswith("**ours**: segnet|lite, 16x24 input")
    assert table[3] == ["published | row split", "80.00", "60.00", "50.00", "-"]
    assert [r[0] for r in table[6:]] == ["sky|cloud", "road lane", "back\\slash|", "car"]
    assert "Checkpoint: `run|x/last.pt`" in text


def test_segnet_weights_says_when_the_file_it_wrote_needs_a_new_line_in_the_list(weights_copy, tmp_path, capsys):
    listing = weights_copy.parent / "files.sha256"
    listing.write_text(listing.read_text() + f"{'0' * 64}  new.pt\n")
    ckpt = lite_checkpoint(tmp_path / "run" / "last.pt")
    assert weights_main([str(ckpt), f"--out={weights_copy.parent / 'new.pt'}"]) == 0
    digest = hashlib.sha256((weights_copy.parent / "new.pt").read_bytes()).hexdigest()
    assert capsys.readouterr().out.splitlines()[-1] == (f"note: weights/files.sha256 lists sha256 {'0' * 64} for "
                                                        f"new.pt; put {digest} in its place (and in the README), "
                                                        f"docs/weights.md")


def test_every_image_the_package_reads_is_opened_through_open_image():
    """base.open_image holds the pixel limit; the bench's plain reference loop is the one exception."""
    opened = [p.relative_to(REPO).as_posix() for p in (REPO / "segnet").rglob("*.py")
              if "Image.open(" in p.read_text() and "bench" not in p.parts]
    assert opened == ["segnet/data/base.py"]
