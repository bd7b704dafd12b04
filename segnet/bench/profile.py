"""Where a training step's time goes on this machine: torch.profiler's operators, summed by
operator class (convolutions, BN, unpooling, pooling, elementwise, loss, optimizer), and oneDNN's
kernels (ONEDNN_VERBOSE) for one configuration, resolved as Train_SegNet.py resolves it.

    python -m segnet.bench.profile                               # the default: full SegNet, 360x480, batch 2
    python -m segnet.bench.profile --device=cuda --batch_size=4  # CUDA kernel time by class (no oneDNN part)
    python -m segnet.bench.profile --channels_last=false         # NCHW on this machine
    python -m segnet.bench.profile --conv_wgrad=onednn --channels_last=true --model=segnet_basic --height=180 --width=240 --batch_size=4

Prints the operators by self CPU time over `--steps` profiled steps (after one warm-up), then
oneDNN's primitives (convolution forward / backward_data / backward_weights, layout reorders)
summed by implementation, from one step in a child process with ONEDNN_VERBOSE=1 (the variable
must be set before torch loads). docs/performance.md shows what this found on an AVX2-only CPU.
"""
import collections
import json
import os
import subprocess
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from .. import engine, optim, runtime
from ..config import help_text, parse_overrides, wants_help
from ..errors import UserError, run_cli, user_errors
from ..model import SPECS, SegNet

OPTIONS = {
    "device": "cpu",            # cpu | cuda[:N]
    "model": "segnet",          # segnet | segnet_basic | segnet_lite
    "height": 360,
    "width": 480,
    "batch_size": 2,
    "dtype": "auto",            # as Train_SegNet.py: auto | float32 | bfloat16 | float16
    "channels_last": "auto",    # auto | true | false
    "conv_wgrad": "auto",       # auto | gemm | onednn
    "compile": False,           # torch.compile the model (the warm-up step compiles)
    "steps": 2,                 # profiled steps (after one warm-up)
    "rows": 15,                 # operators shown
    "onednn": True,             # also the oneDNN kernel summary (a child process)
    "_child": "",               # internal: one step under ONEDNN_VERBOSE=1
}
MINIMUMS = {"height": 8, "width": 8, "batch_size": 1, "steps": 1, "rows": 1}


def make_step(opts):
    """The model, data and one training step of `opts`, set up as Train_SegNet.py sets them up."""
    spec = SPECS[opts["model"]]
    rt = runtime.setup(opts["device"], opts["dtype"], opts["channels_last"], conv_wgrad=opts["conv_wgrad"],
                       kernel_size=spec.kernel_size)
    torch.manual_seed(0)
    model = rt.place(SegNet(11, spec=opts["model"])).train()
    images = rt.images(torch.rand(opts["batch_size"], 3, opts["height"], opts["width"]))
    masks = torch.randint(0, 11, (opts["batch_size"], opts["height"], opts["width"]), device=rt.device)
    optimizer = optim.make_optimizer("sgd", model, 0.001, 0.9, 0.0005)
    step_model = torch.compile(model) if opts.get("compile") else model

    def step():
        return engine.train_step(step_model, images, masks, optimizer, rt.scaler, rt.device, rt.dtype)
    return rt, step


# Operator classes for "where the rest goes": the first pattern found in an operator's name wins.
OP_CLASSES = (
    ("unpooling", ("max_unpool", "scatter", "gather")),
    ("pooling", ("max_pool",)),
    ("convolution", ("conv", "wgrad", "mm", "addmm")),
    ("batch norm", ("batch_norm", "_bn")),
    ("loss", ("nll_loss", "log_softmax", "cross_entropy")),
    ("optimizer", ("_foreach", "sgd", "adam")),
    ("layout copies", ("copy_", "contiguous", "clone", "_to_copy", "to_dense", "reorder")),
    ("elementwise", ("relu", "threshold", "add", "mul", "sub", "div", "fill", "zero", "where", "isfinite",
                     "sum", "clamp", "ne", "eq", "stack", "lrn", "local_response", "pow", "avg_pool", "exp")),
)


def op_class(name):
    low = name.lower()
    if "triton" in low or "cpp_fused" in low or low.startswith("graph_") or "compiled" in low:
        return "compiled kernels"
    for cls, patterns in OP_CLASSES:
        if any(p in low for p in patterns):
            return cls
    return "other"


def time_by_class(events, device_type):
    """{class: (self ms, share)} from a profiler's key_averages(): self CPU time of each operator on
    the CPU, self device (kernel) time on CUDA. Self times do not double-count nested calls."""
    attr = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
    totals = collections.defaultdict(float)
    for e in events:
        us = getattr(e, attr, 0.0) or 0.0
        if us > 0:
            totals[op_class(e.key)] += us / 1000
    total = sum(totals.values()) or 1.0
    return {k: (ms, ms / total) for k, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def onednn_summary(text):
    """{(primitive, implementation, propagation): [calls, ms]} from ONEDNN_VERBOSE=1 output."""
    out = collections.defaultdict(lambda: [0, 0.0])
    for line in text.splitlines():
        f = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,<primitive>,<impl>,<prop>,<formats>,...,<ms>
        if len(f) > 8 and f[0] == "onednn_verbose" and "exec" in f[:4]:
            i = f.index("exec")
            try:
                ms = float(f[-1])
            except ValueError:
                continue
            key = (f[i + 2], f[i + 3], f[i + 4])
            out[key][0] += 1
            out[key][1] += ms
    return dict(out)


def _child(opts):
    _, step = make_step(opts)
    step()  # only this step's primitives are printed (the parent runs us with one step)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    opts = parse_overrides(OPTIONS, argv, presets={}, minimums=MINIMUMS,
                           choices={"model": tuple(SPECS), "dtype": runtime.DTYPE_CHOICES,
                                    "channels_last": runtime.CHANNELS_LAST_CHOICES, "conv_wgrad": runtime.CONV_WGRAD_CHOICES})
    if opts["_child"]:
        return _child(json.loads(opts["_child"]))
    with user_errors():
        rt, step = make_step(opts)
    print(f"{opts['model']} {opts['height']}x{opts['width']}, batch {opts['batch_size']}, training step, "
          f"autocast {rt.dtype_name}, {rt.layout}; {runtime.hardware_line(rt.device)}, {torch.get_num_threads()} threads")
    cuda = rt.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(rt.device)) if cuda else (lambda: None)
    step()
    sync()
    t = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(opts["steps"]):
            step()
        sync()
    per_step = (time.perf_counter() - t) / opts["steps"]
    print(f"{per_step:.3f} s per step under the profiler ({opts['steps']} steps)\n")
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=opts["rows"], max_name_column_width=44))
    print(f"by operator class ({'self CUDA kernel' if cuda else 'self CPU'} time over {opts['steps']} steps):")
    for cls, (ms, share) in time_by_class(events, rt.device.type).items():
        print(f"  {cls:16s} {ms / opts['steps']:10.1f} ms/step  {100 * share:5.1f}%")
    if opts["onednn"] and not cuda:
        child = {**{k: v for k, v in opts.items() if k != "_child"}, "compile": False}
        proc = subprocess.run([sys.executable, "-m", "segnet.bench.profile", f"--_child={json.dumps(child)}"],
                              capture_output=True, text=True, env={**os.environ, "ONEDNN_VERBOSE": "1"})
        if proc.returncode != 0:
            raise UserError(f"the oneDNN child failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        summary = onednn_summary(proc.stdout)
        if not summary:
            print("oneDNN: no primitives reported (a build without oneDNN, or none used)")
        else:
            print("oneDNN primitives, one step (ONEDNN_VERBOSE=1; first step, so primitive creation is not in these times):")
            total = sum(ms for _, ms in summary.values())
            for (prim, impl, prop), (n, ms) in sorted(summary.items(), key=lambda kv: -kv[1][1]):
                print(f"  {prim:12s} {impl:36s} {prop:18s} {n:4d} calls {ms:9.1f} ms  {100 * ms / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
