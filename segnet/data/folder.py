"""Your own data set: a folder of images and a folder of labels per split, paired by file name.

    DIR/
      dataset.json            optional: {"classes": [...], "palette": [[r, g, b], ...], ...}
      images/train/NAME.png   (or .jpg, .jpeg, .bmp, .tif, .tiff)
      labels/train/NAME.png
      images/val/...   labels/val/...
      images/test/...  labels/test/...

    python Train_SegNet.py --dataset=folder --data_root=DIR
    python -m segnet.data check --dataset=folder --data_root=DIR

The layout and keys follow mmsegmentation's BaseSegDataset (img_dir / ann_dir, ignore_index 255,
reduce_zero_label, METAINFO classes and palette). Labels are PNGs in one of two forms: one channel
(mode L or P; a Pascal VOC palette PNG reads as its indices) holding class indices, or RGB colour
masks decoded through the palette. docs/own_data.md walks through it with three conversions.
"""
import json
import os
import pathlib

import numpy as np

from .base import (UNKNOWN, VOID, DatasetEntry, MissingSplit, SegmentationDataset, color_lut, decode_color_mask,
                   decoding, default_palette)
from .camvid import LABEL_COLORS, camvid_palette
from .views import IMAGE_EXTENSIONS

META_FILE = "dataset.json"
META_KEYS = ("classes", "palette", "ignore_index", "reduce_zero_label", "ignore_colors")
MAX_CLASSES = UNKNOWN  # class indices 0..253: 254 marks an unknown colour, 255 is void
GUIDE = "docs/own_data.md"


def read_meta(root):
    """DIR/dataset.json checked key by key ({} when there is none); a bad file is a ValueError
    naming it and the key."""
    path = pathlib.Path(root) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:  # Python's parser recurses once per level of [ or {
        raise ValueError(f"{path} is not valid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object with the keys {', '.join(META_KEYS)}")
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; expected some of {', '.join(META_KEYS)}")
    classes = meta.get("classes")
    if classes is not None:
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)):
            raise ValueError(f'{path}: "classes" must be a list of class names, in index order')
        if len(set(classes)) != len(classes):
            twice = next(c for c in classes if classes.count(c) > 1)
            raise ValueError(f'{path}: "classes" names {twice!r} twice')
        if len(classes) > MAX_CLASSES:
            raise ValueError(f'{path}: "classes" lists {len(classes)} classes; at most {MAX_CLASSES} fit')
    for key in ("palette", "ignore_colors"):
        if key in meta:
            _colours(meta[key], path, key)
    if "palette" in meta:
        colours = [tuple(c) for c in meta["palette"]]
        if len(set(colours)) != len(colours):
            twice = next(c for c in colours if colours.count(c) > 1)
            raise ValueError(f'{path}: "palette" gives colour {list(twice)} to two classes')
        if classes is not None and len(colours) != len(classes):
            raise ValueError(f'{path}: "palette" has {len(colours)} colours but "classes" has {len(classes)}')
        both = set(colours) & {tuple(c) for c in meta.get("ignore_colors", [])}
        if both:
            raise ValueError(f'{path}: colour {list(min(both))} is in both "palette" and "ignore_colors"')
    index = meta.get("ignore_index", VOID)
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index <= 255):
        raise ValueError(f'{path}: "ignore_index" must be an integer 0..255 (default 255)')
    if not isinstance(meta.get("reduce_zero_label", False), bool):
        raise ValueError(f'{path}: "reduce_zero_label" must be true or false')
    return meta


def _colours(value, path, key):
    ok = isinstance(value, list) and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                                                    for v in c) for c in value)
    if not ok:
        raise ValueError(f'{path}: "{key}" must be a list of [r, g, b] colours, each value 0..255')


def data_num_classes(root, requested=0):
    """How many classes the folder data set at `root` has: dataset.json's "classes", else the
    `requested` count; neither is a ValueError saying what to add."""
    root = pathlib.Path(root)
    _ensure(root, False)  # a missing folder is said as such, not as a missing dataset.json
    return _class_count(read_meta(root), root, requested)


def _class_count(meta, root, requested):
    classes = meta.get("classes")
    if classes:
        return len(classes)
    if requested:
        if not 1 <= requested <= MAX_CLASSES:
            raise ValueError(f"num_classes={requested}: expected 1..{MAX_CLASSES}")
        return requested
    raise ValueError(f'{root / META_FILE} is missing: add one naming the classes in index order, '
                     f'{{"classes": ["background", "cat", ...]}}, or pass --num_classes=N ({GUIDE})')


def display_palette(class_names):
    """Colours for classes that bring none: CamVid's for CamVid class names, else the fixed
    palette (base.default_palette, PASCAL VOC's colours)."""
    camvid_names = {n for _, n in LABEL_COLORS} | {"Pole"}
    if set(class_names) <= camvid_names:
        return camvid_palette(class_names)
    return default_palette(len(class_names))


class Folder(SegmentationDataset):
    """One split of the folder layout (module docstring); `ds[i]` as every data set (base.py).

    num_classes: 0 = dataset.json's classes; with a dataset.json it must agree, without one it
    gives the count and the names are class_0..class_{C-1}. Files that do not pair up are left
    out of `files` and listed in `problems` (the pre-flight check stops at the first).
    """

    def __init__(self, root, split="train", num_classes=0, transforms=None):
        self.root, self.split, self.transforms = pathlib.Path(root), split, transforms
        _ensure(self.root, False)
        meta = read_meta(self.root)
        n = _class_count(meta, self.root, num_classes)
        if num_classes and n != num_classes:
            raise ValueError(f"{self.root / META_FILE} lists {n} classes ({', '.join(meta['classes'][:4])}"
                             f"{', ...' if n > 4 else ''}), not num_classes={num_classes}")
        self.class_names = list(meta.get("classes") or [f"class_{i}" for i in range(n)])
        given = meta.get("palette")
        if given is not None and len(given) != n:
            raise ValueError(f'{self.root / META_FILE}: "palette" has {len(given)} colours for {n} classes')
        self.palette = [tuple(c) for c in given] if given else display_palette(self.class_names)
        self.ignore_index = meta.get("ignore_index", VOID)
        self.reduce_zero_label = meta.get("reduce_zero_label", False)
        shift = int(self.reduce_zero_label)  # the label values that name classes: shift..n-1+shift
        if shift <= self.ignore_index < n + shift:  # that class would be void wherever it is drawn
            k = self.ignore_index - shift
            raise ValueError(f'{self.root / META_FILE}: "ignore_index" {self.ignore_index} is the label value of '
                             f'class {k} ({self.class_names[k]}); void needs a value no class uses, '
                             f'{n + shift}..255 (default 255)')
        self.ignore_colors = [tuple(c) for c in meta.get("ignore_colors", [])]
        self.colour_source = (f"the palette or ignore_colors of {self.root / META_FILE}" if given else
                              f"the default palette (give yours as \"palette\" in {self.root / META_FILE})")
        self.label_settings = json.dumps([n, self.ignore_index, self.reduce_zero_label, self.palette,
                                          self.ignore_colors])
        self._lut = None  # the 2^24 colour table, built when the first RGB mask needs it
        self.files, self.problems = self._pair_files()

    def _pair_files(self):
        image_dir, label_dir = self.root / "images" / self.split, self.root / "labels" / self.split
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise MissingSplit(f"{self.root} has no {d.relative_to(self.root)}/ folder, so no {self.split} "
                                   f"split (the layout: images/{self.split}/NAME.jpg + labels/{self.split}/NAME.png)")
        images, labels, problems, unread = {}, {}, [], {}
        broken = [f for d in (image_dir, label_dir) for f in sorted(d.iterdir()) if f.is_symlink() and not f.exists()]
        problems += [f"{f} is a broken symbolic link (to {os.readlink(f)}); replace it or remove it" for f in broken]
        for f in sorted(image_dir.iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file():
                if f not in broken:
                    unread.setdefault(f.stem, f)  # a .webp, .gif, ...: named if a label lacks its image
                continue
            if f.stem in images:
                problems.append(f"{f}: another image has the same name, {images[f.stem]}; images pair with "
                                f"labels by name")
                continue
            images[f.stem] = f
        for f in sorted(label_dir.iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file():
                continue
            if f.suffix.lower() != ".png":
                problems.append(f"{f}: labels must be PNG files (lossy JPEG changes the class values)")
                continue
            labels[f.stem] = f
        pairs = []
        for stem in sorted(set(images) | set(labels)):
            if stem not in labels:
                problems.append(f"{images[stem]} has no label: expected {label_dir / stem}.png")
            elif stem not in images:
                found = (f"; {unread[stem].name} is there, but not of these types: convert it"
                         if stem in unread else "")
                problems.append(f"{labels[stem]} has no image: expected {image_dir / stem}"
                                f"{{{','.join(IMAGE_EXTENSIONS)}}}{found}")
            else:
                pairs.append((str(images[stem]), str(labels[stem])))
        if not pairs and not problems:  # an empty split is a missing one: needed only where it is read
            raise MissingSplit(f"{image_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}) with labels in "
                               f"{label_dir}, so no {self.split} split")
        return pairs, problems

    def load_mask(self, i):
        """The (H, W) uint8 class indices of item i, void 255: one-channel labels hold indices
        (ignore_index becomes void; reduce_zero_label: 0 becomes void, the rest move down by one),
        RGB labels are decoded through the palette (ignore_colors become void)."""
        path = self.files[i][1]
        with decoding(path, "label") as im:
            colours = im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB")
            if colours:
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            labels = np.array(im)  # L and P: the indices themselves; I;16 and I: wider indices
        # decoded outside the read: its errors name the file once, in the documented form
        return self._decode_colours(labels, path) if colours else self._indices(labels.astype(np.int64), path)

    def _indices(self, labels, path):
        void = labels == self.ignore_index
        if self.reduce_zero_label:  # ADE20K / SUN RGB-D: 0 is "other", not a class
            void |= labels == 0
            labels = labels - 1
        bad = ~void & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            values, counts = np.unique(labels[bad], return_counts=True)
            shift = 1 if self.reduce_zero_label else 0
            expected = f"{shift}..{self.num_classes - 1 + shift}" + (" (reduce_zero_label)" if shift else "")
            raise ValueError(f"{path}: label value {int(values[0]) + shift} is not a class: expected {expected} "
                             f"or void {self.ignore_index} for the {self.num_classes} classes ({int(counts[0])} "
                             f"pixels{f'; {len(values) - 1} more values' if len(values) > 1 else ''})")
        return np.where(void, VOID, labels).astype(np.uint8)

    def _decode_colours(self, rgb, path):
        if self._lut is None:
            table = {c: i for i, c in enumerate(self.palette)}
            table.update({c: VOID for c in self.ignore_colors})
            self._lut = color_lut(table)
        return decode_color_mask(rgb, self._lut, path, self.colour_source)


def _build(root, split, num_classes, transforms, download):
    return Folder(root, split, num_classes, transforms=transforms)


def _ensure(root, download):
    root = pathlib.Path(root)
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise FileNotFoundError(f"--data_root={root}: {what}; a folder data set holds "
                                f"{root}/images/train/ and {root}/labels/train/ ({GUIDE})")


# the registry entry (segnet.data.register): nothing to download, the data is yours; no default folder
ENTRY = DatasetEntry(build=_build, ensure=_ensure, num_classes=data_num_classes)
