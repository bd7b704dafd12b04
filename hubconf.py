"""torch.hub entry points: SegNet (VGG16), SegNet-Basic and SegNet-Lite, optionally with the weights
this repo ships (trained by this repo's own Train_SegNet.py; see README "Results").

    import torch
    model = torch.hub.load("path/to/this/repo", "segnet_basic", source="local", pretrained=True)
    model.class_names        # the 11 CamVid classes, in output-channel order
    model.normalize          # the input the weights expect: "raw255" = RGB floats in 0..255

Every entry point returns a `segnet.model.SegNet` in eval mode that maps (B, 3, H, W) to logits
(B, num_classes, H, W); keyword arguments go to `SegNet` (e.g. bayesian=True).
"""
import pathlib

from segnet.model import SegNet
from segnet.weights import load_weights_file

dependencies = ["torch", "torchvision"]

HERE = pathlib.Path(__file__).resolve().parent
# model spec -> the shipped weights file (a plain state dict with its config and class names)
SHIPPED = {"segnet_basic": HERE / "weights" / "segnet_basic_camvid.pt"}
HOW_TO_TRAIN = {
    "segnet": "python Train_SegNet.py (the paper's VGG16 recipe: 40,000 iterations; a GPU job)",
    "segnet_basic": "python Train_SegNet.py --config=segnet_basic",
    "segnet_lite": "python Train_SegNet.py --config=multidigit_mnist",
}


def _build(spec, num_classes, pretrained, **kw):
    if not pretrained:
        model = SegNet(num_classes, spec=spec, **kw)
        model.class_names, model.normalize = None, None
        return model.eval()
    path = SHIPPED.get(spec)
    if path is None or not path.is_file():
        what = "are not shipped" if path is None else f"are not in this copy of the repo ({path} is missing)"
        out = (f"weights/{spec}.pt" if path is None else  # the file this entry point loads
               path.relative_to(HERE).as_posix() if path.is_relative_to(HERE) else path)
        load = "" if path is not None else " and load that with segnet.weights.load_weights_file"
        raise ValueError(f"pretrained {spec} weights {what}; train them with {HOW_TO_TRAIN[spec]}, then "
                         f"python -m segnet.weights checkpoints/RUN/best.pt --out={out}{load}")
    model, info = load_weights_file(path, **kw)
    if num_classes != len(info["class_names"]):
        raise ValueError(f"the shipped {spec} weights predict {len(info['class_names'])} classes, "
                         f"not num_classes={num_classes}")
    return model.eval()


def segnet(num_classes=11, pretrained=False, **kw):
    """SegNet (TPAMI 2017, Sec. 3): the 13 VGG16 convs and a mirrored decoder, 29.4M parameters."""
    return _build("segnet", num_classes, pretrained, **kw)


def segnet_basic(num_classes=11, pretrained=False, **kw):
    """SegNet-Basic (TPAMI 2017, Table 1): 4 + 4 stages of 7x7 convs, 1.4M parameters; pretrained
    on CamVid-11 at 360x480 by this repo (input: RGB in 0..255, no mean subtraction)."""
    return _build("segnet_basic", num_classes, pretrained, **kw)


def segnet_lite(num_classes=11, pretrained=False, **kw):
    """SegNet-Lite: 4 stages of one 3x3 conv (the multi-digit MNIST reference model)."""
    return _build("segnet_lite", num_classes, pretrained, **kw)
