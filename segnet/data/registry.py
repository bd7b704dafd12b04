"""The data sets by name: `--dataset=NAME` everywhere reads this registry, and nothing outside
segnet/data/ branches on a data set's name.

    from segnet.data import DatasetEntry, register
    register("toy", DatasetEntry(build=..., ensure=..., num_classes=...))   # then --dataset=toy works

A data set registered from outside the package (a module of your own, imported before the
scripts parse their arguments) is accepted like the shipped ones: docs/own_data.md.
"""
import pathlib

from . import camvid, folder, mnist
from .base import DatasetEntry

# the data set the scripts read when none is named: the paper's (Sec. 4)
DEFAULT_DATASET = "camvid"

# name -> entry; a live dict, so `--dataset=` choices read from it see later registrations
DATASETS = {"camvid": camvid.ENTRY, "multidigit_mnist": mnist.ENTRY, "folder": folder.ENTRY}


def register(name, entry):
    """Make `--dataset=name` read the data set `entry` describes (a DatasetEntry); registering a
    name again replaces its entry."""
    if not isinstance(name, str) or not name or "=" in name:
        raise ValueError(f"a data set's name must be a non-empty string without '=', got {name!r}")
    if not isinstance(entry, DatasetEntry):
        raise TypeError(f"register({name!r}, ...) needs a segnet.data.DatasetEntry, got {type(entry).__name__}")
    DATASETS[name] = entry
    return entry


def entry(name):
    """The entry of data set `name`; an unknown name is a ValueError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}") from None


class DatasetNames:
    """The registered names (plus `extra` values such as "") as `choices` for parse_overrides,
    read at the time of the check, not frozen when a script is imported."""

    def __init__(self, *extra):
        self.extra = extra

    def __contains__(self, value):
        return value in self.extra or value in DATASETS

    def __iter__(self):
        return iter((*self.extra, *DATASETS))

    def __len__(self):
        return len(self.extra) + len(DATASETS)


def palette_for(name, class_names):
    """The display colours of `class_names` of data set `name`, for a file that stores none."""
    return [tuple(c) for c in entry(name).palette(list(class_names))]


def published_rows(config):
    """The published test rows to set beside a run of this config (its data set, model and class
    count); [] for an unknown data set or one with no published figures."""
    e = DATASETS.get(config.get("dataset"))
    return [] if e is None else list(e.published.get((config.get("model"), config.get("num_classes")), []))


def default_root(name):
    """The folder data set `name` is read from when none is given; ValueError when it has none."""
    root = entry(name).default_root
    if not root:
        raise ValueError(f"--dataset={name} has no default folder: pass --data_root=DIR")
    return root


def check_fits(root, name, num_classes, trained):
    """Before anything is read: `root` holds data set `name` in a layout with `num_classes`
    classes (ValueError / FileNotFoundError otherwise, beginning with `trained`, which says what
    the checkpoint is)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_root={root} does not exist ({trained})")
    e = entry(name)
    if e.detect is not None and not e.detect(root):
        others = [o.title for o in DATASETS.values() if o is not e and o.detect is not None and o.detect(root)]
        found = others[0] if others else f"no {e.title}"
        raise ValueError(f"{trained}, but --data_root={root} holds {found} (expected {e.expected}); "
                         f"evaluation never downloads")
    problem = e.fits(root, num_classes) if e.fits is not None else None
    if problem:
        raise ValueError(f"{trained}, but --data_root={root} {problem}")


def some_names(names, n=4):
    """The first `n` class names, with "..." only when some are left out."""
    return ", ".join(list(names[:n]) + (["..."] if len(names) > n else []))


def check_class_names(trained, data, what, where="the data", other_data=False):
    """Output channel i of a model was trained as `trained[i]`: data that names the same classes in
    another order, or (unless `other_data`: data deliberately scored under the model's names)
    other classes, is a ValueError beginning with `what` (the model) and naming `where` (the data)."""
    trained, data = list(trained), list(data)
    reordered = sorted(data) == sorted(trained)
    if data == trained or (other_data and not reordered):
        return
    how = "the same classes in another order" if reordered else f"{len(data)} classes ({some_names(data)})"
    hint = "" if reordered else " (--dataset=NAME scores other data with the same number of classes)"
    raise ValueError(f"{what} predicts {len(trained)} classes ({some_names(trained)}) but {where} names {how}; "
                     f"the class names and their order must match{hint}")


def split_size_warning(name, n, split, root):
    """One line when a whole data set's split did not give the number of images it has; None
    when it did (or the data set does not say)."""
    expected = DATASETS[name].split_sizes.get(split) if name in DATASETS else None
    if expected is None or n == expected:
        return None
    return (f"warning: scored {n} {split} images, but the {name} {split} split has {expected}: "
            f"{'some are missing from' if n < expected else 'extra files are in'} {root}, so "
            f"the figures are not comparable with the published ones")
