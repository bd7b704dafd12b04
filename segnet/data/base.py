"""What a data set provides, and the file reading the data sets share.

Every data set (CamVid, multi-digit MNIST, your own folder: segnet/data/folder.py) is a
`SegmentationDataset` and provides:

- `class_names`: the names, in class-index order; `num_classes == len(class_names)`.
- `palette`: one display colour (r, g, b) per class, in the same order (pictures, videos, exports).
- `files`: the (image path, label path) pairs, in item order, for data read from image files;
  a data set composed in memory (multi-digit MNIST) lists its source files instead (plain paths,
  not pairs) and checks them as it loads them.
- `load_mask(i)`: the label of item i as an (H, W) uint8 array of class indices 0..C-1, with
  void (ignored by the loss and the metrics) as 255 (`VOID`), before any transform.
- `load_image(i)`: the image of item i as an (H, W, 3) uint8 RGB array.
- `ds[i]`: (image float (3, H, W), mask int64 (H, W)) after `transforms(image, mask)`, which get a
  uint8 `tv_tensors.Image` and `tv_tensors.Mask` (without transforms: the image in [0, 1]).
- `problems`: what was found wrong while listing the files (an image without a label, ...), one
  line each naming the file; `segnet.data.check` reports them with the rest.
- `label_settings`: a string that changes whenever the same label files would decode to other
  indices (it keys the cached class weights).

A data set is registered in `segnet.data.DATASETS` by a `DatasetEntry`: how to build a split,
how to make sure the data is there (download it, or say where it should be), and how many
classes the data has. A fourth data set is one file like folder.py plus one entry there.
"""
import collections

import numpy as np
import torch
from PIL import Image

VOID = 255
SPLITS = ("train", "val", "test")
UNKNOWN = 254  # the colour lookup table's mark for a colour it does not hold (so at most 254 classes)

# build(root, split, num_classes, transforms, download) -> the split as a SegmentationDataset;
# num_classes 0 means the data set's own.
# ensure(root, download): the data is at root afterwards, or an OSError says how to get it there.
# num_classes(root, requested) -> the class count of the data for a run that asks for `requested`
#   classes (0: none asked); it raises where the data cannot say and none was asked.
DatasetEntry = collections.namedtuple("DatasetEntry", "build ensure num_classes")


class MissingSplit(FileNotFoundError):
    """The data set has no such split (e.g. no val/ folder)."""


def read_png(path, mode=None):
    """Decode an image file to a numpy array (converted to `mode`, e.g. "RGB", when given); a broken
    file is a ValueError naming it."""
    try:
        with Image.open(path) as im:
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.array(im)  # a writable copy: torch.from_numpy needs one
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def color_lut(color_to_index):
    """One 2^24 lookup table from packed RGB to class index; UNKNOWN marks a colour not in the table."""
    lut = np.full(1 << 24, UNKNOWN, dtype=np.uint8)
    for (r, g, b), i in color_to_index.items():
        lut[(r << 16) | (g << 8) | b] = i
    return lut


def decode_color_mask(rgb, lut, path="mask", table="label_colors.txt"):
    """(H, W, 3) uint8 colours -> (H, W) uint8 class indices with one vectorised lookup. A colour not
    in the table is a ValueError naming the file, the most frequent such colour and its pixels."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = lut[packed]
    unknown = out == UNKNOWN
    if unknown.any():
        colours, counts = np.unique(packed[unknown], return_counts=True)
        c, n = int(colours[counts.argmax()]), int(counts.max())
        more = (f"; {len(colours) - 1} more unknown colours, {int(unknown.sum()) - n} pixels"
                if len(colours) > 1 else "")
        raise ValueError(f"{path}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not in {table} "
                         f"({n} pixels{more})")
    return out


def default_palette(n):
    """The fixed display colours of a data set that brings none: PASCAL VOC's (bit-interleaving of
    the class index, so the first 21 are exactly VOC's), class 0 black."""
    out = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


class SegmentationDataset(torch.utils.data.Dataset):
    """The contract above; subclasses set class_names, palette and files, and define load_mask."""

    class_names = ()
    palette = ()
    files = ()
    problems = ()
    label_settings = ""
    transforms = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.files)

    def load_mask(self, i):
        raise NotImplementedError

    def load_image(self, i):
        return read_png(self.files[i][0], "RGB")  # grayscale, palette and RGBA images become RGB

    def __getitem__(self, i):
        image, mask = self.load_image(i), self.load_mask(i)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{self.files[i][0]} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"{self.files[i][1]} is {mask.shape[1]}x{mask.shape[0]}")
        image = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) uint8
        mask = torch.from_numpy(mask)
        if self.transforms is not None:
            from torchvision import tv_tensors
            image, mask = self.transforms(tv_tensors.Image(image), tv_tensors.Mask(mask))
            return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()
        return image.float().div_(255), mask.long()
