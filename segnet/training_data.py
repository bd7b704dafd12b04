"""What a training run reads: the training and validation sets, checked before the first step,
their loaders in a resumable order, and the class weights of the loss.

    data = TrainingData(config, rt, workers, ckpt)  # Train_SegNet.py; workers: a resolved count
    for images, masks in data.train_loader: ...
"""

import torch

from . import device_data, resume
from .build import build_dataset
from .class_weights import compute_class_weights, weights_from_record, weights_record
from .data import DATASETS, Labelled, MissingSplit, collate, collate_images, sampling
from .data.check import check_dataset
from .errors import read_errors
from .files import user_cache_dir
from .transforms import to_float, train_geometry


class TrainingData:
    """The training and validation sets and loaders, and the class weights of the loss (those
    stored in `resumed`, the checkpoint of a resumed run, whose class names the data must have,
    in its order). `workers`: the DataLoader worker processes, resolved (runtime.resolve_num_workers)."""

    def __init__(self, config, rt, workers, resumed=None):
        self.config, self.rt, self.workers = config, rt, workers
        if rt.ddp and not rt.master:
            torch.distributed.barrier()  # rank 0 fetches missing data first, the others then find it
        DATASETS[config["dataset"]].ensure(config["data_root"], config["download"])
        self.train_set = build_dataset(config, "train", train=True)
        if resumed is not None:  # before anything is checked or counted: the run's classes, in its order
            resume.check_data_classes(resumed, self.train_set.class_names, config["resume"], config["data_root"])
        self.val_set = validation_set(config)
        # before the first iteration: every pair pairs up, decodes, agrees in size and holds classes
        # or void (the first problem named)
        self.checked = check_dataset(self.train_set) + (check_dataset(self.val_set.dataset) if self.val_set else 0)
        if rt.ddp and rt.master:
            torch.distributed.barrier()
        self.class_names, self.palette = list(self.train_set.class_names), [list(c) for c in self.train_set.palette]
        stored_weights = resumed.get("class_weights") if resumed is not None else None
        if stored_weights is None:
            weight = compute_class_weights(config["class_weights"], self.train_set, config["num_classes"],
                                           cache_dir=user_cache_dir())
            stored_weights = weights_record(config["class_weights"], weight, self.class_names)
        self.class_weights = stored_weights
        weight = weights_from_record(stored_weights, self.class_names)
        self.weight = weight.to(rt.device) if weight is not None else None
        self.sampler = sampling.SeededSampler(len(self.train_set), config["seed"], shuffle=True, rank=rt.rank,
                                            world=rt.world)
        self.batches = sampling.EpochBatches(self.sampler, config["batch_size"])  # every image once per epoch
        kw = rt.loader_kwargs(workers)
        self.on_device = load_on_device(config, rt, workers)  # None: the DataLoader reads the files
        self.train_loader = (self.on_device.loader(self.batches) if self.on_device is not None else
                             read_errors(torch.utils.data.DataLoader(
                                 sampling.Seeded(self.train_set), batch_sampler=self.batches, **kw,
                                 generator=quiet_generator())))
        self.val_loader = self.val_set and read_errors(torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.val_set, range(rt.rank, len(self.val_set), rt.world)),
            config["batch_size"], collate_fn=collate, **kw))

    def describe(self):
        """One log line: the splits' sizes, where the training batches are made, the class weights."""
        config, split = self.config, self.config["eval_split"]
        val = f"{len(self.val_set)} {split}" if self.val_set else f"no {split} split,"
        where = (f"decoded onto {self.rt.device} ({self.on_device.nbytes / 2**20:.0f} MB), batches made there"
                 if self.on_device is not None else f"{self.workers} loader workers")
        return (f"data: {len(self.train_set)} train / {val} images from {config['data_root']} ({self.checked} "
                f"image/label files checked; training split {where}), class weights {self.class_weights['method']}")

    def bn_batches(self):
        """compute_bn_statistics.py's input: this rank's share of the training set with the
        evaluation transforms (resized and normalised on the device when the split is there)."""
        config, rt = self.config, self.rt
        mine = range(rt.rank, len(self.train_set), rt.world)
        if self.on_device is not None:
            return self.on_device.eval_batches(mine, config["batch_size"], config["height"], config["width"])
        train_eval = build_dataset(config, "train", train=False)
        return read_errors(torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_eval, mine), config["batch_size"], collate_fn=collate_images,
            **rt.loader_kwargs(self.workers), generator=quiet_generator()))


def data_num_classes(config, given):
    """The class count of a new run: what the data set says (a folder's dataset.json), or
    --num_classes where it says nothing; a --num_classes that disagrees with the data is refused."""
    requested = config["num_classes"] if given else 0
    n = DATASETS[config["dataset"]].num_classes(config["data_root"], requested)
    if requested and n != requested:
        raise ValueError(f"--num_classes={requested}, but the {config['dataset']} data at {config['data_root']} "
                        f"has {n} classes")
    return n


def validation_set(config):
    """The eval_split, labelled; None when it does not exist and no validation is asked for
    (eval_interval=0 on a data set without that split)."""
    try:
        return Labelled(build_dataset(config, config["eval_split"], train=False))
    except MissingSplit as e:
        if config["eval_interval"] == 0:
            return None
        raise MissingSplit(f"{e}; validation needs it: add it, or pass --eval_split=test, or --eval_interval=0 "
                           f"to train without validation") from None


def quiet_generator():
    """A DataLoader draws its workers' base seed from this instead of the run's RNG, so the
    run's random stream (dropout) is the same with files, with data on the device, and resumed
    (the data's own randomness comes from SeededSampler's per-sample seeds)."""
    return torch.Generator().manual_seed(0)


def load_on_device(config, rt, workers):
    """With data_on_device (auto: on CUDA when it fits), the training split decoded once onto the
    device, its batches augmented there (segnet.device_data); else None."""
    raw = device_data.raw_dataset(lambda t: DATASETS[config["dataset"]].build(
        config["data_root"], "train", config["num_classes"], t, config["download"]))
    if not device_data.resolve_data_on_device(config["data_on_device"], rt.device, lambda: device_data.split_bytes(raw)):
        return None
    return device_data.DeviceData.load(
        raw, rt.device, train_geometry(config["height"], config["width"], config["hflip"], config["scale_min"]),
        to_float(config["normalize"]), workers=workers)
