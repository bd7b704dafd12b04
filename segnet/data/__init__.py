"""Data sets: CamVid (both layouts) and multi-digit MNIST; evaluation's views of them.

    python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]
"""
from .camvid import SPLITS, VOID, CamVid
from .evaluation import ImageFolder, Labelled, collate
from .mnist import MultiDigitMNIST

__all__ = ["CamVid", "MultiDigitMNIST", "VOID", "SPLITS", "Labelled", "ImageFolder", "collate"]
