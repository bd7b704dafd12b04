"""The input side of `python -m segnet.bench`: the training DataLoader's images/s (measured alone,
against the training step it feeds) and the colour-mask decode (lookup table vs per-class loop)."""
import time

import numpy as np
import torch

from .. import runtime
from ..build import build_dataset, resolve_normalize
from ..data import DEFAULT_DATASET, sampling
from ..data.camvid import LABEL_COLORS, class_table, color_lut, decode_color_mask
from .reference import NUM_CLASSES


def synthetic_color_mask(height, width, seed=0, block=8):
    """A CamVid-like (H, W, 3) uint8 colour mask: blocks of random label_colors.txt colours."""
    rng = np.random.default_rng(seed)
    palette = np.array([c for c, _ in LABEL_COLORS], np.uint8)
    hb, wb = -(-height // block), -(-width // block)
    idx = rng.integers(0, len(palette), (hb, wb)).repeat(block, 0).repeat(block, 1)[:height, :width]
    return palette[idx]


def loop_decode(rgb, colors, index_of_color):
    """The seed implementation's way: an (H, W, 32) one-hot, one colour comparison per class, argmax,
    then the 32 -> 11 table."""
    onehot = np.zeros(rgb.shape[:2] + (len(colors),), np.uint8)
    for k, colour in enumerate(colors):
        onehot[..., k] = np.all(rgb == np.array(colour, np.uint8), axis=-1)
    to_class = np.array([index_of_color[c] for c in colors], np.uint8)
    return to_class[onehot.argmax(-1)]


def bench_decode(height, width, reps=5):
    """ms per mask for the LUT decode (segnet.data.camvid) and the per-class loop, best of `reps`."""
    color_to_index = class_table(LABEL_COLORS, NUM_CLASSES)[1]
    lut = color_lut(color_to_index)  # built once per data set, not per image
    colors = [c for c, _ in LABEL_COLORS]
    rgb = synthetic_color_mask(height, width)

    def best(fn):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        return 1000 * min(ts), out

    lut_ms, a = best(lambda: decode_color_mask(rgb, lut))
    loop_ms, b = best(lambda: loop_decode(rgb, colors, color_to_index))
    if not np.array_equal(a, b):
        raise RuntimeError("the LUT decode and the per-class loop disagree")
    return {"height": height, "width": width, "classes": len(colors), "lut_ms": lut_ms, "loop_ms": loop_ms,
            "speedup": loop_ms / lut_ms}


def bench_loader(train_defaults, data_root, batch_size, height, width, workers, batches, device):
    """Images/s of the training DataLoader (CamVid, training transforms with flips), measured alone;
    `train_defaults`: Train_SegNet.py's hyperparameters (the rest of the data config)."""
    config = {**train_defaults, "dataset": DEFAULT_DATASET, "data_root": str(data_root), "height": height,
              "width": width, "hflip": True}
    config["normalize"] = resolve_normalize(config)
    dataset = build_dataset(config, "train", train=True)
    sampler = sampling.SeededSampler(len(dataset), config["seed"])
    if len(dataset) < batch_size:
        raise ValueError(f"--batch_size={batch_size} is larger than the {len(dataset)}-image CamVid train split")
    loader = torch.utils.data.DataLoader(sampling.Seeded(dataset), batch_size, sampler=sampler, drop_last=True,
                                         **runtime.loader_kwargs(device, workers))
    n, epoch, t0 = -1, 0, None  # the first batch (worker start-up) is not timed
    while n < batches:
        sampler.set_epoch(epoch)
        for images, _ in loader:
            n += 1
            if n == 0:
                t0 = time.perf_counter()
            if n >= batches:
                break
        epoch += 1
    elapsed = time.perf_counter() - t0
    return {"data_root": str(data_root), "workers": workers, "batches": batches, "batch_size": batch_size,
            "images_per_s": batches * batch_size / elapsed, "transforms": "train (resize, hflip, normalize "
            f"{config['normalize']})", "images": len(dataset)}
