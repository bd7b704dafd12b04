"""Paired image/mask transforms on torchvision.transforms.v2 (masks are resized with nearest).

    t = train_transforms(360, 480, normalize="imagenet")          # the paper's: no augmentation
    image, mask = t(tv_tensors.Image(uint8_chw), tv_tensors.Mask(uint8_hw))
"""
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


# torchvision's VGG16 ImageNet weights were trained on inputs normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# imagenet: (x/255 - mean) / std, for torchvision's VGG16 weights; none: x/255;
# raw255: the 0-255 pixel values as floats, no mean subtraction (SegNet-Basic's Caffe input).
NORMALIZATIONS = ("imagenet", "none", "raw255")


def input_to_unit(normalize):
    """(mean, std) such that pixels in 0..1 = input * std + mean (to draw a normalised input)."""
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0, 0.0, 0.0), ((1 / 255,) * 3 if normalize == "raw255" else (1.0, 1.0, 1.0))


def normalization_for(init_encoder):
    """The input normalisation that matches the encoder's initial weights."""
    return "none" if init_encoder == "none" else "imagenet"


def _to_float(normalize, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r}: expected one of {NORMALIZATIONS}")
    scale = normalize != "raw255"  # /255, except for raw pixels
    ops = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=scale)]
    if normalize == "imagenet":
        ops.append(v2.Normalize(mean, std))
    return ops


class ImageOnly:
    """Apply a transform to the image and pass the mask through (evaluation at label size)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image, mask):
        return self.transform(image), mask


def train_geometry(height, width, hflip=False, scale_min=1.0):
    """The random, geometric part of train_transforms on a uint8 image and mask, on any device."""
    ops = []
    if scale_min < 1.0:
        # a random crop of scale_min..1 of the frame (aspect kept), resized to (height, width)
        ops.append(v2.RandomResizedCrop((height, width), scale=(scale_min, 1.0),
                                        ratio=(width / height, width / height), antialias=True))
    else:
        ops.append(v2.Resize((height, width), antialias=True))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def to_float(normalize):
    """The image's conversion to the model's input (no randomness): one image or a batch."""
    return v2.Compose(_to_float(normalize))


def train_transforms(height, width, normalize="imagenet", hflip=False, scale_min=1.0):
    """Resize to the training size; optional flip and random scale+crop (the paper used neither)."""
    return v2.Compose([train_geometry(height, width, hflip, scale_min), to_float(normalize)])


def eval_transforms(height, width, normalize="imagenet"):
    """Resize only the image: predictions are scored at the annotation's resolution."""
    return ImageOnly(v2.Compose([v2.Resize((height, width), antialias=True)] + _to_float(normalize)))
