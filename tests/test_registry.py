"""A data set registered from outside the package (this file alone) runs through every entry point:
`python -m segnet.data check`, training, evaluation, score mode and predict mode.
Run: python -m pytest tests/test_registry.py -q
"""
import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
import Train_SegNet
from segnet.data import DATASETS, DatasetEntry, MissingSplit, SegmentationDataset, register
from segnet.data.__main__ import main as data_main

NAMES = ("dark", "mid", "bright")
COLOURS = [(10, 20, 30), (120, 130, 140), (230, 240, 250)]
SIZES = {"train": 6, "val": 2, "test": 3}
HW = 16


class Toy(SegmentationDataset):
    """root/SPLIT/images/NAME.png + root/SPLIT/labels/NAME.png (class indices, void 255)."""

    class_names = NAMES
    palette = COLOURS

    def __init__(self, root, split, transforms=None):
        folder = pathlib.Path(root) / split
        if not folder.is_dir():
            raise MissingSplit(f"{folder} is missing")
        self.transforms, self.label_settings = transforms, "toy"
        self.files = [(str(p), str(folder / "labels" / p.name)) for p in sorted((folder / "images").glob("*.png"))]

    def load_mask(self, i):
        return np.asarray(Image.open(self.files[i][1]), np.uint8).copy()


def ensure_toy(root, download):
    if not (pathlib.Path(root) / "train").is_dir():
        raise FileNotFoundError(f"no toy data at {root}")


def make_toy(root, seed=0):
    """Learnable labels: the class is the brightness band of the pixel; a void corner."""
    rng = np.random.default_rng(seed)
    for split, n in SIZES.items():
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = rng.integers(0, 3, (HW // 4, HW // 4)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
            image = np.asarray(COLOURS, np.uint8)[label] + rng.integers(0, 8, (HW, HW, 3)).astype(np.uint8)
            label[:2, :2] = 255
            Image.fromarray(image).save(root / split / "images" / f"t{i:02d}.png")
            Image.fromarray(label).save(root / split / "labels" / f"t{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = make_toy(tmp_path_factory.mktemp("toy") / "data")
    register("toy", DatasetEntry(
        build=lambda root, split, num_classes, transforms, download: Toy(root, split, transforms),
        ensure=ensure_toy,
        num_classes=lambda root, requested: len(NAMES),
        default_root=str(root),
        split_sizes={"test": 4},  # one more than the folder holds: evaluation must say so
        class_weights=lambda num_classes: "median_frequency",
        class_names=NAMES,
        palette=lambda class_names: COLOURS,
        published={("segnet_lite", 3): [("Toy et al., Table 9", 50.0, 40.0, 30.0, None)]},
        title="toy data", expected="SPLIT/images/ + SPLIT/labels/",
        detect=lambda root: (pathlib.Path(root) / "train" / "images").is_dir(),
    ))
    yield root
    DATASETS.pop("toy")


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("toyrun") / "run"
    # --dataset=toy: the choices are read from the registry when the arguments are parsed
    assert Train_SegNet.main(["--dataset=toy", f"--data_root={toy}", f"--out_dir={run}", "--model=segnet_lite",
                              "--init_encoder=none", f"--height={HW}", f"--width={HW}", "--batch_size=2",
                              "--num_workers=0", "--bn_recompute=false", "--eval_interval=0",
                              "--max_iters=2", "--lr=0.01"]) == 0
    return run


def test_check_reads_the_registered_data_set(toy, capsys):
    assert data_main(["check", "--dataset=toy", f"--data_root={toy}"]) == 0
    out = capsys.readouterr().out
    assert f"toy data set at {toy}: 3 classes (dark, mid, bright), void 255" in out
    assert "train: 6 images" in out and "val: 2 images" in out and "test: 3 images" in out
    assert "sizes (width x height): 16x16 (6)" in out and "no problems found" in out


def test_training_stores_the_data_sets_names_palette_and_weights(trained):
    rows = (trained / "metrics.csv").read_text().splitlines()
    assert len(rows) >= 2
    weights = json.loads((trained / "class_weights.json").read_text())
    assert weights["method"] == "median_frequency"  # class_weights=auto: what the entry says
    assert list(weights["weights"]) == list(NAMES) and all(w > 0 for w in weights["weights"].values())
    ckpt = torch.load(trained / "last.pt", weights_only=True)
    assert list(ckpt["class_names"]) == list(NAMES) and [tuple(c) for c in ckpt["palette"]] == COLOURS
    assert ckpt["config"]["dataset"] == "toy" and ckpt["config"]["num_classes"] == 3


def test_evaluation_scores_the_test_split(toy, trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert Evaluate_SegNet.main([str(trained / "last.pt"), f"--out_dir={out}", "--num_workers=0",
                                 "--collages=1"]) == 0
    printed = capsys.readouterr().out
    assert "warning: scored 3 test images, but the toy test split has 4" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 3 and set(m["per_class"]) == set(NAMES)
    # global accuracy recomputed here from the written predictions and the labels
    right = total = 0
    for label in sorted((toy / "test" / "labels").glob("*.png")):
        gt = np.asarray(Image.open(label))
        pred = np.asarray(Image.open(out / "predictions" / label.name))
        assert pred.shape == gt.shape and pred.max() < 3
        keep = gt != 255
        right, total = right + int((pred[keep] == gt[keep]).sum()), total + int(keep.sum())
    assert m["global_accuracy"] == pytest.approx(right / total)
    assert "Toy et al., Table 9" in (out / "results.md").read_text()  # the entry's published row


def test_score_mode_reads_the_entrys_default_folder(toy, tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    right = total = 0
    for k, label in enumerate(sorted((toy / "test" / "labels").glob("*.png"))):
        gt = np.asarray(Image.open(label))
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        if k == 0:
            pred[:] = 2  # one image all "bright": the figures are not trivially 1
        Image.fromarray(pred).save(preds / label.name)
        keep = gt != 255
        right, total = right + int((pred[keep] == gt[keep]).sum()), total + int(keep.sum())
    out = tmp_path / "scored"
    # no --data_root: the registry entry's default_root
    assert Evaluate_SegNet.main([f"--predictions={preds}", "--dataset=toy", f"--out_dir={out}",
                                 "--num_workers=0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 3 and m["global_accuracy"] == pytest.approx(right / total)
    assert m["global_accuracy"] < 1


def test_predict_mode_colours_with_the_checkpoints_palette(toy, trained, tmp_path):
    out = tmp_path / "predict"
    assert Evaluate_SegNet.main([str(trained / "last.pt"), f"--images={toy / 'test' / 'images'}",
                                 f"--out_dir={out}", "--num_workers=0"]) == 0
    names = sorted(p.name for p in (toy / "test" / "images").glob("*.png"))
    assert sorted(p.name for p in (out / "predictions").glob("*.png")) == names
    for name in names:
        pred = np.asarray(Image.open(out / "predictions" / name))
        assert pred.shape == (HW, HW) and pred.max() < 3
        colours = {tuple(c) for c in np.asarray(Image.open(out / "colour" / name)).reshape(-1, 3).tolist()}
        assert colours <= set(COLOURS)


def test_register_refuses_what_is_not_an_entry():
    with pytest.raises(TypeError, match="needs a segnet.data.DatasetEntry"):
        register("bad", {"build": None})
    with pytest.raises(ValueError, match="non-empty string"):
        register("", DATASETS["folder"])
