"""A look at every file a run will read, before its first iteration, and `python -m segnet.data check`.

A corrupt frame found at iteration 5,000 costs the iterations since the last checkpoint; found
here it costs a few seconds: every image's header and (PNG) checksums, every label decoded to
class indices and its values checked.

    from segnet.data.check import check_dataset
    check_dataset(CamVid("data/CamVid", "train"))   # the first problem: a ValueError naming the file

    python -m segnet.data check --dataset=folder --data_root=DIR   # every problem, and what is there
"""
import collections
import pathlib
import sys

from ..class_weights import PixelCounts
from ..config import help_text, parse_overrides, wants_help
from ..errors import UserError, user_errors
from ..progress import track
from .base import SPLITS, VOID, ImageTooLarge, MissingSplit, decoded_size
from .registry import DATASETS, DatasetNames


def file_size(path):
    """(width, height) of a file that decodes in full (base.decoded_size); a ValueError naming it."""
    try:
        return decoded_size(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except ImageTooLarge:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is corrupt or not an image ({e}); replace it or remove the pair") from None


class Survey(PixelCounts):
    """What `problems` saw of a split: image sizes, void pixels, and the median-frequency counts."""

    def __init__(self, num_classes):
        super().__init__(num_classes, VOID)
        self.images, self.sizes, self.void_pixels = 0, collections.Counter(), 0

    def add(self, mask):
        labelled = super().add(mask)
        self.void_pixels += mask.size - labelled
        return labelled


def problems(dataset, survey=None, labels=True):
    """Every problem of a data set, one line each naming the file (a generator): files that do not
    pair up, unreadable files, sizes that differ within a pair, and (with `labels`) labels that do
    not decode to class indices 0..C-1 or void. `survey` (a Survey) collects what was seen."""
    yield from dataset.problems
    pairs = dataset.item_files()  # none for a data set composed in memory
    for i, (image, label) in enumerate(track(pairs, f"check {getattr(dataset, 'split', '')}".strip(), len(pairs))):
        try:
            a, b = file_size(image), file_size(label)
        except (ValueError, OSError) as e:
            yield str(e)
            continue
        if a != b:
            yield f"{image} is {a[0]}x{a[1]} but its label {label} is {b[0]}x{b[1]}"
            continue
        mask = None
        if labels:
            try:
                mask = dataset.load_mask(i)
            except (ValueError, OSError) as e:
                yield str(e).splitlines()[0]
                continue
            bad = (mask != VOID) & (mask >= dataset.num_classes)
            if bad.any():
                yield (f"{label}: label value {int(mask[bad][0])} is not a class: expected "
                       f"0..{dataset.num_classes - 1} or void ({int(bad.sum())} pixels)")
                continue
        if survey is not None:  # only pairs without a problem are counted, whatever the problem
            survey.images += 1
            survey.sizes[a] += 1
            if mask is not None:
                survey.add(mask)


def label_problems(dataset, survey, train):
    """What the labels of a whole split say (after `problems` surveyed it): every pixel void, or,
    for the training split, a class with no pixel at all (its median-frequency weight is 0)."""
    if not survey.images:
        return []
    where = pathlib.Path(dataset.item_files()[0][1]).parent
    if not survey.pixels.any():
        return [f"{where}: every pixel of its {survey.images} labels is void ({VOID}): nothing to learn from "
                f"or score; the labels do not hold the class indices (or colours) this data set expects"]
    absent = [name for name, n in zip(dataset.class_names, survey.pixels) if not n]
    if train and absent:
        return [f"{where}: no pixel of {len(absent)} of the {dataset.num_classes} classes ({', '.join(absent[:5])}"
                f"{', ...' if len(absent) > 5 else ''}) in its {survey.images} labels: their median-frequency "
                f"weight is 0 and they are never learned"]
    return []


def check_dataset(dataset):
    """Check a data set's (image, label) files pair up, decode and agree in size, that every
    label holds class indices or void, and that not every label pixel is void; the first problem
    is a ValueError naming the file. Returns how many pairs were checked (0 for data sets built in
    memory, e.g. multi-digit MNIST, checked on load)."""
    survey = Survey(dataset.num_classes)
    for problem in problems(dataset, survey):
        raise ValueError(problem)
    for problem in label_problems(dataset, survey, train=False):
        raise ValueError(problem)
    return len(dataset.item_files())


# -- python -m segnet.data check ------------------------------------------------------------------
OPTIONS = {
    "dataset": "folder",     # a registered data set: folder | camvid | multidigit_mnist | yours
    "data_root": "",         # the data set's folder
    "num_classes": 0,        # 0 = the data set's own (dataset.json's classes; CamVid 11)
}


def survey_report(name, dataset, survey):
    """The lines `check` prints for one split."""
    lines = [f"{name}: {survey.images} images"]
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in survey.sizes.most_common(6))
    more = len(survey.sizes) - 6
    lines.append(f"  sizes (width x height): {sizes}{f', and {more} more sizes' if more > 0 else ''}")
    total = int(survey.pixels.sum())
    if total:
        shares = ", ".join(f"{dataset.class_names[c]} {100 * survey.pixels[c] / total:.2f}%"
                           for c in range(dataset.num_classes) if survey.pixels[c])
        absent = [dataset.class_names[c] for c in range(dataset.num_classes) if not survey.pixels[c]]
        lines.append(f"  classes present (share of labelled pixels): {shares}")
        if absent:
            lines.append(f"  classes absent: {', '.join(absent)}")
        lines.append(f"  void: {100 * survey.void_pixels / (total + survey.void_pixels):.2f}% of all pixels")
    return lines


def main(argv=None):
    """`python -m segnet.data check --dataset=NAME --data_root=DIR`: per split the images, sizes
    and classes present, the median-frequency weights of train, and every problem; exit 2 when
    there is any."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    args = parse_overrides(OPTIONS, argv[1:], presets={}, choices={"dataset": DatasetNames()},
                           minimums={"num_classes": 0})
    if not args["data_root"]:
        raise UserError("--data_root=DIR is needed: the data set's folder")
    entry, root = DATASETS[args["dataset"]], args["data_root"]
    found, train = [], None
    with user_errors():
        entry.ensure(root, False)
        n = entry.num_classes(root, args["num_classes"])
        for split in SPLITS:
            try:
                dataset = entry.build(root, split, n, None, False)
            except MissingSplit as e:
                print(f"{split}: missing ({e})")
                continue
            if split == SPLITS[0]:
                print(f"{args['dataset']} data set at {root}: {dataset.num_classes} classes "
                      f"({', '.join(dataset.class_names)}), void {VOID}")
            survey = Survey(dataset.num_classes)
            found += list(problems(dataset, survey)) + label_problems(dataset, survey, split == "train")
            print("\n".join(survey_report(split, dataset, survey)))
            if split == "train":
                train = (dataset, survey)
    if train is None:
        found.append(f"{root}: no train split; training needs one")
    else:
        dataset, survey = train
        w = survey.weights()
        print("median-frequency weights (train): "
              + ", ".join(f"{name} {v:.4f}" for name, v in zip(dataset.class_names, w)))
    if not found:
        print("no problems found")
        return 0
    print(f"problems ({len(found)}):")
    for p in found:
        print(f"  {p}")
    raise UserError(f"{len(found)} problem{'s' if len(found) > 1 else ''} in {root}, the first: {found[0]}")
