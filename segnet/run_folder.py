"""A training run's folder, owned by one run: its OS lock, metrics.csv, and the best.pt / last.pt
bookkeeping that a resume relies on (docs/reliability.md).

    with open_run_folder(config, master, ckpt, log) as folder:   # refused if another run holds it
        append_metrics_row(config["out_dir"], row)                # one row per iteration, ever
"""
import csv
import io
import json
import math
import os

from .checkpoint import load_checkpoint
from .errors import UserError
from .files import (FolderInUse, check_writable_folder, lock_folder, make_folders, replace_text, temp_files,
                    unlock_folder)

RUN_FILES = ("last.pt", "best.pt", "metrics.csv")  # a folder holding any of these holds a run


class RunFolder:
    """The run folder, held by this process alone: an OS lock (flock on out_dir/.lock) that the
    system drops when the process ends, however it ends; and the TensorBoard writer, if any."""

    def __init__(self, lock_fd=None, tb=None):
        self.lock_fd, self.tb = lock_fd, tb

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tb is not None:
            self.tb.close()
        if self.lock_fd is not None:
            unlock_folder(self.lock_fd)
            self.lock_fd = None


def resumes_in_place(config):
    """A resumed run that goes on in the folder of its checkpoint (not a new --out_dir)."""
    return bool(config["resume"]) and (os.path.abspath(config["out_dir"]) ==
                                       os.path.dirname(os.path.abspath(config["resume"])))


def open_run_folder(config, master, ckpt, log):
    """The run folder (rank 0, `master`), before any data is read. It must be a writable folder; a
    second process on it is refused (OS lock); a new run is refused where a run already is (unless
    --overwrite=true, which removes that run's files); temp files of killed writers are removed;
    config.json is written. Other ranks write nothing."""
    if not master:
        return RunFolder()
    run_dir = config["out_dir"]
    check_writable_folder(run_dir)
    make_folders([run_dir])
    try:
        lock_fd = lock_folder(run_dir)
    except FolderInUse as e:
        raise UserError(f"--out_dir={run_dir} is in use by another run (process {e.holder}, lock {e.lock}); wait "
                        f"for it to end, or choose another --out_dir") from None
    try:
        found = [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))]
        if found and not resumes_in_place(config):
            if not config["overwrite"]:
                hint = (f"continue it with --resume={os.path.join(run_dir, 'last.pt')}, or " if ckpt is None else "")
                raise UserError(f"--out_dir={run_dir} already holds a run ({', '.join(found)}): {hint}give this "
                                f"run a new --out_dir, or replace that run with --overwrite=true")
            for f in found + ["curves.png"]:
                if os.path.exists(os.path.join(run_dir, f)):
                    os.remove(os.path.join(run_dir, f))
            log(f"--overwrite=true: removed the previous run's {', '.join(found)} from {run_dir}")
        remove_temp_files(run_dir, log)
        replace_text(os.path.join(run_dir, "config.json"), json.dumps(config, indent=2))
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(run_dir)
        except ImportError:
            tb = None  # TensorBoard is optional
    except BaseException:
        unlock_folder(lock_fd)
        raise
    return RunFolder(lock_fd, tb)


def remove_temp_files(run_dir, log):
    """Temp files of saves cut short by a kill. Call with the folder's lock held: no writer is
    alive, so none of them is a save under way."""
    stale = temp_files(run_dir)
    for t in stale:
        os.remove(t)
    if stale:
        log(f"removed {len(stale)} temp file(s) left in {run_dir} by a process killed while saving: "
            f"{', '.join(t.name for t in stale)}")


def check_best(config, state, log):
    """Resume: last.pt records the iteration and score of the best.pt on disk; when the two
    disagree (a kill between the two saves, a file replaced by hand), say so and go on from what
    best.pt really holds, so the run never reports a best it does not have."""
    if not resumes_in_place(config):
        return  # a new folder: its best.pt starts with this run
    last, path = config["resume"], os.path.join(os.path.dirname(os.path.abspath(config["resume"])), "best.pt")
    recorded = (state.best_iter, state.best)

    def describe(it, score):
        return (f"iteration {it} ({config['best_metric']} {100 * score:.2f})" if it >= 0
                else f"{config['best_metric']} {100 * score:.2f}")
    if not os.path.isfile(path):
        if math.isfinite(state.best):
            log(f"warning: {last} records a best.pt at {describe(*recorded)} but there is no {path}; "
                f"the best is tracked afresh from iteration {state.iter}")
            state.best, state.best_iter = float("-inf"), -1
        return
    try:
        best = load_checkpoint(path)
    except (OSError, ValueError) as e:
        log(f"warning: {path} cannot be read ({e.__class__.__name__}); the best is tracked afresh from "
            f"iteration {state.iter} and it is written again")
        state.best, state.best_iter = float("-inf"), -1
        return
    on_disk = (best.get("iter", -1), best.get("best_metric", float("-inf")))
    if on_disk[1] != recorded[1] or (recorded[0] >= 0 and on_disk[0] != recorded[0]):
        log(f"warning: {last} records best.pt at {describe(*recorded)} but {path} holds "
            f"{describe(*on_disk)}; going on from what {path} holds")
        state.best_iter, state.best = on_disk


def append_metrics_row(run_dir, row):
    """metrics.csv with `row` as its last line: rows from iteration row["iter"] on (written by a run
    that went further before it was stopped, and now redone) are replaced, so no iteration ever
    has two rows. The file is rewritten whole (files.replace_file)."""
    path = os.path.join(run_dir, "metrics.csv")
    rows = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("iter", "").isdigit() and int(r["iter"]) < row["iter"]]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(row), lineterminator="\n")
    w.writeheader()
    w.writerows(rows + [row])
    replace_text(path, text.getvalue())
