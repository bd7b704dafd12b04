"""A training run's folder, owned by one run: its OS lock, metrics.csv, and the best.pt / last.pt
bookkeeping that a resume relies on (docs/reliability.md).

    with open_run_folder(config, master, ckpt, log) as folder:   # refused if another run holds it
        folder.append_metrics_row(row)                            # one row per iteration, ever
"""
import csv
import io
import json
import math
import os
import pathlib
import shutil
import sys

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import UserError
from .files import (FolderInUse, check_outside_data, check_writable_folder, lock_folder, make_folders, remove_temp,
                    replace_file, replace_text, temp_files, temp_name, unlock_folder)

RUN_FILES = ("last.pt", "best.pt", "metrics.csv")  # a folder holding any of these holds a run
# what else a previous run leaves, replaced with it by --overwrite=true (and its eval-<split>/ folders)
PREVIOUS_RUN_FILES = ("curves.png", "config.json", "class_weights.json")


class RunFolder:
    """The run folder, held by this process alone: an OS lock (flock on out_dir/.lock) that the
    system drops when the process ends, however it ends; the TensorBoard writer, if any; and the
    writers of the run's outputs (metrics rows, checkpoints).

    Nothing of a previous run is lost before this run has something to put in its place: with
    --overwrite=true the old run's files (`replaces`) stay, and config.json and class_weights.json
    wait, until this run writes its first metrics row or checkpoint (`commit`), when the old files
    are moved aside and removed in one step. A start that ends in an error before then leaves the
    folder as it found it: a folder this start created is removed, one that existed gets back what
    it held."""

    def __init__(self, run_dir=None, lock_fd=None, created=False, lock_created=False, log=print):
        self.run_dir, self.lock_fd, self.tb, self.log = run_dir, lock_fd, None, log
        self.created, self.lock_created = created, lock_created
        self.replaces, self.deferred, self.before, self.output = [], {}, {}, False
        self.held = []  # (fd, folder, lock file created) of the eval-*/ folders that `replaces` holds
        self.events = set(_events(run_dir)) if run_dir else set()

    def write_text(self, name, text):
        """A file of this run (config.json, class_weights.json), written whole; kept back until the
        commit while it would replace the previous run's."""
        if self.replaces:
            self.deferred[name] = text
            return
        path = os.path.join(self.run_dir, name)
        if name not in self.before:
            self.before[name] = pathlib.Path(path).read_bytes() if os.path.isfile(path) else None
        replace_text(path, text)

    def commit(self):
        """This run's first output is about to be written: the previous run's files go in one step."""
        self.output = True
        if not self.replaces:
            return
        aside = temp_name(os.path.join(self.run_dir, "replaced"))
        os.makedirs(aside, exist_ok=True)
        for name in self.replaces:
            os.replace(os.path.join(self.run_dir, name), os.path.join(aside, name))
        replaced, self.replaces = self.replaces, []
        for name, text in self.deferred.items():
            self.write_text(name, text)
        shutil.rmtree(aside)
        self.release_replaced()
        self.log(f"--overwrite=true: this run's first output replaced the previous run's {', '.join(replaced)}")

    def hold_replaced(self):
        """The lock of every eval-<split>/ folder that --overwrite=true will replace, held until it is:
        an evaluation writing there is refused now, rather than having its folder removed under it,
        and none can start there in the meantime."""
        for name in self.replaces:
            sub = os.path.join(self.run_dir, name)
            if not name.startswith("eval-") or os.path.islink(sub) or not os.path.isdir(sub):
                continue
            created = not os.path.lexists(os.path.join(sub, ".lock"))
            try:
                self.held.append((lock_folder(sub), sub, created))
            except FolderInUse as e:
                raise UserError(f"--overwrite=true would replace {sub}, which is in use by an evaluation (process "
                                f"{e.holder}, lock {e.lock}); wait for it to end, or choose another "
                                f"--out_dir") from None

    def release_replaced(self, abandoned=False):
        """The eval-*/ locks of hold_replaced let go; when the start is abandoned, a lock file it
        created there is removed, so the folder is as it was."""
        for fd, sub, created in self.held:
            unlock_folder(fd)
            if abandoned and created:
                os.remove(os.path.join(sub, ".lock"))
        self.held = []

    def append_metrics_row(self, row):
        self.commit()
        append_metrics_row(self.run_dir, row)

    def save_checkpoint(self, name, checkpoint):
        """checkpoint.save_checkpoint into the folder, once the previous run there is replaced."""
        self.commit()
        save_checkpoint(os.path.join(self.run_dir, name), checkpoint)

    def abandon(self):
        """An error before this run wrote any output: the folder as this start found it."""
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name, old in self.before.items():
            path = os.path.join(self.run_dir, name)
            if old is None:
                os.remove(path)
            else:
                replace_file(path, old)
        for name in set(_events(self.run_dir)) - self.events:
            os.remove(os.path.join(self.run_dir, name))
        if self.lock_created:
            os.remove(os.path.join(self.run_dir, ".lock"))

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if self.tb is not None:
            self.tb.close()
        if self.lock_fd is not None:
            self.release_replaced(abandoned=kind is not None and not self.output)
            unlock_folder(self.lock_fd)
            self.lock_fd = None
            if kind is not None and not self.output:
                self.abandon()


def _events(run_dir):
    """The TensorBoard event files in `run_dir`."""
    return [n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents")] if os.path.isdir(run_dir) else []


def resumes_in_place(config):
    """A resumed run that goes on in the folder of its checkpoint (not a new --out_dir)."""
    return bool(config["resume"]) and (os.path.abspath(config["out_dir"]) ==
                                       os.path.dirname(os.path.abspath(config["resume"])))


def open_run_folder(config, master, ckpt, log):
    """The run folder (rank 0, `master`), before any data is read. It must be a writable folder; a
    second process on it is refused (OS lock); a new run is refused where a run already is (unless
    --overwrite=true: that run's files are replaced by this run's first output, RunFolder); temp
    files of killed writers are removed; config.json is written (with --overwrite, at the
    replacement). Other ranks write nothing."""
    if not master:
        return RunFolder()
    run_dir = config["out_dir"]
    check_outside_data(run_dir, config["data_root"])
    check_writable_folder(run_dir)
    created = not os.path.isdir(run_dir)
    make_folders([run_dir])
    lock_created = not os.path.exists(os.path.join(run_dir, ".lock"))
    try:
        lock_fd = lock_folder(run_dir)
    except FolderInUse as e:
        raise UserError(f"--out_dir={run_dir} is in use by another run (process {e.holder}, lock {e.lock}); wait "
                        f"for it to end, or choose another --out_dir") from None
    folder = RunFolder(run_dir, lock_fd, created, lock_created, log=log)
    try:
        found = [f for f in RUN_FILES if os.path.exists(os.path.join(run_dir, f))]
        if found and not resumes_in_place(config):
            if not config["overwrite"]:
                last, best = (os.path.join(run_dir, n) for n in ("last.pt", "best.pt"))
                hint = "" if ckpt is not None else (  # only last.pt continues a run (segnet/resume.py)
                    f"continue it with --resume={last}, or " if "last.pt" in found else
                    f"train on from its best.pt (saved before any last.pt) with --init_from={best} and "
                    if "best.pt" in found else "")
                raise UserError(f"--out_dir={run_dir} already holds a run ({', '.join(found)}): {hint}give this "
                                f"run a new --out_dir, or replace that run with --overwrite=true")
            folder.replaces = sorted(set(found) | {n for n in os.listdir(run_dir) if n in PREVIOUS_RUN_FILES
                                                   or n.startswith("eval-")})
            folder.hold_replaced()
            log(f"--overwrite=true: the previous run's {', '.join(folder.replaces)} in {run_dir} stay until this "
                f"run writes its first checkpoint or metrics row, and are then replaced")
        remove_temp_files(run_dir, log)
        folder.write_text("config.json", json.dumps(config, indent=2))
        try:
            from torch.utils.tensorboard import SummaryWriter
            folder.tb = SummaryWriter(run_dir)
        except ImportError:
            pass  # TensorBoard is optional
    except BaseException:
        folder.__exit__(*sys.exc_info())
        raise
    return folder


def remove_temp_files(run_dir, log):
    """Temp files of saves cut short by a kill (only names of files.temp_name: a user's own
    `.notes.tmp` is not one). Call with the folder's lock held: no writer is alive, so none of them
    is a save under way."""
    stale = temp_files(run_dir)
    for t in stale:
        remove_temp(t)
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
