"""What a data set provides, and the file reading the data sets share.

Every data set (CamVid, multi-digit MNIST, your own folder: segnet/data/folder.py) is a
`SegmentationDataset` and provides:

- `class_names`: the names, in class-index order; `num_classes == len(class_names)`.
- `palette`: one display colour (r, g, b) per class, in the same order (pictures, videos, exports).
- `files`: (image source, label source) pairs of paths. A data set read from image files has one
  pair per item, in item order (`item_files()`, which the pre-flight check reads); a data set
  composed in memory (multi-digit MNIST) lists the pairs of source files it composes from, has
  no per-item files, and checks its sources as it loads them.
- `item_name(i)`: the file name of item i's prediction PNG (its image's name).
- `load_mask(i)`: the label of item i as an (H, W) uint8 array of class indices 0..C-1, with
  void (ignored by the loss and the metrics) as 255 (`VOID`), before any transform.
- `load_image(i)`: the image of item i as an (H, W, 3) uint8 RGB array; `load_item(i)` gives both.
- `label_settings`: a string that changes whenever the same label files would decode to other
  indices (it keys the cached class weights).
- `ds[i]`: (image float (3, H, W), mask int64 (H, W)) after `transforms(image, mask)`, which get a
  uint8 `tv_tensors.Image` and `tv_tensors.Mask` (without transforms: the image in [0, 1]).
- `problems`: what was found wrong while listing the files (an image without a label, ...), one
  line each naming the file; `segnet.data.check` reports them with the rest.

A data set is registered by name with a `DatasetEntry` (`segnet.data.register`, registry.py):
everything the rest of the code asks about it. A new data set is one module like folder.py that
ends in its entry (docs/own_data.md, "A new kind of data set").
"""
import contextlib
import dataclasses
import pathlib
import re
import warnings
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from PIL import Image, ImageOps

VOID = 255
SPLITS = ("train", "val", "test")
UNKNOWN = 254  # the colour lookup table's mark for a colour it does not hold (so at most 254 classes)



def _median_frequency(num_classes):
    return "median_frequency"


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """Everything the code outside a data set's module asks about it (`segnet.data.register`).

    build(root, split, num_classes, transforms, download) -> the split as a SegmentationDataset;
        num_classes 0 means the data set's own. It reads; it never downloads.
    ensure(root, download): the data is at root afterwards (fetched when `download` and the data
        set can fetch itself), or an OSError says how to get it there.
    num_classes(root, requested) -> the class count of the data for a run that asks for
        `requested` classes (0: none asked); it raises where the data cannot say and none was asked.
    default_root: the folder read when none is given ("" = none: --data_root is needed).
    split_sizes: {split: images} of the whole data set, to notice a split that lost files.
    class_weights(num_classes) -> the method `class_weights=auto` means for it.
    class_names: the fixed class names, where the data set has fixed ones (else ()).
    palette(class_names) -> one (r, g, b) per class: the colours of a file that stores none.
    published: {(model spec, num_classes): [(label, G, C, mIoU, BF or None), ...]}, in percent,
        the published test rows results.md sets beside a run.
    title: what the data set is called when found in a folder ("CamVid").
    expected: what its folder holds, said when it holds something else.
    detect(root) -> whether root holds this data set (any class count); None: not checked.
    fits(root, num_classes) -> None, or why the data at root cannot have `num_classes` classes.
    """

    build: Callable
    ensure: Callable
    num_classes: Callable
    default_root: str = ""
    split_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    class_weights: Callable = _median_frequency
    class_names: tuple = ()
    palette: Callable = lambda class_names: default_palette(len(class_names))
    published: Mapping[tuple, list] = dataclasses.field(default_factory=dict)
    title: str = "the data set"
    expected: str = ""
    detect: Optional[Callable] = None
    fits: Optional[Callable] = None


class MissingSplit(FileNotFoundError):
    """The data set has no such split (e.g. no val/ folder)."""


class ImageTooLarge(ValueError):
    """An image with more pixels than PIL's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)."""


@contextlib.contextmanager
def open_image(path):
    """PIL's Image.open, through which every image the project reads is opened: an image of more
    pixels than PIL.Image.MAX_IMAGE_PIXELS (PIL's default, 89,478,485: about 9459x9459; where PIL
    only warns, and at twice that, where it raises DecompressionBombError) is an ImageTooLarge
    naming the file, its size and the limit, before any pixel is decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # PIL's warning would be a second line; the refusal below says it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:  # over twice the limit: PIL says only the pixel count
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageTooLarge(_too_large(path, f"{int(pixels.group(1)):,} pixels" if pixels else "too large",
                                       limit)) from None
    with im:
        w, h = im.size
        if limit is not None and w * h > limit:
            raise ImageTooLarge(_too_large(path, f"{w}x{h}, {w * h:,} pixels", limit))
        yield im


def _too_large(path, size, limit):
    return (f"{path} is {size}: more than the {limit:,} pixels an image may have (PIL's decompression-bomb "
            f"limit, PIL.Image.MAX_IMAGE_PIXELS); resize it")


@contextlib.contextmanager
def decoding(path, what="image"):
    """open_image(path), with every failure of the read said one way: a missing file is a
    FileNotFoundError "PATH is missing", one over the pixel limit an ImageTooLarge, one that does
    not decode a ValueError "cannot read WHAT PATH: why"."""
    try:
        with open_image(path) as im:
            yield im
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except ImageTooLarge:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None


def read_png(path, mode=None):
    """Decode an image file to a numpy array (converted to `mode`, e.g. "RGB", when given); a broken
    file is a ValueError naming it (decoding)."""
    with decoding(path) as im:
        if mode is not None and im.mode != mode:
            im = im.convert(mode)
        return np.array(im)  # a writable copy: torch.from_numpy needs one


def to_rgb(im):
    """An (H, W, 3) uint8 RGB array of a PIL image of any mode: 16-bit and 32-bit integer images
    are scaled from 0..65535 to 0..255 (PIL's own conversion clips them, so a 16-bit photo read
    white), float images are read as 0..1 when they stay within it and clipped to 0..255
    otherwise, and palette images with transparency, CMYK, LA and 1-bit images go through PIL's
    RGB conversion."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im.convert("I") if im.mode != "I" else im, dtype=np.int64)
        if im.mode != "I" or a.max(initial=0) > 255:  # 32-bit integers: read as 16-bit
            a = (np.clip(a, 0, 65535) * 255 + 32767) // 65535
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = a * 255 if a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1 else a
        return np.repeat(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns when a palette image with transparency goes straight to RGB
    return np.array(im if im.mode == "RGB" else im.convert("RGB"))


def decoded_size(path):
    """(width, height) of an image file, after checking its structure (PNG: every chunk's CRC and
    the end marker) and decoding every pixel, as training will (a truncated JPEG passes the
    structure check and fails only there); PIL's own exception where either fails, ImageTooLarge
    (open_image) for an image over the pixel limit."""
    with open_image(path) as im:
        size = im.size
        im.verify()
    with open_image(path) as im:
        im.load()
    return size


def read_image(path, upright=False):
    """Decode an image file of any mode to (H, W, 3) uint8 RGB (`to_rgb`); a broken file is a
    ValueError naming it (decoding). `upright`: turned as its EXIF orientation says, as a viewer shows it (a
    phone stores a photo sideways with a note); never for training pairs, whose labels are drawn on
    the pixels as stored."""
    with decoding(path) as im:
        return to_rgb(ImageOps.exif_transpose(im) if upright else im)


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
        more = (f"; {len(colours) - 1} more unknown colours, {int(unknown.sum()) - n} pixels: a JPEG-compressed "
                f"or anti-aliased mask?" if len(colours) > 1 else "")
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

    def item_files(self):
        """The (image, label) file pair of each item, which the pre-flight check reads."""
        return self.files

    def item_name(self, i):
        """The file name of item i's prediction: its image's name, as a PNG."""
        return pathlib.Path(self.files[i][0]).stem + ".png"

    def load_image(self, i):
        return read_image(self.files[i][0])  # every mode becomes 8-bit RGB (16-bit scaled, not clipped)

    def load_item(self, i):
        """(load_image(i), load_mask(i)); a data set that makes both at once overrides it."""
        return self.load_image(i), self.load_mask(i)

    def __getitem__(self, i):
        image, mask = self.load_item(i)
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
