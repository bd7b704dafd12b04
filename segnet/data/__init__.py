"""Data sets: CamVid (both layouts), multi-digit MNIST and your own folder (segnet/data/folder.py),
all meeting one contract (segnet/data/base.py) and registered by name (segnet/data/registry.py);
evaluation's views of them (views.py) and the training order (sampling.py).

    python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]
    python -m segnet.data check --dataset=folder --data_root=DIR

A data set of your own kind is one module ending in `register(name, DatasetEntry(...))`
(docs/own_data.md, "A new kind of data set").
"""
from .base import SPLITS, VOID, DatasetEntry, MissingSplit, SegmentationDataset
from .camvid import CamVid
from .folder import Folder
from .mnist import MultiDigitMNIST
from .registry import DATASETS, DEFAULT_DATASET, DatasetNames, entry, palette_for, published_rows, register
from .sampling import EpochBatches, Seeded, SeededSampler
from .views import Labelled, UnlabelledImages, collate, collate_images

__all__ = ["CamVid", "MultiDigitMNIST", "Folder", "DATASETS", "DEFAULT_DATASET", "DatasetEntry", "DatasetNames",
           "register", "entry", "published_rows", "palette_for", "SegmentationDataset", "MissingSplit", "VOID",
           "SPLITS", "Labelled", "UnlabelledImages", "collate", "collate_images", "SeededSampler", "EpochBatches",
           "Seeded"]
