"""Data sets and models from a config dict (the hyperparameters of Train_SegNet.py); the registries
here (NORMALIZE_CHOICES), in segnet.data (DATASETS, segnet.data.register) and in segnet.model (SPECS) give
the allowed values."""
from .data import entry
from .model import SPECS, SegNet, load_vgg16_encoder
from .transforms import NORMALIZATIONS, eval_transforms, normalization_for, train_transforms

NORMALIZE_CHOICES = ("auto", *NORMALIZATIONS)  # auto: follow the encoder's initial weights


def resolve_normalize(config):
    """`normalize=auto` follows the encoder init (ImageNet mean/std for VGG weights)."""
    n = config["normalize"]
    return normalization_for(config["init_encoder"]) if n == "auto" else n


def build_dataset(config, split, train):
    """The data set for `split`, with training (`train=True`) or evaluation transforms."""
    h, w, norm = config["height"], config["width"], resolve_normalize(config)
    t = (train_transforms(h, w, norm, hflip=config["hflip"], scale_min=config["scale_min"])
         if train else eval_transforms(h, w, norm))
    return entry(config["dataset"]).build(config["data_root"], split, config["num_classes"], t, config["download"])


def build_model(config, init=True):
    """SegNet from the config; `init` loads the encoder's ImageNet weights when asked."""
    if config["model"] not in SPECS:
        raise ValueError(f"model={config['model']!r}: expected one of {sorted(SPECS)}")
    model = SegNet(config["num_classes"], 3, spec=config["model"], bayesian=config["bayesian"],
                   dropout=config["dropout"])
    if init and config["init_encoder"] != "none":
        if config["model"] != "segnet":
            raise ValueError(f"init_encoder={config['init_encoder']} needs model=segnet (the VGG16 encoder); "
                             f"use init_encoder=none for {config['model']}")
        load_vgg16_encoder(model, config["init_encoder"])
    return model


def check_input_size(config):
    """A new run's --height and --width leave its deepest encoder stage (the image halved once per
    pooling before it, rounding up) more than one pixel: BatchNorm in training mode needs more than
    one value per channel, and a batch may hold a single image (the BN recompute's last one)."""
    halvings = len(SPECS[config["model"]].encoder) - 1
    side = 2 ** halvings
    if config["height"] <= side and config["width"] <= side:
        raise ValueError(f"--height={config['height']} --width={config['width']}: {config['model']}'s deepest stage "
                         f"would be 1x1 (the image halved {halvings} times), where BatchNorm has a single value "
                         f"per channel for one image; give a --height or --width above {side}")
