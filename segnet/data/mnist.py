"""Multi-digit MNIST for SegNet-Lite: 64x64 images holding a few handwritten digits, 11 classes.

Each pixel is background (0) or the digit 0-9 it belongs to (1-10). `MultiDigitMNIST(root, split)`
reads whichever of two sources `root` holds:

1. The reference's own batches: `batchNNNNN.mat` (train) and `testsetNNN.mat` (test), each with
   `imgMat` (H x W x 3 x B, float in [0, 1]) and `semanticMaskMat` (H x W x B, 0-10). Items run
   through the files in sorted name order, then through each batch in order. Needs scipy.
2. MNIST idx files (`t10k-images-idx3-ubyte[.gz]` and friends, in `root` or `root/MNIST/raw/`, the
   layout `torchvision.datasets.MNIST` downloads). Images are composed on the fly, deterministically
   from (seed, split, index): 1-3 digits pasted at random positions fully inside a 64x64 canvas,
   never sharing an inked pixel (so every label is unambiguous).
   Train and test draw from disjoint digit pools. With both MNIST sets present, train digits come
   from the 60,000-digit training set and test digits from the 10,000-digit test set; with only one
   set present, its first 80% of digits (8,000 of t10k) form the train pool and the last 20%
   (2,000) the test pool.

If `root` holds both sources, the .mat batches win: they are the reference's exact data. Each
source is one class (`ReferenceBatches`, `ComposedDigits`); `MultiDigitMNIST(root, split)` makes
the one that `root` holds. Both meet base.py's contract: the transforms get uint8 images, `files`
are (image source, label source) pairs. Reading never downloads: the registry entry's `ensure`
fetches the MNIST idx files (`--download=true`).

    python -c "from segnet.data import MultiDigitMNIST; print(len(MultiDigitMNIST('data/mnist')))"
"""
import gzip
import json
import os
import re

import numpy as np
import torch

from ..files import download_target
from .base import DatasetEntry, SegmentationDataset, default_palette


CLASS_NAMES = ["background"] + [str(d) for d in range(10)]
CANVAS = 64  # the reference's image side
DEFAULT_SIZE = {"train": 10_000, "test": 2_000}  # composed images per split when size is None
PLACEMENT_TRIES = 25  # random positions tried per digit before overlapping ink is allowed
TRAIN_FRACTION = 0.8  # share of a lone MNIST set that becomes the train pool (8,000 of t10k)

_MAT_PATTERN = {"train": re.compile(r"^batch\d+\.mat$"), "test": re.compile(r"^testset\d+\.mat$")}
_IDX_NAMES = {  # MNIST set -> (images, labels), file names as MNIST publishes them
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SPLIT_ID = {"train": 0, "test": 1}  # part of each item's RNG seed, so the splits differ
_MANUAL_DOWNLOAD = (
    "download t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (and, for the full train pool, "
    "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz) from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ into {raw}"
)


class MultiDigitMNIST(SegmentationDataset):
    """Multi-digit MNIST segmentation: `ds[i]` is (image float32 (3, H, W) in [0, 1], mask int64 (H, W)).

    `MultiDigitMNIST(root, split, ...)` is a ReferenceBatches when root holds the reference's .mat
    batches, else a ComposedDigits (MNIST idx files, directly or in MNIST/raw/).
    split: "train" or "test".
    transforms: optional `transforms(image, mask) -> (image, mask)`, called with a uint8
        tv_tensors.Image and a tv_tensors.Mask, as every data set calls them.
    seed, size, digits_per_image, ink_threshold: how images are composed from idx files (ignored
    for .mat batches, except `size`, which keeps only the first `size` items there).
    """

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    palette = default_palette(len(CLASS_NAMES))
    source = ""

    def __new__(cls, *args, **kwargs):
        if cls is MultiDigitMNIST:  # the source root holds decides the class; unpickling names it
            root = os.fspath(args[0] if args else kwargs["root"])
            cls = ReferenceBatches if any(_find_mats(root).values()) else ComposedDigits
        return super().__new__(cls)

    def __init__(self, root, split="train", transforms=None, seed=0, size=None, digits_per_image=(1, 3),
                 ink_threshold=0.5):
        if split not in _SPLIT_ID:
            raise ValueError(f"split must be 'train' or 'test' for multi-digit MNIST, got {split!r}")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive number of images, got {size!r}")
        self.root, self.split, self.transforms = os.fspath(root), split, transforms

    def item_files(self):
        return []  # composed in memory: the sources are checked as they load

    def item_name(self, i):
        return f"{i:05d}.png"

    def load_image(self, i):
        """The (H, W, 3) uint8 image of item i, before any transform."""
        return self.load_item(i)[0]

    def load_mask(self, i):
        """The (H, W) uint8 mask of item i (0 background, 1-10 the digits), before any transform."""
        return self.load_item(i)[1]

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return super().__getitem__(i % len(self))


class ReferenceBatches(MultiDigitMNIST):
    """The reference's own batches (module docstring, source 1); `files` are (batch, batch) pairs,
    each .mat file holding both the images and the masks."""

    source = "mat"

    def __init__(self, root, split="train", transforms=None, size=None, **ignored):
        super().__init__(root, split, transforms, size=size)
        mats = _find_mats(self.root)[split]
        if not mats:
            want = "batchNNNNN.mat" if split == "train" else "testsetNNN.mat"
            raise FileNotFoundError(f"no {split} batches in {self.root}: expected files named {want}")
        self.files = [(path, path) for path in mats]
        self._index = []  # item -> (file number, position in its batch)
        for f, path in enumerate(mats):
            self._index += [(f, b) for b in range(_mat_batch_size(path))]
        if size is not None:
            if size > len(self._index):
                raise ValueError(f"size={size} but the {split} batches in {self.root} hold only {len(self._index)} images")
            self._index = self._index[:size]
        self.label_settings = json.dumps(["mat", len(self._index)])
        self._cached = (None, None, None)  # (file number, images, masks): one open file at a time

    def __len__(self):
        return len(self._index)

    def load_item(self, i):
        f, b = self._index[i % len(self)]
        if self._cached[0] != f:
            self._cached = (f, *_load_mat(self.files[f][0]))
        _, images, masks = self._cached
        image = torch.from_numpy(np.ascontiguousarray(images[..., b], dtype=np.float32))  # (H, W, 3) in [0, 1]
        return (image * 255).round().byte().numpy(), masks[..., b].astype(np.uint8)

    def __getstate__(self):
        state = self.__dict__.copy()  # DataLoader workers re-open files themselves
        state["_cached"] = (None, None, None)
        return state


class ComposedDigits(MultiDigitMNIST):
    """Images composed from MNIST idx files (module docstring, source 2); `files` is the one
    (images file, labels file) pair the digits come from."""

    source = "idx"

    def __init__(self, root, split="train", transforms=None, seed=0, size=None, digits_per_image=(1, 3),
                 ink_threshold=0.5):
        super().__init__(root, split, transforms, size=size)
        self.seed = int(seed)
        lo, hi = digits_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f"digits_per_image must be (min, max) with 1 <= min <= max, got {digits_per_image!r}")
        self.digits_per_image = (int(lo), int(hi))
        if not 0.0 <= ink_threshold < 1.0:
            raise ValueError(f"ink_threshold must be in [0, 1), got {ink_threshold!r}")
        self.ink_threshold = float(ink_threshold)
        idx = _find_idx(self.root)
        if idx is None:
            raise FileNotFoundError(_no_data(self.root))
        if len(idx) == 2:  # the full MNIST: its own train / test sets are the pools
            name = "train" if self.split == "train" else "t10k"
        else:
            name = next(iter(idx))
        images_path, labels_path = idx[name]
        images, labels = _read_idx(images_path), _read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{images_path} / {labels_path}: expected an N x rows x cols image file and an N label file, "
                             f"got shapes {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{images_path} holds {len(images)} digits but {labels_path} holds {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{labels_path}: labels must be digits 0-9, found {labels.max()}")
        if max(images.shape[1:]) > CANVAS:
            raise ValueError(f"{images_path}: digits of {images.shape[1:]} pixels do not fit a {CANVAS}x{CANVAS} canvas")
        n = len(images)
        if len(idx) == 2:
            lo, hi = 0, n
        else:  # one MNIST set only: split its digits into disjoint train / test pools
            cut = int(round(n * TRAIN_FRACTION))
            lo, hi = (0, cut) if self.split == "train" else (cut, n)
        if hi - lo < self.digits_per_image[1]:
            raise ValueError(f"{images_path}: the {self.split} pool holds {hi - lo} digits, fewer than "
                             f"the {self.digits_per_image[1]} an image may need")
        self.files = [(images_path, labels_path)]
        self.pool = (lo, hi)  # digits [lo, hi) of the images file are this split's pool
        self._digits, self._labels = images, labels.astype(np.int64)
        self._size = DEFAULT_SIZE[self.split] if size is None else int(size)
        # the masks follow the composition and the digits' ink as well as the label file
        st = os.stat(images_path)
        self.label_settings = json.dumps([self.seed, self.split, self._size, self.digits_per_image,
                                          self.ink_threshold, self.pool, images_path, st.st_mtime_ns, st.st_size])

    def __len__(self):
        return self._size

    def digit_indices(self, i):
        """Which digits (indices into the images file) item i pastes, in paste order."""
        return self._layout(i)[0]

    def _layout(self, i):
        # One generator per (seed, split, item): random access, same answer in any DataLoader worker.
        rng = np.random.default_rng([self.seed, _SPLIT_ID[self.split], i])
        lo, hi = self.pool
        k = int(rng.integers(self.digits_per_image[0], self.digits_per_image[1] + 1))
        which = lo + rng.choice(hi - lo, size=k, replace=False)
        rows, cols = self._digits.shape[1:]
        # Digits may touch but not share an inked pixel, so every label is unambiguous: up to
        # PLACEMENT_TRIES positions are drawn per digit; if none is free the last one is kept
        # (then the later digit overwrites, see load_item).
        occupied = np.zeros((CANVAS, CANVAS), bool)
        ys, xs = np.zeros(k, np.int64), np.zeros(k, np.int64)
        for j, d in enumerate(which):
            ink = self._digits[d] > 0
            for _ in range(PLACEMENT_TRIES):
                y, x = rng.integers(0, CANVAS - rows + 1), rng.integers(0, CANVAS - cols + 1)
                if not (occupied[y:y + rows, x:x + cols] & ink).any():
                    break
            occupied[y:y + rows, x:x + cols] |= ink
            ys[j], xs[j] = y, x
        return which, ys, xs

    def load_item(self, i):
        which, ys, xs = self._layout(i % len(self))
        rows, cols = self._digits.shape[1:]
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        mask = np.zeros((CANVAS, CANVAS), np.uint8)
        for d, y, x in zip(which, ys, xs):
            window = (slice(y, y + rows), slice(x, x + cols))
            np.maximum(canvas[window], self._digits[d], out=canvas[window])
            ink = self._digits[d].astype(np.float32) / 255.0
            mask[window][ink > self.ink_threshold] = self._labels[d] + 1  # later digits overwrite earlier
        return np.repeat(canvas[..., None], 3, axis=2), mask  # grayscale as 3 channels


def _no_data(root):
    return (f"no multi-digit MNIST data in {root}: looked for the reference's batchNNNNN.mat / "
            f"testsetNNN.mat, or MNIST idx files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], "
            f"optionally train-*) in it or in its MNIST/raw/; pass --download=true, or "
            + _MANUAL_DOWNLOAD.format(raw=os.path.join(root, "MNIST", "raw")))


def _find_mats(root):
    if not os.path.isdir(root):
        return {"train": [], "test": []}
    names = sorted(os.listdir(root))
    return {s: [os.path.join(root, n) for n in names if p.match(n)] for s, p in _MAT_PATTERN.items()}


def _scipy_io(path):
    try:
        import scipy.io
    except ImportError:
        raise ImportError(f"reading {path} needs scipy, which is not installed: pip install scipy") from None
    return scipy.io


def _mat_batch_size(path):
    """Batch size from the variable headers (no data read); checks both variables are there."""
    sio = _scipy_io(path)
    try:
        info = {name: shape for name, shape, _ in sio.whosmat(path)}
    except Exception as e:  # scipy raises many types for a bad file; v7.3 (HDF5) lands here too
        raise ValueError(f"cannot read {path} as a MATLAB v5/v7 .mat file ({type(e).__name__}: {e}); "
                         f"re-save it with save(..., '-v7')") from None
    for name in ("imgMat", "semanticMaskMat"):
        if name not in info:
            raise ValueError(f"{path} has no variable {name!r} (found {sorted(info)}); expected imgMat (H x W x 3 x B) "
                             f"and semanticMaskMat (H x W x B)")
    img, msk = info["imgMat"], info["semanticMaskMat"]
    if len(img) == 3:  # MATLAB drops a trailing singleton: a batch of one image
        img = (*img, 1)
    if len(msk) == 2:
        msk = (*msk, 1)
    if len(img) != 4 or img[2] != 3 or tuple(msk) != (img[0], img[1], img[3]):
        raise ValueError(f"{path}: expected imgMat H x W x 3 x B and semanticMaskMat H x W x B, got {info['imgMat']} "
                         f"and {info['semanticMaskMat']}")
    return img[3]


def _load_mat(path):
    sio = _scipy_io(path)
    try:
        data = sio.loadmat(path, variable_names=["imgMat", "semanticMaskMat"])
    except Exception as e:
        raise ValueError(f"cannot read {path} as a MATLAB v5/v7 .mat file ({type(e).__name__}: {e})") from None
    images, masks = data["imgMat"], data["semanticMaskMat"]
    if images.ndim == 3:
        images, masks = images[..., None], masks[..., None]
    if masks.size and (masks.min() < 0 or masks.max() > 10 or np.any(masks != np.round(masks))):
        raise ValueError(f"{path}: semanticMaskMat must hold whole numbers 0-10, found values in [{masks.min()}, {masks.max()}]")
    return images, masks


def _find_idx(root):
    """{MNIST set: (images path, labels path)} from the first folder that holds any; None if none."""
    for folder in (root, os.path.join(root, "MNIST", "raw")):
        found = {}
        for name, pair in _IDX_NAMES.items():
            paths = [_existing(folder, base) for base in pair]
            if all(paths):
                found[name] = tuple(paths)
            elif any(paths):
                missing = pair[paths.index(None)]
                raise FileNotFoundError(f"{folder} holds {os.path.basename(next(p for p in paths if p))} but not {missing}[.gz]")
        if found:
            return found
    return None


def _existing(folder, base):
    for name in (base, base + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _read_idx(path):
    """An idx file (LeCun's MNIST format) as a numpy array: 0x00 0x00, type 0x08 (uint8), ndim, big-endian dims."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise OSError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise ValueError(f"{path} is not an MNIST idx file of unsigned bytes (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header is cut short")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated or corrupt: header says {dims} = {int(np.prod(dims))} bytes, "
                         f"file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _download(root):
    import torchvision
    raw = os.path.join(root, "MNIST", "raw")
    try:
        torchvision.datasets.MNIST(root, train=False, download=True)  # fetches all four files
    except Exception as e:  # offline: URLError / RuntimeError after every mirror failed
        raise ConnectionError(f"could not download MNIST into {raw} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                              + _MANUAL_DOWNLOAD.format(raw=raw)) from None


def has_data(root):
    """Whether root holds multi-digit MNIST (either source; some idx files without their partner count)."""
    root = os.fspath(root)
    try:
        return any(_find_mats(root).values()) or _find_idx(root) is not None
    except OSError:
        return True  # some MNIST files, not all: reading them names the missing one


def ensure(root, download):
    """The data is at root afterwards: either source is there, or (download) the MNIST idx files
    are fetched into root/MNIST/raw/; else a FileNotFoundError says how to get them."""
    root = os.fspath(root)
    if has_data(root):
        return
    if not download:
        raise FileNotFoundError(_no_data(root))
    download_target(root)  # a mistyped path is not created
    _download(root)
    if _find_idx(root) is None:
        raise FileNotFoundError(_no_data(root))


def _build(root, split, num_classes, transforms, download):
    if num_classes not in (0, len(CLASS_NAMES)):
        raise ValueError(f"multidigit_mnist has 11 classes (background + 10 digits), not {num_classes}")
    return MultiDigitMNIST(root, split, transforms=transforms)


# the registry entry (segnet.data.register)
ENTRY = DatasetEntry(
    build=_build, ensure=ensure, num_classes=lambda root, requested: len(CLASS_NAMES),
    default_root="data/mnist", class_names=tuple(CLASS_NAMES),
    title="multi-digit MNIST files",
    expected="MNIST idx files t10k-images-idx3-ubyte[.gz] ..., or the reference's .mat files",
    detect=has_data,
)
