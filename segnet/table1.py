"""Table 1 of the paper (TPAMI 2017, Sec. 3): eight decoders on SegNet-Basic's encoder, each trained
with median-frequency and with natural-frequency (no) class balancing, beside the published numbers.

    python -m segnet.table1 --structure                         # params, storage, inference time; no training
    python -m segnet.table1 --device=cuda --out_dir=runs/table1 # the 16 runs, then runs/table1/table1.md
    python -m segnet.table1 --models=segnet_basic --balancing=median_frequency   # one run of the 16

Each run is `Train_SegNet.py --config=segnet_basic_paper --model=M --class_weights=B` and then
`Evaluate_SegNet.py` on the test and the train split, run as subprocesses (their command lines are
the interface). Run again after an interruption: finished runs are picked up from their folders
and an unfinished one resumes from its last.pt. docs/reproduction.md gives the decoders' choices.
"""
import json
import pathlib
import shlex
import subprocess
import sys
import time

import torch

from .config import PRESETS, help_text, parse_overrides, wants_help
from .errors import UserError, run_cli, user_errors
from .files import make_folders, replace_text
from .model import SegNet, num_parameters

REPO = pathlib.Path(__file__).resolve().parents[1]

# Table 1's order (docs/reproduction.md maps each name to the paper's).
BALANCINGS = {"median_frequency": "median frequency", "none": "natural frequency"}

# Published numbers: Badrinarayanan, Kendall, Cipolla, "SegNet", TPAMI 2017 (arXiv 1511.00561v3),
# Table 1. Per variant: name, Params (M), storage multiplier, inference time (ms, 360x480, their
# 2015 GPU), then per balancing test (G, C, mIoU, BF) and train (G, C, mIoU) in percent.
PAPER = {
    "bilinear_interpolation": ("Bilinear-Interpolation", 0.625, 0, 24.2, {
        "median_frequency": ((77.9, 61.1, 43.3, 20.83), (89.1, 90.2, 82.7)),
        "none": ((82.7, 52.5, 43.8, 23.08), (93.5, 74.1, 59.9))}),
    "segnet_basic": ("SegNet-Basic", 1.425, 1, 52.6, {
        "median_frequency": ((82.7, 62.0, 47.7, 35.78), (94.7, 96.2, 92.7)),
        "none": ((84.0, 54.6, 46.3, 36.67), (96.1, 83.9, 73.3))}),
    "segnet_basic_encoder_addition": ("SegNet-Basic-EncoderAddition", 1.425, 64, 53.0, {
        "median_frequency": ((83.4, 63.6, 48.5, 35.92), (94.3, 95.8, 92.0)),
        "none": ((84.2, 56.5, 47.7, 36.27), (95.3, 80.9, 68.9))}),
    "segnet_basic_single_channel_decoder": ("SegNet-Basic-SingleChannelDecoder", 0.625, 1, 33.1, {
        "median_frequency": ((81.2, 60.7, 46.1, 31.62), (93.2, 94.8, 90.3)),
        "none": ((83.5, 53.9, 45.2, 32.45), (92.6, 68.4, 52.8))}),
    "fcn_basic": ("FCN-Basic", 0.65, 11, 24.2, {
        "median_frequency": ((81.7, 62.4, 47.3, 38.11), (92.8, 93.6, 88.1)),
        "none": ((83.9, 55.6, 45.0, 37.33), (92.0, 66.8, 50.7))}),
    "fcn_basic_no_addition": ("FCN-Basic-NoAddition", 0.65, "n/a", 23.8, {
        "median_frequency": ((80.5, 58.6, 44.1, 31.96), (92.5, 93.0, 87.2)),
        "none": ((82.3, 53.9, 44.2, 29.43), (93.1, 72.8, 57.6))}),
    "fcn_basic_no_dim_reduction": ("FCN-Basic-NoDimReduction", 1.625, 64, 44.8, {
        "median_frequency": ((84.1, 63.4, 50.1, 37.37), (95.1, 96.5, 93.2)),
        "none": ((83.5, 57.3, 47.0, 37.13), (97.2, 91.7, 84.8))}),
    "fcn_basic_no_addition_no_dim_reduction": ("FCN-Basic-NoAddition-NoDimReduction", 1.625, 0, 43.9, {
        "median_frequency": ((80.5, 61.6, 45.9, 30.47), (92.5, 94.6, 89.9)),
        "none": ((83.7, 54.8, 45.5, 33.17), (95.0, 80.2, 67.8))}),
}
MODELS = tuple(PAPER)  # the --model= values, in the table's order

DEFAULTS = {
    "models": "all",           # all (Table 1's eight) | comma-separated --model= values
    "balancing": "all",        # all (median_frequency and none) | median_frequency | none
    "device": "auto",          # auto (cuda if available, else cpu) | cpu | cuda | cuda:N: training, evaluation, timing
    "structure": False,        # true: params, storage and inference time only (no training)
    "out_dir": "runs/table1",  # one folder per run (MODEL-BALANCING) and table1.md
    "data_root": "",           # "" = Train_SegNet.py's (data/CamVid)
    "height": 360,             # Sec. 3.2: CamVid at 360x480 (the timing's frame size too)
    "width": 480,
    "max_iters": 0,            # 0 = the segnet_basic_paper preset's
    "timing_runs": 50,         # Table 1: inference time is the mean over 50 forward passes
    "train_args": "",          # more --key=value for Train_SegNet.py, space-separated (e.g. --num_workers=0)
    "eval_args": "",           # more --key=value for Evaluate_SegNet.py
}
MINIMUMS = {"height": 16, "width": 16, "max_iters": 0, "timing_runs": 1}


def storage_multiplier(model, x):
    """Table 1's storage multiplier from one forward pass of `model` on `x`: what the decoder receives
    from the first encoder stage, relative to SegNet-Basic's pooling indices (1). Float maps count
    their channels (64 maps: 64, FCN-Basic's K reduced maps: K); indices alone count 1 (they need
    2 bits per 2x2 window; Table 1 counts EncoderAddition's maps only); nothing kept counts 0."""
    first, kept = [], []

    def from_encoder(module, inputs, outputs):                  # (pooled, indices, conv maps)
        first.extend(outputs)

    def into_decoder(stage, args):                              # (x, indices, size[, skip])
        kept.extend(([args[1]] if stage.mode == "indices" else []) + list(args[3:]))

    hooks = [model.encoder[0].register_forward_hook(from_encoder)]
    if model.reduce_skips is not None:                          # FCN-Basic keeps the reduced map
        hooks.append(model.reduce_skips[0].register_forward_hook(lambda m, i, o: first.append(o)))
    hooks += [stage.register_forward_pre_hook(into_decoder) for stage in model.decoder]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    used = [t for t in kept if any(t is f for f in first)]
    maps = sum(t.shape[1] for t in used if t.is_floating_point())
    return maps if maps else int(any(not t.is_floating_point() for t in used))


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device here")
    return device


def inference_ms(model, device, height, width, runs=50, warmup=3):
    """Mean milliseconds of one (1, 3, height, width) forward pass in fp32 on `device`, over `runs`."""
    model = model.to(device).eval()
    x = torch.rand(1, 3, height, width, device=device) * 255   # SegNet-Basic's raw 0-255 input
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(runs):
            model(x)
        sync()
    return 1000 * (time.perf_counter() - start) / runs


def structure(name):
    """{params (M), storage}: the columns of Table 1 that need neither training nor timing."""
    torch.manual_seed(0)
    model = SegNet(11, spec=name)  # CamVid's 11 classes (K in FCN-Basic's reduction)
    return {"params": num_parameters(model) / 1e6, "storage": storage_multiplier(model, torch.rand(1, 3, 32, 48) * 255)}


def measure_times(models, device, opts):
    """{model: {ms, where}} for `models`, merged into <out_dir>/timings.json when there is a table to keep."""
    path = pathlib.Path(opts["out_dir"]) / "timings.json"
    times = json.loads(path.read_text()) if not opts["structure"] and path.exists() else {}
    where = f"{device_name(device)}, {opts['height']}x{opts['width']}, {time.strftime('%Y-%m-%d')}"
    for m in models:
        torch.manual_seed(0)
        ms = inference_ms(SegNet(11, spec=m), device, opts["height"], opts["width"], opts["timing_runs"])
        times[m] = {"ms": ms, "where": where}
        print(f"{m}: {ms:.1f} ms per {opts['height']}x{opts['width']} forward on {where}", flush=True)
    if not opts["structure"]:
        replace_text(path, json.dumps(times, indent=1) + "\n")
    return times


# -- the 16 runs ------------------------------------------------------------------------------------
def run_name(model, balancing):
    return f"{model}-{balancing}"


def _script(name, *args):
    command = [sys.executable, str(REPO / name), *args]
    print("$ " + shlex.join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise ChildProcessError(f"{name} failed (command above); run segnet.table1 again to resume")
    return command


def train_args(model, balancing, opts):
    """Train_SegNet.py's command line for one run: the paper's recipe, this variant, this balancing."""
    args = ["--config=segnet_basic_paper", f"--model={model}", f"--class_weights={balancing}",
            f"--device={opts['device']}", f"--height={opts['height']}", f"--width={opts['width']}"]
    args += [f"--data_root={opts['data_root']}"] if opts["data_root"] else []
    # always given: a resumed run would otherwise keep the max_iters of the part it was started with
    args += [f"--max_iters={opts['max_iters'] or PRESETS['segnet_basic_paper']['max_iters']}"]
    return args + shlex.split(opts["train_args"])


def train(model, balancing, opts):
    """Train one run unless its folder says it finished; an interrupted run resumes from last.pt."""
    run = pathlib.Path(opts["out_dir"]) / run_name(model, balancing)
    marker = run / "table1-trained.txt"  # written once Train_SegNet.py has returned 0
    if marker.exists():
        print(f"{run.name}: trained (from {marker})")
        return run
    args = train_args(model, balancing, opts)
    if (run / "last.pt").exists():
        args += [f"--resume={run / 'last.pt'}"]  # the same --key=values: a resumed run may repeat them
    else:
        args += [f"--out_dir={run}"] + (["--overwrite=true"] if run.exists() else [])  # died before a checkpoint
    command = _script("Train_SegNet.py", *args)
    replace_text(marker, shlex.join(command) + "\n")
    return run


def evaluate(run, split, opts):
    """Evaluate_SegNet.py on `split` with the run's best.pt (its last.pt without validation): metrics.json."""
    out = run / f"eval-{split}"
    if not (out / "metrics.json").exists():
        ckpt = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
        args = [str(ckpt), f"--split={split}", f"--out_dir={out}", f"--device={opts['device']}", "--collages=0"]
        args += [f"--data_root={opts['data_root']}"] if opts["data_root"] else []
        args += ["--boundary=false"] if split == "train" else []  # Table 1 has no train BF
        _script("Evaluate_SegNet.py", *args, *shlex.split(opts["eval_args"]))


def read_result(run):
    """(test G C mIoU BF, train G C mIoU, run name) from a run's two evaluations, or None before them."""
    paths = [run / f"eval-{split}" / "metrics.json" for split in ("test", "train")]
    if not all(p.exists() for p in paths):
        return None
    test, train = (json.loads(p.read_text()) for p in paths)
    keys = ("global_accuracy", "class_average_accuracy", "mean_iou", "boundary_f1")
    pct = lambda m, ks: [None if m.get(k) is None else 100 * m[k] for k in ks]  # noqa: E731
    return pct(test, keys), pct(train, keys[:3]), run.name


# -- table1.md --------------------------------------------------------------------------------------
def _cell(x, digits=1):
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def table(shape, times, results):
    """Markdown: per balancing, the paper's row and ours for every variant, cell beside cell.
    `shape[m]`: structure(); `times[m]`: {ms, where}; `results[(m, b)]`: read_result()."""
    lines = []
    for b in BALANCINGS:
        lines += [f"### {BALANCINGS[b]} balancing (`--class_weights={b}`)", "",
                  "| variant | row | params (M) | storage | infer (ms) | test G | C | mIoU | BF "
                  "| train G | C | mIoU | run |", "|---" * 13 + "|"]
        for m in MODELS:
            name, params, storage, ms, published = PAPER[m]
            ours = results.get((m, b)) or ([None] * 4, [None] * 3, "not run yet")
            for row, cells, last in (("paper", (str(params), storage, ms, *published[b][0], *published[b][1]),
                                      "TPAMI 2017 Table 1"),
                                     ("ours", (f"{shape[m]['params']:.3f}", shape[m]["storage"],
                                               times.get(m, {}).get("ms"), *ours[0], *ours[1]), ours[2])):
                text = [_cell(v, 2 if i == 6 else 1) for i, v in enumerate(cells)]
                lines.append(f"| {name if row == 'paper' else f'`{m}`'} | {row} | " + " | ".join(text) + f" | {last} |")
        lines.append("")
    wheres = sorted({t["where"] for t in times.values()})
    return "\n".join(lines + [f"Our inference times: {', '.join(wheres) or 'not measured'} (the paper's: a 2015 GPU)."])


def structure_table(models, shape, times):
    lines = ["| variant | params (M) paper / ours | storage paper / ours | infer (ms) paper / ours |",
             "|---|---|---|---|"]
    for m in models:
        name, params, storage, ms, _ = PAPER[m]
        lines.append(f"| {name} (`{m}`) | {params} / {shape[m]['params']:.3f} | {storage} / {shape[m]['storage']} "
                     f"| {ms} / {times[m]['ms']:.1f} |")
    return "\n".join(lines + ["", f"ours: {times[models[0]]['where']}; the paper's: a 2015 GPU (Table 1)"])


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def parse_list(value, allowed, key):
    chosen = list(allowed) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise UserError(f"--{key}={value}: expected all or a comma-separated list of {', '.join(allowed)}")
    return chosen


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    opts = parse_overrides(DEFAULTS, argv, presets={}, minimums=MINIMUMS)
    models = parse_list(opts["models"], MODELS, "models")
    balancings = parse_list(opts["balancing"], tuple(BALANCINGS), "balancing")
    out = pathlib.Path(opts["out_dir"])
    with user_errors():
        device = resolve_device(opts["device"])
        shape = {m: structure(m) for m in MODELS}
        if not opts["structure"]:
            make_folders([out])
        times = measure_times(models, device, opts)
        if opts["structure"]:
            print(f"\n{structure_table(models, shape, times)}")
            return 0
        for m in models:
            for b in balancings:
                run = train(m, b, opts)
                evaluate(run, "test", opts)
                evaluate(run, "train", opts)
                write_table(out, argv, shape, times)
    print(f"\n{write_table(out, argv, shape, times)}")
    return 0


def write_table(out, argv, shape, times):
    """<out>/table1.md from every run found there (the others' cells stay empty), rewritten after
    each run so that a partial table is always there; returns its text."""
    results = {(m, b): read_result(out / run_name(m, b)) for m in MODELS for b in BALANCINGS}
    text = (f"# Table 1: paper vs. ours\n\nWritten by `{shlex.join(['python', '-m', 'segnet.table1', *argv])}`"
            f" ({time.strftime('%Y-%m-%d %H:%M')}).\n\n{table(shape, times, results)}\n")
    replace_text(out / "table1.md", text)
    return text


if __name__ == "__main__":
    sys.exit(run_cli(main))
