"""CPU speed of an exported SegNet against PyTorch (`python -m segnet.export CKPT --bench=true`), and
of the two unpoolings the export can use (`python -m segnet.export --bench_unpool=true`,
docs/export.md)."""
import statistics
import time

import torch
import torch.nn.functional as F

from ..model import SPECS, max_unpool2d_scatter


def bench_cpu(runners, height, width, batch=1, reps=10, threads=2, warmup=2):
    """Median and min seconds per batch for each runner (name -> function numpy -> numpy) on one
    random input, measured the same way: calls interleaved in rotating order, same thread count."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, height, width, generator=g).numpy()  # RGB in 0..1, as the file takes
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name](x)
    times = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            runners[name](x)
            times[name].append(time.perf_counter() - t)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "images_per_s": batch / statistics.median(t),
                   "reps": reps} for name, t in times.items()}


def cpu_lines(res, height, width, batch, threads):
    """bench_cpu's figures as export prints them, one line per runner."""
    return [f"bench {name:<12} {height}x{width} batch {batch}: {1000 * r['median_s']:8.1f} ms median, "
            f"{1000 * r['min_s']:8.1f} ms min, {r['images_per_s']:.2f} img/s ({threads} threads, "
            f"{r['reps']} interleaved runs)" for name, r in res.items()]


def bench_unpool(batch=2, height=360, width=480, reps=15, threads=2):
    """MaxUnpool2d against max_unpool2d_scatter at the VGG SegNet's five unpool shapes, forward and
    forward+backward, interleaved; median and min ms for all five stages together."""
    torch.set_num_threads(threads)
    data, h, w = [], height, width
    for widths in SPECS["segnet"].encoder:
        x = torch.randn(batch, widths[-1], h, w)
        pooled, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
        data.append((pooled.requires_grad_(), idx, (h, w)))
        h, w = pooled.shape[-2:]
    fns = {"MaxUnpool2d": lambda y, i, s: F.max_unpool2d(y, i, 2, 2, output_size=s),
           "scatter": max_unpool2d_scatter}

    def once(fn, backward):
        t = time.perf_counter()
        for y, i, s in data:
            out = fn(y, i, s)
            if backward:
                out.backward(torch.ones_like(out))
        return time.perf_counter() - t

    result = {}
    for backward in (False, True):
        for fn in fns.values():
            once(fn, backward)
        times = {k: [] for k in fns}
        for r in range(reps):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                times[k].append(once(fns[k], backward))
        for k, t in times.items():
            result[f"{k} {'forward+backward' if backward else 'forward'}"] = {
                "median_ms": 1000 * statistics.median(t), "min_ms": 1000 * min(t)}
    return result
