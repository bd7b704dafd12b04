"""The rows of `python -m segnet.bench`: which (mode, batch size) rows a run measures, and each
measurement in a fresh `python -m segnet.bench.steps JOB_JSON` process, so that its peak memory is
its own. A mode is `yardstick` (reference.PlainSegNet) or this repo's step in a dtype, `_cl` for
channels_last."""
import json
import pathlib
import subprocess
import sys
import time

from .. import runtime

REPO = pathlib.Path(__file__).resolve().parents[2]  # the children run from the repo root
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def all_modes(device):
    dtypes = ("float32", "bfloat16", "float16") if device.type == "cuda" else ("float32", "bfloat16")
    return ["yardstick"] + [d + cl for d in dtypes for cl in ("", "_cl")]


# -- child processes ----------------------------------------------------------------------------
def last_line(text):
    lines = [s for s in text.strip().splitlines() if s.strip()]
    return lines[-1] if lines else "(no output)"


def run_child(job, workdir, want_stdout=False):
    """Run one job in a fresh `python -m segnet.bench.steps JOB_JSON`; returns (result, command[, stdout])."""
    out = pathlib.Path(workdir) / f"result-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "segnet.bench.steps", json.dumps({**job, "out": str(out)})]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(last_line(proc.stderr))
    result = json.loads(out.read_text())
    return (result, cmd, proc.stdout) if want_stdout else (result, cmd)


# -- the measurements ---------------------------------------------------------------------------
def measure_peaks(device, modes, args, default, workdir):
    """The dense matmul peak of every dtype a row uses, measured in this run on this device;
    `default`: the repo default (command.repo_default)."""
    dtypes = {"float32" if m == "yardstick" else m.removesuffix("_cl") for m in modes}
    dtypes |= {default["dtype"]} if args["extra_batch_sizes"] else set()
    dtypes |= {"bfloat16"} if device.type == "cuda" else set()  # the CUDA target's peak
    dtypes = sorted(dtypes, key=["float32", "bfloat16", "float16"].index)
    print(f"dense matmul peak ({', '.join(dtypes)}) ...", flush=True)
    peaks, _ = run_child({"kind": "matmul", "device": str(device), "dtypes": dtypes,
                          "max_size": args["matmul_size"]}, workdir)
    return peaks


def row_plan(args, device, modes, default):
    """(mode, batch size) of every row: each mode at --batch_size, then the repo default at --batch_sizes."""
    plan = [(m, args["batch_size"]) for m in modes]
    return plan + [(default["mode"], b) for b in args["extra_batch_sizes"]]


def measure_row(mode, batch_size, args, device, res, workdir):
    """One row (training, then inference), each phase in a fresh process; a failure is recorded."""
    yard = mode == "yardstick"
    dtype = "float32" if yard else mode.removesuffix("_cl")
    cl = mode.endswith("_cl")
    wg = not yard and runtime.resolve_conv_wgrad(args["conv_wgrad"], device, runtime.DTYPES[dtype], cl)
    label = ("yardstick (fp32 NCHW, plain modules)" if yard else
             f"ours {SHORT[dtype]} {'channels_last' if cl else 'NCHW'}" + (" +GEMM wgrad" if wg else "")
             + (" +compile" if args["compile"] else "")) + (f" b{batch_size}" if batch_size != args["batch_size"] else "")
    default = res["repo_default"]
    row = {"name": mode, "label": label, "impl": "yardstick" if yard else "repo", "dtype": dtype,
           "channels_last": cl, "gemm_wgrad": wg, "compile": args["compile"] and not yard, "batch_size": batch_size,
           "repo_default": mode == default["mode"] and wg == default["gemm_wgrad"],
           "train": None, "infer": None, "error": None}
    for phase, flops in (("train", res["flops"]["train_per_image"]), ("infer", res["flops"]["forward_per_image"])):
        print(f"{label}: {phase} ...", flush=True)
        job = {"kind": "step", "name": mode, "phase": phase, "impl": row["impl"], "device": str(device),
               "dtype": dtype, "channels_last": cl, "conv_wgrad": args["conv_wgrad"], "compile": row["compile"],
               "batch_size": batch_size, "height": args["height"], "width": args["width"], "iters": args["iters"],
               "warmup": args["warmup"]}
        try:
            r, _ = run_child(job, workdir)
        except RuntimeError as e:
            row["error"] = f"{phase}: {e}"
            print(f"  failed: {e}", flush=True)
            break
        r["flops_per_image"] = flops
        r["tflops"] = flops * r["images_per_s"] / 1e12
        r["utilisation"] = flops * r["images_per_s"] / res["matmul_peak"][dtype]["flops"]
        row[phase] = r
    return row


def find_row(res, mode, batch_size):
    return next((c for c in res["configs"] if c["name"] == mode and c["batch_size"] == batch_size
                 and not c["error"]), None)


def yardstick_ratios(res, batch_size):
    """The repo default's img/s over the yardstick's, per phase (figures, not targets)."""
    ours, yard = find_row(res, res["repo_default"]["mode"], batch_size), find_row(res, "yardstick", batch_size)
    return {phase: (ours[phase]["images_per_s"] / yard[phase]["images_per_s"] if ours and yard else None)
            for phase in ("train", "infer")}
