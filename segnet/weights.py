"""Shipped weights: a trained checkpoint reduced to what inference needs.

    python -m segnet.weights checkpoints/RUN/best.pt --out=weights/segnet_basic_camvid.pt

A weights file is a dict that loads with `torch.load(weights_only=True)`: the model's state dict
(fp32 by default; `--dtype=float16` halves the size, but rounding the weights moves figures: on
the shipped SegNet-Basic it moved test mIoU by 0.01 point, docs/weights.md), the run's
config, the class names, the iteration and the validation metrics of the checkpoint, and a note of
its source.
`Evaluate_SegNet.py` takes it like a checkpoint; `hubconf.py` loads it with `load_weights_file`.
"""
import os
import pathlib
import sys

import torch

from .checkpoint import (CHECKPOINT_KIND, SHA256_LIST, WEIGHTS_KIND, listed_sha256, load_checkpoint,
                         model_from_checkpoint, save_checkpoint)
from .config import help_text, parse_overrides, wants_help
from .errors import UserError, run_cli, user_errors
from .files import check_replaceable, check_writable_folder, make_folders, sha256
from .visualize import checkpoint_palette


def weights_from_checkpoint(ckpt, dtype=torch.float32, source=""):
    """The weights-file dict of a training checkpoint dict (floating tensors cast to `dtype`;
    BN's integer counters stay as they are)."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return {"kind": WEIGHTS_KIND, "model": state, "config": dict(ckpt["config"]),
            "class_names": list(ckpt["class_names"]), "iter": ckpt.get("iter"),
            "metrics": dict(ckpt.get("metrics") or {}), "source": source,
            **({"palette": list(ckpt["palette"])} if ckpt.get("palette") else {})}


def save_weights(weights, path):
    """Write atomically (checkpoint.save_checkpoint; the dict keeps its own kind); returns the
    file's sha256. WriteFailed (one line) when the path cannot be written or the disk is full."""
    path = pathlib.Path(path)
    check_writable_folder(path.parent, "--out folder")
    make_folders([path.parent])
    save_checkpoint(path, weights)
    return sha256(path)


def load_weights_file(path, **kw):
    """(model, weights dict) from a weights file written by this module: a SegNet in fp32 and eval
    mode; `model.class_names` and `model.normalize` (the input the
    weights expect) are set from the file. `kw` overrides the stored config (e.g. bayesian=True)."""
    weights = load_checkpoint(path, kinds=(WEIGHTS_KIND,))
    if kw:
        weights = {**weights, "config": {**weights["config"], **kw}}
    model, weights = model_from_checkpoint(path, weights)
    model.class_names, model.normalize = list(weights["class_names"]), weights["config"]["normalize"]
    model.palette = checkpoint_palette(weights)  # the data set's display colours, one (r, g, b) per class
    return model, weights


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    defaults = {"out": "", "dtype": "float32", "overwrite": False}  # overwrite: --out may replace a checkpoint
    if wants_help(argv):
        print(help_text(__doc__, defaults))
        return 0
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1:
        raise UserError("usage: python -m segnet.weights CHECKPOINT --out=PATH [--dtype=float32|float16] "
                        "[--overwrite=true]")
    args = parse_overrides(defaults, [a for a in argv if a.startswith("--")], presets={},
                           choices={"dtype": ("float16", "float32")})
    if not args["out"]:
        raise UserError("--out=PATH is needed: where to write the weights file")
    with user_errors():
        check_writable_folder(pathlib.Path(args["out"]).parent, "--out folder")  # before the work
        check_replaceable(args["out"], [positional[0]], args["overwrite"])
        ckpt = load_checkpoint(positional[0], kinds=(CHECKPOINT_KIND, WEIGHTS_KIND))
    if ckpt["kind"] == WEIGHTS_KIND:
        raise UserError(f"{positional[0]} already is a weights file (written by python -m segnet.weights): "
                        f"evaluate or export it as it is; give a training checkpoint (RUN/best.pt) to make one")
    weights = weights_from_checkpoint(ckpt, getattr(torch, args["dtype"]),
                                      source=f"{positional[0]} (iteration {ckpt.get('iter')})")
    with user_errors():
        digest = save_weights(weights, args["out"])
    size = os.path.getsize(args["out"])
    print(f"wrote {args['out']} ({size / 1e6:.2f} MB, {args['dtype']}) sha256 {digest}")
    listed = listed_sha256(args["out"])
    if listed not in (None, digest):  # a new shipped file: loading it is refused until its line is new
        print(f"note: weights/{SHA256_LIST} lists sha256 {listed} for {pathlib.Path(args['out']).name}; "
              f"put {digest} in its place (and in the README), docs/weights.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
