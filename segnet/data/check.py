"""A quick look at every file a run will read, before its first iteration.

A corrupt frame found at iteration 5,000 costs the iterations since the last checkpoint; found
here it costs 0.4 s (the 1,402 CamVid files, headers and PNG checksums, no pixel decoding).

    from segnet.data.check import check_dataset
    check_dataset(CamVid("data/CamVid", "train"))   # the first bad file: a ValueError naming it
"""
from PIL import Image


def file_size(path):
    """(width, height) from the file's header, after checking the file's structure (PNG: every
    chunk's CRC and the end marker) without decoding pixels."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is corrupt or not an image ({e}); replace it or remove the pair") from None


def check_dataset(dataset):
    """Check a data set's (image, label) files pair up, decode and agree in size; returns how many
    pairs were checked (0 for data sets built in memory, e.g. multi-digit MNIST, checked on load)."""
    pairs = getattr(dataset, "files", None) or []
    for pair in pairs:
        if not isinstance(pair, tuple):
            continue  # unlabelled files (predict mode) are read one by one
        image, label = pair
        a, b = file_size(image), file_size(label)
        if a != b:
            raise ValueError(f"{image} is {a[0]}x{a[1]} but its label {label} is {b[0]}x{b[1]}")
    return len(pairs)
