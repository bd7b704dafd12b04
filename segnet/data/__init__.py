"""Data sets: CamVid (both layouts) and multi-digit MNIST.

    python -m segnet.data download [--layout tutorial|original] [--root data/CamVid]
"""
from .camvid import CamVid, VOID
from .mnist import MultiDigitMNIST

__all__ = ["CamVid", "MultiDigitMNIST", "VOID"]
