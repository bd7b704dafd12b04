"""Data sets as evaluation reads them: items (image, mask or None, label size) with an output file
name each, batched by `collate` (images of different sizes in one batch keep their own sizes).

    Labelled(CamVid(root, "test", transforms=eval_transforms(360, 480)))   # scored at label size
    UnlabelledImages("photos/", 360, 480, "imagenet")                      # predict mode, no labels
"""
import collections
import pathlib

import torch
from torchvision import tv_tensors

from ..transforms import eval_transforms
from .base import decoded_size, read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def collate(batch):
    """(images, masks, label sizes); masks stacked when they agree in size, else a list (a data
    set of varying image sizes is scored at each label's own size)."""
    images = torch.stack([b[0] for b in batch])
    masks = None
    if batch[0][1] is not None:
        masks = [b[1] for b in batch]
        if all(m.shape == masks[0].shape for m in masks):
            masks = torch.stack(masks)
    return images, masks, [tuple(b[2]) for b in batch]


def collate_images(batch):
    """(images, None) of (image, mask) items: the images only, all at the model's input size (the
    BatchNorm statistics pass, whose masks may differ in size)."""
    return torch.stack([b[0] for b in batch]), None


class Labelled(torch.utils.data.Dataset):
    """A labelled data set's items as (image, mask, label size), with an output file name each."""

    def __init__(self, dataset):
        self.dataset, self.class_names = dataset, dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def name(self, i):
        return self.dataset.item_name(i)

    def __getitem__(self, i):
        image, mask = self.dataset[i]
        return image, mask, mask.shape[-2:]


class UnlabelledImages(torch.utils.data.Dataset):
    """Unlabelled images (a folder, or one file): (image at the model's input size, None, original size).

    A file that does not decode is skipped with one line (`say`), the rest are predicted; two
    images with one stem (a.jpg, a.png) keep their extension in the output name (a.jpg.png)."""

    def __init__(self, path, height, width, normalize, say=print):
        p = pathlib.Path(path)
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise FileNotFoundError(f"--images={path}: no such file or folder")
        if not files:
            raise FileNotFoundError(f"--images={path}: no images found (expected {', '.join(IMAGE_EXTENSIONS)})")
        self.files = []
        for f in files:
            problem = undecodable(f)
            if problem:
                say(f"skipped {f}: {problem}")
            else:
                self.files.append(f)
        if not self.files:
            raise ValueError(f"--images={path}: none of the {len(files)} images can be read")
        stems = collections.Counter(f.stem for f in self.files)
        self.names = [f.name + ".png" if stems[f.stem] > 1 else f.stem + ".png" for f in self.files]
        if any(n > 1 for n in stems.values()):
            say("images that share a name but not an extension keep it in their outputs' names (a.jpg -> a.jpg.png)")
        self.transform = eval_transforms(height, width, normalize)

    def __len__(self):
        return len(self.files)

    def name(self, i):
        return self.names[i]

    def __getitem__(self, i):
        image = torch.from_numpy(read_image(self.files[i], upright=True)).permute(2, 0, 1)  # as a viewer shows it
        x, _ = self.transform(tv_tensors.Image(image), None)
        return x.as_subclass(torch.Tensor), None, image.shape[-2:]


def undecodable(path):
    """Why `path` cannot be predicted on (it does not decode in full: base.decoded_size), or None."""
    try:
        decoded_size(path)
    except (OSError, SyntaxError, ValueError) as e:
        return f"not a readable image ({e})"
    return None
