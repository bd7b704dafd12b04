"""One row of `python -m segnet.bench`, timed in a process of its own: this repo's training step or
inference (engine.train_step / engine.predict, set up by runtime.setup as Train_SegNet.py is), or the
reference's (reference.PlainSegNet with PyTorch's defaults); its images/s and peak memory."""
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn as nn

from .. import engine, runtime
from ..class_weights import compute_class_weights
from ..model import SegNet
from .flops import sync
from .reference import NUM_CLASSES, PlainSegNet


def _peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _batch(batch_size, height, width):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, height, width, generator=g)
    masks = torch.randint(0, NUM_CLASSES, (batch_size, height, width), generator=g)
    masks[:, :2] = 255  # a little void, as CamVid has
    return images, masks


def time_step(job):
    """Time `job["phase"]` (train or infer) of one row; runs in a fresh process (rows.run_job)."""
    device, dtype = torch.device(job["device"]), runtime.DTYPES[job["dtype"]]
    b, h, w, yard = job["batch_size"], job["height"], job["width"], job["impl"] == "yardstick"
    torch.manual_seed(0)
    weight = compute_class_weights("paper").to(device)
    images, masks = _batch(b, h, w)
    masks = masks.to(device)
    if yard:  # PyTorch's defaults, as a public training script leaves them
        model = PlainSegNet(NUM_CLASSES).to(device)
        images = images.to(device)
        criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=255)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    else:  # the repo's settings, from the runtime setup Train_SegNet.py uses
        rt = runtime.setup(job["device"], job["dtype"], job["channels_last"], conv_wgrad=job["conv_wgrad"])
        model = rt.place(SegNet(NUM_CLASSES))
        images = rt.images(images)
        optimizer = engine.make_optimizer("sgd", model, 0.001, 0.9, 0.0005)
        scaler = rt.scaler
    step_model = torch.compile(model) if job["compile"] and not yard else model

    if job["phase"] == "train":
        model.train()
        if yard:
            def step():
                optimizer.zero_grad()
                loss = criterion(model(images), masks)
                loss.backward()
                optimizer.step()
                return loss
        else:
            def step():
                return engine.train_step(step_model, images, masks, optimizer, scaler, device, dtype, weight)
    else:
        model.eval()
        if yard:
            def step():
                with torch.no_grad():
                    return model(images).softmax(1)
        else:
            def step():
                with torch.inference_mode():  # as engine.evaluate runs it
                    return engine.predict(step_model, images, device, dtype)[0]

    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_memory_mb(device)
    times = []
    for _ in range(job["warmup"] + job["iters"]):
        sync(device)
        t = time.perf_counter()
        out = step()
        sync(device)
        times.append(time.perf_counter() - t)
    times = times[job["warmup"]:]
    median = statistics.median(times)
    result = {"images_per_s": b / median, "ms_per_image": 1000 * median / b, "iter_s": times,
              "peak_mb": _peak_memory_mb(device), "base_mb": base_mb}
    if job["phase"] == "train":
        result["loss"] = float(out)
        if not np.isfinite(result["loss"]):
            raise RuntimeError(f"{job['name']}: the loss is {result['loss']}")
    return result
