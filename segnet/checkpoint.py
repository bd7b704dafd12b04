"""Checkpoints: one dict (unwrapped model, optimizer, scaler, config, iteration, best score, class
names, metrics, RNG state), written to a temp file and renamed; and the one way back to a model.

    model, ckpt = model_from_checkpoint("checkpoints/RUN/best.pt")   # evaluation, export

Every file records its kind. v2 files hold their whole config (every key of the run); v1 files,
written before, may lack keys the script gained later, and are migrated on load (migrate_v1).
A file the repo ships (listed in weights/files.sha256) must have its listed sha256, and every
file's config must hold the keys a model is rebuilt from, with values of their type (check_contents).
"""
import hashlib
import io
import math
import pathlib

import torch

from .build import build_model
from .config import V1_DEFAULTS
from .finite import first_nonfinite
from .files import replace_file, serialized, temp_files, torch_archive

CHECKPOINT_KIND = "segnet-checkpoint-v2"
WEIGHTS_KIND = "segnet-weights-v2"  # shipped weights (segnet/weights.py): model, config, class names only
V1_KINDS = {"segnet-checkpoint-v1": CHECKPOINT_KIND, "segnet-weights-v1": WEIGHTS_KIND}
# The repo's shipped files and their sha256, one "HASH  NAME" line each (sha256sum's format).
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent / "weights"
SHA256_LIST = "files.sha256"
# What every reader of a stored config relies on: key -> (type, smallest value or None). The
# model is rebuilt from these; evaluation, export and video read the input size and normalisation.
CONFIG_KEYS = {"model": (str, None), "num_classes": (int, 1), "height": (int, 1), "width": (int, 1),
               "bayesian": (bool, None), "dropout": (float, 0.0), "normalize": (str, None),
               "dataset": (str, None), "data_root": (str, None), "init_encoder": (str, None)}


def save_checkpoint(path, checkpoint):
    """Write to a temp file next to `path`, then rename (files.replace_file): a crash never leaves
    half a checkpoint, a full disk is one WriteFailed naming the path and the bytes needed.
    The dict is marked as a training checkpoint unless it carries its own kind (a weights file).
    A model with a non-finite weight is never written (ValueError): it would pass for a trained one."""
    bad = first_nonfinite(checkpoint.get("model", {}))
    if bad is not None:
        raise ValueError(f"{path} not written: the model's {bad} is not finite (NaN or inf); the run diverged")
    replace_file(path, serialized(torch.save, {"kind": CHECKPOINT_KIND, **checkpoint}))


def load_checkpoint(path, map_location="cpu", kinds=(CHECKPOINT_KIND,)):
    """A checkpoint written by save_checkpoint (or, where `kinds` allows, a weights file).
    FileNotFoundError if there is no such file, ValueError if it is not one of ours (corrupt,
    another format, another program's, or a weights file where training state is needed)."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder, not a file: name the checkpoint in it, "
                                f"{path / 'last.pt'} (to resume) or {path / 'best.pt'}")
    if not path.is_file():
        cut = temp_files(path.parent, path.name) if path.parent.is_dir() else []
        if cut:  # a save was under way when the process was killed, and it was the first one
            raise FileNotFoundError(f"checkpoint {path} not found: only {cut[0].name}, the temp file of a save "
                                    f"that was cut short (the process was killed while writing it, before "
                                    f"any {path.name} existed), is there; it is incomplete: start the run "
                                    f"afresh (Train_SegNet.py --overwrite=true with that --out_dir removes it)")
        raise FileNotFoundError(f"checkpoint {path} not found")
    source = verified_source(path)
    if torch_archive(source) == "torchscript":  # torch.load would warn, then fail with an unpickler message
        raise ValueError(f"{path} is a TorchScript export (python -m segnet.export), not a checkpoint: load it "
                         f"with torch.jit.load; expected last.pt or best.pt written by Train_SegNet.py")
    try:
        ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own message is long and about its unpickler, not the file
        raise ValueError(f"checkpoint {path} cannot be read ({e.__class__.__name__}): it is corrupt or not a "
                         f"PyTorch file; expected last.pt or best.pt written by Train_SegNet.py") from None
    if isinstance(ckpt, dict) and ckpt.get("kind") in V1_KINDS:
        if not isinstance(ckpt.get("config"), dict):
            check_contents(ckpt, path)  # says which key is missing
        ckpt = migrate_v1(ckpt)
    if isinstance(ckpt, dict) and ckpt.get("kind") == WEIGHTS_KIND and WEIGHTS_KIND not in kinds:
        raise ValueError(f"{path} is a weights file (model only, no optimizer state): it can be evaluated "
                         f"or exported, not resumed; resume from a training run's last.pt")
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in kinds:
        raise ValueError(f"{path} is not a SegNet checkpoint of this repo (expected a dict with "
                         f"kind={CHECKPOINT_KIND!r}, written by Train_SegNet.py)")
    check_contents(ckpt, path)
    bad = first_nonfinite(ckpt["model"])
    if bad is not None:  # evaluation, export, weights, the hub and resume all load through here
        raise ValueError(f"checkpoint {path} holds non-finite weights ({bad}): the run that wrote it diverged; "
                         f"use an earlier checkpoint")
    return ckpt


def listed_sha256(path):
    """The sha256 that weights/files.sha256 lists for `path`, or None. Only the repo's own
    weights/ folder counts (the path resolved, links followed): a copy elsewhere, even of the same
    name, is the user's file. The list is read afresh each time, so an edit to it is never hidden."""
    folder = pathlib.Path(SHIPPED_DIR).resolve()
    path = pathlib.Path(path).resolve()
    listing = folder / SHA256_LIST
    if path.parent != folder or not listing.is_file():
        return None
    for line in listing.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == path.name:
            return fields[0].lower()
    return None


def verified_source(path):
    """What torch.load reads: `path` itself, or, for a file weights/files.sha256 lists, the bytes
    whose sha256 was just checked (read once, so the file cannot change between check and load).
    A mismatch is a ValueError naming the file, both hashes and how to get the shipped file back."""
    expected = listed_sha256(path)
    if expected is None:
        return path
    data = pathlib.Path(path).read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ValueError(f"{path} is not the file this repo ships: its sha256 is {found}, {SHA256_LIST} lists "
                         f"{expected}; restore it (git checkout -- weights/{pathlib.Path(path).name}, or clone "
                         f"the repo again), or put a file of your own outside weights/")
    return io.BytesIO(data)


def check_contents(ckpt, path):
    """The keys every reader uses: the model's state dict, the config (CONFIG_KEYS, each of its
    type and range) and one class name per class; a ValueError naming the file and the key."""
    def bad(what):
        return ValueError(f"checkpoint {path}: {what}; the file is damaged or was not written by this repo")
    for key in ("model", "config"):
        if not isinstance(ckpt.get(key), dict):
            raise bad(f"no {key!r} dict" if key not in ckpt else f"{key!r} is not a dict")
    config = ckpt["config"]
    for key, (kind, low) in CONFIG_KEYS.items():
        if key not in config:
            raise bad(f"its config has no {key!r}")
        value = config[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise bad(f"its config's {key}={value!r} is not {'a number' if kind is float else kind.__name__}")
        if low is not None and value < low:
            raise bad(f"its config's {key}={value!r} is below {low}")
    names = ckpt.get("class_names")
    if not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise bad("no 'class_names' list of strings")
    if len(names) != config["num_classes"]:
        raise bad(f"{len(names)} class names for num_classes={config['num_classes']}")


def _fit(path, load):
    try:
        load()
    except (RuntimeError, ValueError, KeyError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # names the layers
        raise ValueError(f"checkpoint {path} does not fit this model: {detail[:400]}") from None


def migrate_v1(ckpt):
    """A v1 file's dict as v2: its config completed with the v1 defaults (the values a missing key
    had when the file was written), then the values v2 renamed: compile is a bool ("auto" was
    always off), channels_last and data_on_device are strings (older runs stored bools), and
    conv_wgrad is gone (the runtime decides it). The file itself is not rewritten."""
    config = {**V1_DEFAULTS, **ckpt["config"]}
    config.pop("conv_wgrad", None)
    config["compile"] = config["compile"] in (True, "true")
    for key in ("channels_last", "data_on_device"):
        if isinstance(config[key], bool):
            config[key] = "true" if config[key] else "false"
    return {**ckpt, "kind": V1_KINDS[ckpt["kind"]], "config": config}


def model_from_checkpoint(path, ckpt=None):
    """The model a checkpoint (or a shipped weights file) describes (its own config), with its
    weights in fp32, on the CPU in eval mode, and the checkpoint dict. `ckpt`: the dict if already
    loaded from `path` (by load_checkpoint, so migrated). Evaluation, resume and export all come
    through here, so a checkpoint that does not fit says so in one way."""
    ckpt = load_checkpoint(path, kinds=(CHECKPOINT_KIND, WEIGHTS_KIND)) if ckpt is None else ckpt
    model = build_model(ckpt["config"], init=False)
    _fit(path, lambda: model.load_state_dict(ckpt["model"]))
    return model.eval(), ckpt


def restore_optimizer(optimizer, ckpt, path, scaler=None):
    """Resume: the optimizer's (and GradScaler's) state from the checkpoint."""
    _fit(path, lambda: optimizer.load_state_dict(ckpt["optimizer"]))
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
