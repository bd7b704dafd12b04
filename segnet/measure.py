"""What `python -m segnet.bench` measures, each in a process of its own: FLOPs (counted on the meta
device), the dense matmul peak, one training or inference configuration (the yardstick or this
repo's step), the training DataLoader's images/s and the colour-mask decode."""
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn as nn

NUM_CLASSES = 11


# -- FLOPs and the matmul peak ------------------------------------------------------------------
def count_flops(model, height, width, train=False):
    """FLOPs of one image (batch 1) through `model`, forward or forward+backward, counted by
    torch.utils.flop_counter on the meta device (shapes only: instant at any size).
    A model that is not on the meta device is copied there; the model itself is left alone."""
    from torch.utils.flop_counter import FlopCounterMode
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


def _sync(device):
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
            _sync(device)
            t = time.perf_counter()
            for _ in range(inner):
                c = a @ b
            _sync(device)
            rate = 2 * n ** 3 * inner / (time.perf_counter() - t)
            best = max(best, (rate, n))
        del a, b, c
    return best


# -- one configuration, in its own process ------------------------------------------------------
def _peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _batch(batch_size, height, width):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, height, width, generator=g)
    masks = torch.randint(0, NUM_CLASSES, (batch_size, height, width), generator=g)
    masks[:, :2] = 255  # a little void, as CamVid has
    return images, masks


def measure_config(job):
    """Time `job["phase"]` (train or infer) of one row; runs in a fresh process (see `_child`)."""
    from . import engine, optim, runtime
    from .class_weights import compute_class_weights
    from .model import SegNet
    from .yardstick import YardstickSegNet
    device, dtype = torch.device(job["device"]), runtime.DTYPES[job["dtype"]]
    b, h, w, yard = job["batch_size"], job["height"], job["width"], job["impl"] == "yardstick"
    torch.manual_seed(0)
    weight = compute_class_weights("paper").to(device)
    images, masks = _batch(b, h, w)
    masks = masks.to(device)
    if yard:  # PyTorch's defaults, as a public training script leaves them
        model = YardstickSegNet(NUM_CLASSES).to(device)
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
                with torch.inference_mode():  # as engine.evaluate runs it
                    return engine.predict(step_model, images, device, dtype)[0]

    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_memory_mb(device)
    times = []
    for _ in range(job["warmup"] + job["iters"]):
        _sync(device)
        t = time.perf_counter()
        out = step()
        _sync(device)
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


# -- data: loader throughput and colour-mask decoding -------------------------------------------
def synthetic_color_mask(height, width, seed=0, block=8):
    """A CamVid-like (H, W, 3) uint8 colour mask: blocks of random label_colors.txt colours."""
    from .data.camvid import LABEL_COLORS
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
    from .data.camvid import LABEL_COLORS, class_table, color_lut, decode_color_mask
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
    from . import engine, runtime
    from .build import build_dataset, resolve_normalize
    config = {**train_defaults, "dataset": "camvid", "data_root": str(data_root), "height": height,
              "width": width, "hflip": True}
    config["normalize"] = resolve_normalize(config)
    dataset = build_dataset(config, "train", train=True)
    sampler = engine.SeededSampler(len(dataset), config["seed"])
    if len(dataset) < batch_size:
        raise ValueError(f"--batch_size={batch_size} is larger than the {len(dataset)}-image CamVid train split")
    loader = torch.utils.data.DataLoader(engine.Seeded(dataset), batch_size, sampler=sampler, drop_last=True,
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
