"""Data sets: CamVid (both layouts), multi-digit MNIST and your own folder (segnet/data/folder.py),
all meeting one contract (segnet/data/base.py); evaluation's views of them.

    python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]
    python -m segnet.data check --dataset=folder --data_root=DIR
"""
from . import camvid, folder, mnist
from .base import SPLITS, VOID, DatasetEntry, MissingSplit, SegmentationDataset
from .camvid import CamVid
from .evaluation import ImageFolder, Labelled, collate, collate_images
from .folder import Folder
from .mnist import MultiDigitMNIST

# --dataset=NAME -> how to build, fetch and count the classes of it; a new data set is one module
# meeting base.py's contract plus one line here
DATASETS = {"camvid": camvid.ENTRY, "multidigit_mnist": mnist.ENTRY, "folder": folder.ENTRY}

__all__ = ["CamVid", "MultiDigitMNIST", "Folder", "DATASETS", "DatasetEntry", "SegmentationDataset", "MissingSplit",
           "VOID", "SPLITS", "Labelled", "ImageFolder", "collate", "collate_images"]
