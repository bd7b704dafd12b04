"""docs/own_data.md quotes the messages the code prints, word for word: each case below makes one
happen (through `python -m segnet.data check`, training or evaluation, as a user meets it), writes
what differs from case to case as the page's capitals (DIR, IMAGE, N, ...), and the result must be
one of the page's quoted messages; every message the page quotes is made by some case."""
import json
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from segnet.data import Folder
from segnet.data.__main__ import main as data_main
from segnet.errors import run_cli
from test_folder import make_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ["--model=segnet_lite", "--init_encoder=none", "--height=16", "--width=24", "--batch_size=2",
         "--num_workers=0", "--max_iters=1"]


def documented():
    """The messages quoted in the first column of docs/own_data.md's table of errors."""
    text = (REPO / "docs" / "own_data.md").read_text()
    table = text[text.index("## What each error means"):text.index("## Three conversions")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {m for row in rows for m in re.findall(r"`([^`]+)`", row.split("` | ")[0] + "`")}


def printed(capsys, main, argv):
    """What a command printed as its problems (check's list) or its one-line error, without `error: `."""
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(main, argv)
    captured = capsys.readouterr()
    if "\nproblems (" in captured.out:
        return [line[2:] for line in captured.out.split("\nproblems (")[1].splitlines()[1:]]
    return [captured.err.strip().splitlines()[-1].removeprefix("error: ")]


def check(capsys, root):
    return printed(capsys, data_main, ["check", "--dataset=folder", f"--data_root={root}"])


def written_as_the_page(message, *replacements):
    """`message` with each (regex, placeholder) replaced, in order."""
    for pattern, placeholder in replacements:
        message = re.sub(pattern, lambda m: placeholder, message)
    return message


def path(p):
    return re.escape(str(p))


@pytest.fixture
def data(tmp_path):
    """A folder data set (3 classes bg, road, car; im1 is 36x20, a JPEG), its folders."""
    root = make_folder(tmp_path / "d", splits=("train", "test"))
    return root, root / "images" / "train", root / "labels" / "train"


def file_cases(capsys, root, images, labels):
    """(message, as the page writes it) for each problem `check` names in a file."""
    img, lab = images / "im1.jpg", labels / "im1.png"
    cases = []

    def case(break_it, restore, *replacements):
        saved = {p: p.read_bytes() for p in (img, lab)}
        break_it()
        (message,) = check(capsys, root)
        cases.append(written_as_the_page(message, *replacements))
        restore()
        for p, content in saved.items():
            p.write_bytes(content)

    nothing = (lambda: None)
    case(lambda: lab.unlink(), nothing, (path(img), "IMAGE"), (path(labels / "im1"), "DIR/labels/SPLIT/NAME"))
    case(lambda: img.unlink(), nothing, (path(lab), "LABEL"), (path(images / "im1"), "DIR/images/SPLIT/NAME"))
    case(lambda: img.rename(images / "im1.webp"), lambda: (images / "im1.webp").unlink(), (path(lab), "LABEL"),
         (path(images / "im1"), "DIR/images/SPLIT/NAME"), ("im1.webp", "NAME.webp"))  # a type not read
    case(lambda: shutil.copy(img, images / "im1.png"), lambda: (images / "im1.png").unlink(),
         (path(images / "im1.png"), "IMAGE"), (path(img), "OTHER"))
    case(lambda: shutil.copy(img, labels / "im1.jpg"), lambda: (labels / "im1.jpg").unlink(),
         (path(labels / "im1.jpg"), "LABEL"))
    case(lambda: Image.new("L", (7, 5)).save(lab), nothing,
         (path(img), "IMAGE"), (path(lab), "LABEL"), ("36x20", "WxH"), ("7x5", "wxh"))
    case(lambda: Image.fromarray(np.full((20, 36), 9, np.uint8)).save(lab), nothing,
         (path(lab), "LABEL"), ("value 9", "value V"), (r"0\.\.2", "0..C-1"), ("the 3 classes", "the C classes"),
         ("720 pixels", "N pixels"))
    case(lambda: img.write_text("not an image"), nothing, (path(img), "IMAGE"), (r" \(.*\);", " (WHY);"))
    return cases


def test_every_message_the_page_quotes_is_the_one_printed(data, tmp_path, capsys):
    root, images, labels = data
    made = file_cases(capsys, root, images, labels)

    # RGB masks: one unknown colour, then a few (the JPEG hint)
    rgb = make_folder(tmp_path / "rgb", form="rgb", splits=("train",))
    mask = rgb / "labels" / "train" / "im1.png"
    colours = np.array(Image.open(mask).convert("RGB"))
    colours[:2, :3] = (7, 7, 7)
    Image.fromarray(colours).save(mask)
    one = [(path(mask), "LABEL"), (path(rgb), "DIR"), (r"\(7, 7, 7\)", "(r, g, b)"), (r"\(6 pixels", "(N pixels")]
    made += [written_as_the_page(m, *one) for m in check(capsys, rgb)]
    colours[5, 5] = (8, 8, 9)
    Image.fromarray(colours).save(mask)
    made += [written_as_the_page(m, *one, ("1 more unknown colours, 1 pixels", "M more unknown colours, P pixels"))
             for m in check(capsys, rgb)]
    # a label that does not decode, as the data set reads it
    label0 = (labels / "im0.png").read_bytes()
    (labels / "im0.png").write_text("not a PNG")
    with pytest.raises(ValueError) as e:
        Folder(root, "train").load_mask(0)
    made.append(written_as_the_page(str(e.value), (path(labels / "im0.png"), "LABEL"), (r": .*$", ": WHY")))
    (labels / "im0.png").write_bytes(label0)

    # dataset.json
    meta = root / "dataset.json"
    good = meta.read_text()
    at_dir = (path(root), "DIR")
    for content, *replacements in [
            (None,),
            ("{", (r" \(.*\)$", " (WHY)")),
            (json.dumps({"classes": ["bg", "road", "car"], "colours": []}), ("'colours'", "'KEY'")),
            (json.dumps({"classes": ["bg", "road", "car"], "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]}),)]:
        meta.unlink() if content is None else meta.write_text(content)
        made += [written_as_the_page(m, at_dir, *replacements) for m in check(capsys, root)]
    meta.write_text(good)

    # training: no val split; a --num_classes the data does not have
    run = tmp_path / "run"
    args = ["--dataset=folder", f"--data_root={root}", f"--out_dir={run}", *TRAIN]
    made += [written_as_the_page(m, at_dir) for m in printed(capsys, Train_SegNet.main, args)]
    made += [written_as_the_page(m, at_dir, ("=5", "=N"), ("has 3 classes", "has M classes"))
             for m in printed(capsys, Train_SegNet.main, args + ["--num_classes=5", "--eval_interval=0"])]

    # evaluation: data with another class count, or the same classes in another order
    assert Train_SegNet.main(args + ["--eval_interval=0"]) == 0
    ckpt, other = run / "last.pt", make_folder(tmp_path / "other", splits=("test",))
    theirs = [(path(ckpt), "CKPT"), (path(other), "DIR"), (r"3 classes \(bg, road, car\)", "N classes (a, b, c)")]
    (other / "dataset.json").write_text(json.dumps({"classes": ["bg", "road", "car", "sky"]}))
    made += [written_as_the_page(m, *theirs, ("has 4$", "has M")) for m in printed(
        capsys, Evaluate_SegNet.main, [str(ckpt), "--dataset=folder", f"--data_root={other}", "--num_workers=0"])]
    (other / "dataset.json").write_text(json.dumps({"classes": ["car", "road", "bg"]}))
    made += [written_as_the_page(m, *theirs) for m in printed(
        capsys, Evaluate_SegNet.main, [str(ckpt), "--dataset=folder", f"--data_root={other}", "--num_workers=0"])]

    quoted = documented()
    assert [m for m in made if m not in quoted] == []  # printed, as the page writes it, but not quoted there
    assert sorted(quoted - set(made)) == []             # quoted on the page, but printed by no case
