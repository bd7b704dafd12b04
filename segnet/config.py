"""The one command-line style of every entry point: `--key=value` over a dict of defaults.

Used by Train_SegNet.py (over its hyperparameter block, with named presets), Evaluate_SegNet.py,
`python -m segnet.bench` and `python -m segnet.data`. nanoGPT's configurator idea without `exec`:
every override is parsed, type-checked against the default's type, and an unknown key is refused
with the list of valid ones. A boolean key, or one that takes true, may also be given bare
(`--hflip` = `--hflip=true`).
Keys starting with `_` are internal: accepted, but not listed by --help.
"""
import math
import os

from .errors import UserError

# Named presets, applied before explicit --key=value (which still win). A preset states only what
# it changes: from Train_SegNet.py's defaults, or, with "extends", from the preset it names.
PRESETS = {
    "camvid": {},  # the defaults at the top of Train_SegNet.py are the paper's CamVid recipe
    # SegNet-Basic (Table 1), SegNet-Tutorial Models/segnet_basic_solver.prototxt: SGD lr 0.1 fixed,
    # momentum 0.9, weight decay 5e-4, batch 4, 10,000 iterations; segnet_basic_train.prototxt:
    # raw 0-255 input (no mean subtraction), trained from scratch, the median-frequency weights
    # (class_weights=auto: on CamVid-11 the published ones, on any other data set its own median
    # frequency; a preset describes a model and a recipe, never one data set's weights).
    # TPAMI Sec. 3.3: the iteration with the highest validation global accuracy is the one reported.
    "segnet_basic": {
        "model": "segnet_basic", "init_encoder": "none", "normalize": "raw255", "optimizer": "sgd",
        "batch_size": 4, "max_iters": 10000, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
        "lr_schedule": "fixed", "caffe_lr_mult": True, "class_weights": "auto", "eval_interval": 500,
        "best_metric": "global_accuracy",
        # at lr 0.1 BN's running averages lag the weights (val G 27% vs 54% with recomputed
        # statistics at iteration 250): every validation uses compute_bn_statistics.py's
        "bn_recompute_val": True,
    },
    # SegNet-Basic with the paper's own Table 1 recipe, TPAMI Sec. 3.3: SGD "with a fixed learning
    # rate of 0.1 and momentum of 0.9", trained "until the training loss converges"; "before each
    # epoch, the training set is shuffled and each mini-batch (12 images) is then picked in order
    # thus ensuring that each image is used only once in an epoch" (data.sampling.EpochBatches); "we
    # select the model which performs highest on a validation dataset" (here by G, as segnet_basic).
    # 16,000 iterations x 12 images = 523 epochs of the 367 training frames, chainercv's schedule for
    # the same recipe. Everything else is segnet_basic's.
    "segnet_basic_paper": {"extends": "segnet_basic", "batch_size": 12, "max_iters": 16000},
    # SegNet-Lite on 64x64 multi-digit MNIST: the second reference system. Tuned to reach test
    # mIoU >= 0.85 within 10 minutes on any 2-core x86 CPU: 1,200 iterations gave 89.20 in 482 s
    # on an fp32-only AMD EPYC (docs/reproduction.md); 2,500 gave 92.43 but took ~15 minutes there.
    "multidigit_mnist": {
        "dataset": "multidigit_mnist", "data_root": "data/mnist", "model": "segnet_lite",
        "num_classes": 11, "height": 64, "width": 64, "init_encoder": "none",
        "normalize": "imagenet",  # the reference normalised its inputs ImageNet-style
        "class_weights": "none", "batch_size": 32, "max_iters": 1200, "optimizer": "adamw",
        "lr": 0.003, "momentum": 0.9, "weight_decay": 0.0001, "lr_schedule": "cosine",
        "caffe_lr_mult": False, "eval_interval": 600, "eval_split": "test", "bn_recompute": False,
        "hflip": False, "log_interval": 25, "download": True,
    },
}

# Train_SegNet.py's hyperparameter block as it stood while checkpoints and weights files of kind v1
# were written (segnet.checkpoint migrates them on load). Frozen: a v1 file never changes, so
# neither does this table, whatever the script's defaults become.
V1_DEFAULTS = {
    "config": "camvid", "dataset": "camvid", "data_root": "data/CamVid", "download": True, "num_classes": 11,
    "height": 360, "width": 480, "hflip": False, "scale_min": 1.0, "normalize": "auto", "eval_split": "val",
    "num_workers": "auto", "model": "segnet", "init_encoder": "vgg16", "bayesian": False, "dropout": 0.5,
    "class_weights": "auto", "optimizer": "sgd", "batch_size": 4, "max_iters": 40000, "lr": 0.001,
    "momentum": 0.9, "weight_decay": 0.0005, "caffe_lr_mult": True, "lr_schedule": "fixed",
    "eval_interval": 1000, "best_metric": "mean_iou", "bn_recompute": True, "bn_recompute_val": False,
    "out_dir": "", "overwrite": False, "resume": "", "log_interval": 10, "device": "auto", "dtype": "auto",
    "channels_last": "auto", "conv_wgrad": "auto", "compile": "auto", "data_on_device": "auto",
    "sync_bn": False, "seed": 0,
    "init_from": "",  # added since: no v1 run started from a checkpoint's weights
}


def resolve_preset(name, presets=PRESETS):
    """A preset's whole set of changes: those of the preset it extends (recursively), then its own."""
    if name not in presets:
        raise UserError(f"--config={name}: unknown preset; expected one of {sorted(presets)}")
    own = dict(presets[name])
    base = own.pop("extends", None)
    return {**(resolve_preset(base, presets) if base is not None else {}), **own}


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(key, text, default):
    """Convert `text` to the type of `default`; a mismatch is a UserError naming the key."""
    kind = type(default)
    if kind is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise UserError(f"--{key}={text}: expected a boolean (true/false)")
    if kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            raise UserError(f"--{key}={text}: expected {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):  # a NaN passes every >= minimum, and either one wrecks the first step
            raise UserError(f"--{key}={text}: expected a finite number")
        return value
    if text == "~" or text.startswith("~/"):  # the shell expands ~ only at a word's start, not after --key=
        return os.path.expanduser(text)
    return text


def parse_overrides(defaults, argv, presets=PRESETS, choices=None, minimums=None):
    """Return a new config dict: defaults, then `--config=NAME`'s preset, then `--key=value`s.

    `choices` maps a key to its allowed values and `minimums` a numeric key to its smallest
    allowed value (both checked after all overrides are applied).
    """
    config = dict(defaults)
    pairs = []
    for arg in argv:
        if arg.startswith("--") and "=" not in arg and (isinstance(defaults.get(arg[2:]), bool)
                                                        or "true" in (choices or {}).get(arg[2:], ())):
            arg += "=true"  # a boolean, or a key with true among its values (channels_last=auto|true|false)
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"unexpected argument {arg!r}: use --key=value (keys: {', '.join(visible(defaults))})")
        key, value = arg[2:].split("=", 1)
        pairs.append((key, value))
    for key, value in pairs:
        if key == "config":
            config.update(resolve_preset(value, presets))
            config["config"] = value
    for key, value in pairs:
        if key == "config":
            continue
        if key not in defaults:
            raise UserError(f"unknown key --{key}; valid keys: {', '.join(sorted(visible(defaults)))}")
        config[key] = parse_value(key, value, defaults[key])
    for key, allowed in (choices or {}).items():
        if config[key] not in allowed:
            raise UserError(f"--{key}={config[key]}: expected one of {', '.join(map(str, allowed))}")
    for key, low in (minimums or {}).items():
        if config[key] < low:
            raise UserError(f"--{key}={config[key]}: expected a value >= {low}")
    return config


def visible(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def format_config(config):
    config = visible(config)
    width = max(map(len, config))
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in config.items())


def wants_help(argv):
    return bool({"-h", "--help"} & set(argv))


def help_text(doc, defaults, what="options"):
    """A module docstring, then every key with its default."""
    return f"{doc.strip()}\n\n{what} (--key=value):\n{format_config(defaults)}"

