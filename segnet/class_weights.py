"""Class weights for the cross-entropy loss (Sec. 3.3 of the paper: median frequency balancing).

    w = compute_class_weights("paper")                     # SegNet-Tutorial's CamVid-11 weights
    w = compute_class_weights("median_frequency", dataset)  # computed from a training split, cached
    resolve_method("auto", segnet.data.entry(name), 5)      # -> that data set's method for auto
"""
import hashlib
import json
import math
import os
import pathlib

import numpy as np
import torch

from .files import replace_text
from .progress import track


# auto: the data set's registry entry decides (paper for CamVid-11, else median_frequency)
METHODS = ("auto", "paper", "median_frequency", "none")

# SegNet-Tutorial Models/segnet_train.prototxt, loss_param class_weighting, in CamVid-11 order
# (Sky, Building, Pole, Road, Sidewalk, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist).
PAPER_CAMVID11 = (0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614)


def resolve_method(method, entry, num_classes):
    """`auto`: what the data set's registry entry (segnet.data.DatasetEntry) says for this class
    count (the paper's weights for CamVid's 11 classes, median frequency for anything else)."""
    if method != "auto":
        return method
    return entry.class_weights(num_classes)


def weights_record(method, weights, class_names):
    """What a run stores of its weights (class_weights.json, the checkpoint):
    {"method": ..., "weights": {class name: weight}}, weights None for method none."""
    return {"method": method, "weights": None if weights is None else
            {name: float(w) for name, w in zip(class_names, weights.tolist())}}


def weights_from_record(record, class_names):
    """The weight tensor (or None) a record of weights_record holds, in `class_names` order."""
    if record["weights"] is None:
        return None
    return torch.tensor([record["weights"][name] for name in class_names], dtype=torch.float32)


class PixelCounts:
    """What median frequency balancing counts over a split's masks: per class, its labelled pixels
    (`pixels`) and the labelled pixels of the images where it appears (`image_pixels`)."""

    def __init__(self, num_classes, void=255):
        self.num_classes, self.void = num_classes, void
        self.pixels = np.zeros(num_classes, np.int64)
        self.image_pixels = np.zeros(num_classes, np.int64)

    def add(self, mask):
        """Count one mask (void pixels count nowhere); returns how many of its pixels are labelled."""
        labelled = np.asarray(mask).ravel()
        labelled = labelled[labelled != self.void]
        counts = np.bincount(labelled, minlength=self.num_classes)[:self.num_classes]
        self.pixels += counts
        self.image_pixels[counts > 0] += labelled.size
        return labelled.size

    def weights(self):
        """Eigen & Fergus (ICCV 2015): freq(c) = pixels of c / pixels of the images where c appears;
        weight(c) = median(freq) / freq(c); an absent class gets weight 0."""
        present = self.pixels > 0
        freq = np.where(present, self.pixels / np.maximum(self.image_pixels, 1), 0.0)
        med = np.median(freq[present]) if present.any() else 0.0
        return np.where(present, med / np.where(present, freq, 1.0), 0.0)


def median_frequency(masks, num_classes, void=255):
    """Median frequency balancing (PixelCounts.weights) over `masks`."""
    counts = PixelCounts(num_classes, void)
    for m in masks:
        counts.add(m)
    return counts.weights()


def _dataset_key(dataset):
    h = hashlib.sha1(f"{dataset.num_classes}:{dataset.label_settings}".encode())
    for _, mask_path in dataset.files:
        st = os.stat(mask_path)
        h.update(f"{mask_path}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()[:16]


def read_cache(path, num_classes):
    """(the cached weights, None), or (None, why the file at `path` cannot be used: it is not JSON,
    not num_classes finite weights >= 0); (None, None) when there is no file."""
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return None, f"cannot be read ({e.__class__.__name__})"
    ok = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok or len(values) != num_classes:
        return None, f"does not hold {num_classes} weights"
    if not all(math.isfinite(v) and v >= 0 for v in values):
        return None, "holds a weight that is negative or not finite"
    return torch.tensor(values, dtype=torch.float32), None


def compute_class_weights(method, dataset=None, num_classes=11, cache_dir=None):
    """A float tensor of per-class weights, or None for "none"."""
    if method == "none":
        return None
    if method == "paper":
        if num_classes != 11:
            raise ValueError(f"class_weights=paper holds the CamVid-11 weights, but num_classes={num_classes}; "
                             f"use class_weights=median_frequency")
        return torch.tensor(PAPER_CAMVID11)
    if method != "median_frequency":
        raise ValueError(f"class_weights={method!r}: expected one of {METHODS}")
    if dataset is None:
        raise ValueError("median_frequency needs the training dataset")
    cache = None
    if cache_dir is not None and dataset.files:  # keyed by the label files and label_settings
        cache = pathlib.Path(cache_dir) / f"median_frequency_{_dataset_key(dataset)}.json"
        cached, why = read_cache(cache, dataset.num_classes)
        if cached is not None:
            return cached
        if why:  # a damaged cache costs one recount, and is rewritten below
            print(f"note: class-weight cache {cache} {why}; counting the labels again and rewriting it")
    masks = track((dataset.load_mask(i) for i in range(len(dataset))), "class weights", len(dataset), unit="label")
    w = median_frequency(masks, dataset.num_classes)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            replace_text(cache, json.dumps(w.tolist()))
        except OSError:
            pass  # a read-only place only costs recomputing next time
    return torch.tensor(w, dtype=torch.float32)
