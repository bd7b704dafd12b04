"""The arithmetic of `python -m segnet.bench`: FLOPs per image (counted on the meta device) and the
dense matmul peak the utilisation figures divide by."""
import copy
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model, height, width, train=False):
    """FLOPs of one image (batch 1) through `model`, forward or forward+backward, counted by
    torch.utils.flop_counter on the meta device (shapes only: instant at any size).
    A model that is not on the meta device is copied there; the model itself is left alone."""
    if next(model.parameters()).device.type != "meta":
        model = copy.deepcopy(model).to_empty(device="meta")
    was_training = model.training
    model.train(train)
    cin = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.zeros(1, cin, height, width, device="meta")
    with FlopCounterMode(display=False) as counter:
        y = model(x)
        if train:
            y.float().sum().backward()
    model.train(was_training)
    return int(counter.get_total_flops())


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
