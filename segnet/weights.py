"""Shipped weights: a trained checkpoint reduced to what inference needs.

    python -m segnet.weights checkpoints/RUN/best.pt --out=weights/segnet_basic_camvid.pt

A weights file is a dict that loads with `torch.load(weights_only=True)`: the model's state dict
(fp16 by default: half the size, and the metrics do not move; see README), the run's config, the
class names, the iteration and the validation metrics of the checkpoint, and a note of its source.
`Evaluate_SegNet.py` takes it like a checkpoint; `hubconf.py` loads it with `load_weights_file`.
"""
import hashlib
import os
import pathlib
import sys

import torch

WEIGHTS_KIND = "segnet-weights-v1"


def weights_from_checkpoint(ckpt, dtype=torch.float16, source=""):
    """The weights-file dict of a training checkpoint dict (floating tensors cast to `dtype`;
    BN's integer counters stay as they are)."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return {"kind": WEIGHTS_KIND, "model": state, "config": dict(ckpt["config"]),
            "class_names": list(ckpt["class_names"]), "iter": ckpt.get("iter"),
            "metrics": dict(ckpt.get("metrics") or {}), "source": source}


def save_weights(weights, path):
    """Write atomically; returns the file's sha256."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(weights, tmp)
    os.replace(tmp, path)
    return sha256(path)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_from_weights(weights, **kw):
    """A SegNet in fp32 and eval mode with the weights loaded; `model.class_names` and
    `model.normalize` (the input the weights expect) are set from the file."""
    from .model import SegNet
    config = weights["config"]
    model = SegNet(config["num_classes"], 3, spec=config["model"], **{"bayesian": config.get("bayesian", False),
                                                                       "dropout": config.get("dropout", 0.5), **kw})
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights["model"].items()})
    model.class_names, model.normalize = list(weights["class_names"]), config["normalize"]
    return model.eval()


def load_weights_file(path, **kw):
    """(model, weights dict) from a weights file written by this module."""
    weights = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(weights, dict) or weights.get("kind") != WEIGHTS_KIND:
        raise ValueError(f"{path} is not a SegNet weights file (expected kind={WEIGHTS_KIND!r}, "
                         f"written by python -m segnet.weights)")
    return model_from_weights(weights, **kw), weights


def main(argv=None):
    from .config import parse_overrides
    from .engine import load_checkpoint
    from .errors import UserError
    argv = sys.argv[1:] if argv is None else argv
    defaults = {"out": "", "dtype": "float16"}
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1:
        raise UserError("usage: python -m segnet.weights CHECKPOINT --out=PATH [--dtype=float16|float32]")
    args = parse_overrides(defaults, [a for a in argv if a.startswith("--")], presets={},
                           choices={"dtype": ("float16", "float32")})
    if not args["out"]:
        raise UserError("--out=PATH is needed: where to write the weights file")
    ckpt = load_checkpoint(positional[0])
    weights = weights_from_checkpoint(ckpt, getattr(torch, args["dtype"]),
                                      source=f"{positional[0]} (iteration {ckpt.get('iter')})")
    digest = save_weights(weights, args["out"])
    size = os.path.getsize(args["out"])
    print(f"wrote {args['out']} ({size / 1e6:.2f} MB, {args['dtype']}) sha256 {digest}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main))
