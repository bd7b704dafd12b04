"""What `python -m segnet.bench` times in a child process of its own (rows.run_child), so that a row's
peak memory is its own: one row's phase, this repo's training step or inference (engine.train_step /
evaluation.predict, set up by runtime.setup as Train_SegNet.py is) or the reference's (reference.PlainSegNet
with PyTorch's defaults), or the dense matmul peak. This module imports only what a row runs.

    python -m segnet.bench.steps JOB_JSON     # internal: one job, its result written to job["out"]
"""
import json
import pathlib
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from .. import engine, evaluation, optim, runtime
from ..class_weights import compute_class_weights
from ..model import SegNet
from .reference import NUM_CLASSES, PlainSegNet


def sync(device):
    """Wait for the device's queued work, so a host clock times it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype, max_size=4096, reps=3):
    """Best dense matmul throughput (FLOP/s) over n x n @ n x n for n in 1024, 2048, 4096, 8192 (<= max_size;
    a GPU reaches its peak only at 8192)."""
    sizes = [n for n in (1024, 2048, 4096, 8192) if n <= max_size] or [max_size]
    inner = 20 if device.type == "cuda" else 1  # GPU matmuls are sub-millisecond: time a burst
    best = (0.0, sizes[0])
    for n in sizes:
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        a @ b
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            for _ in range(inner):
                c = a @ b
            sync(device)
            rate = 2 * n ** 3 * inner / (time.perf_counter() - t)
            best = max(best, (rate, n))
        del a, b, c
    return best


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
    """Time `job["phase"]` (train or infer) of one row."""
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
        optimizer = optim.make_optimizer("sgd", model, 0.001, 0.9, 0.0005)
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
                with torch.inference_mode():  # as evaluation.evaluate runs it
                    return evaluation.predict(step_model, images, device, dtype)[0]

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


def run_job(job):
    """One measurement in this process, written to job["out"] as JSON."""
    if job["kind"] == "step":
        result = time_step(job)
    elif job["kind"] == "matmul":
        device = torch.device(job["device"])
        if device.type == "cuda":  # fp32 matmuls as the repo runs them (TF32)
            torch.backends.cuda.matmul.allow_tf32 = True
        result = {}
        for name in job["dtypes"]:
            rate, n = matmul_peak(device, getattr(torch, name), job["max_size"])
            result[name] = {"flops": rate, "tflops": rate / 1e12, "size": n}
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    pathlib.Path(job["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(json.loads(sys.argv[1])))
