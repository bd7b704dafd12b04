"""Every output of an evaluation, from one place: its folder (EvalFolder: locked, marked
INCOMPLETE while it is written), `metrics.json`, `confusion_matrix.png` and the printed table
(write_metrics), `results.md` (write_results_md), and the pictures written while the predictions
stream by (PictureWriter: predictions/, colour/, collages/, uncertainty/). The columns are the
paper's metrics as segnet/metrics.py's METRICS lists them; segnet/visualize.py draws.
"""
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image

from .files import (FolderInUse, lock_folder, make_folders, remove_empty, replace_file, replace_text, serialized,
                    unlock_folder)
from .metrics import METRICS, PER_CLASS_METRICS
from .transforms import input_to_unit
from .visualize import collage, colorize, confusion_matrix_image, heatmap


def nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def pct(x):
    """A table cell: 6 wide, in percent; `   -  ` for a figure that is absent (None or NaN)."""
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def one_md_line(text):
    """`text` with its line breaks as spaces: a name with one would otherwise end the row."""
    return " ".join(str(text).splitlines())


def md_cell(text):
    """`text` as one cell of a Markdown table: on one line, `\\` and `|` escaped (a class name with
    a `|` would otherwise end the cell)."""
    return one_md_line(str(text).replace("\\", "\\\\").replace("|", "\\|"))


def _md_pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def metrics_json(m, class_names, split, source):
    """metrics.json: G, C, mIoU, BF (null when not computed), per class, the confusion matrix and
    where they come from (`source`: checkpoint, iter, mc_samples; or predictions in score mode)."""
    absent = [float("nan")] * len(class_names)
    result = {k.key: nan_to_none(m.get(k.key, float("nan"))) for k in METRICS}
    result["per_class"] = {name: {k.per_class: nan_to_none(m.get("per_class_" + k.per_class, absent)[i])
                                  for k in PER_CLASS_METRICS}
                           for i, name in enumerate(class_names)}
    return {**result, "confusion_matrix": m["confusion_matrix"], "num_images": m["num_images"], "split": split,
            **source}


def print_table(result, class_names, split, rows):
    """Per-class figures, then G, C, mIoU, BF beside the published `rows` (label, then one figure
    per metric, None where the source gives none), in percent."""
    width = max(12, max(map(len, class_names)))
    print(f"\n{'class':<{width}}" + "".join(f"  {k.per_class_label:>6}" for k in PER_CLASS_METRICS))
    for name in class_names:
        r = result["per_class"][name]
        print(f"{name:<{width}}" + "".join(f"  {pct(r[k.per_class])}" for k in PER_CLASS_METRICS))
    print(f"\n{'':<{width}}" + "".join(f"  {k.label:>6}" for k in METRICS))
    print(f"{'ours (' + split + ')':<{width}}" + "".join(f"  {pct(result[k.key])}" for k in METRICS))
    if rows:
        print(f"published (test split, {len(class_names)} classes):")
        for label, *figures in rows:
            print("".join(f"  {'   -  ' if v is None else f'{v:6.2f}'}" for v in figures) + f"   {label}")


def write_metrics(m, class_names, split, out_dir, source, rows):
    """metrics.json, confusion_matrix.png and the printed table (a checkpoint's or score mode's);
    returns metrics.json's content."""
    result = metrics_json(m, class_names, split, source)
    replace_text(out_dir / "metrics.json", json.dumps(result, indent=2))
    replace_file(out_dir / "confusion_matrix.png",
                 serialized(confusion_matrix_image(m["confusion_matrix"], class_names).save, format="PNG"))
    print_table(result, class_names, split, rows)
    print(f"metrics: {out_dir / 'metrics.json'}")
    return result


def write_results_md(path, result, config, rows, command, hardware, seconds):
    """`results.md`: our row (what was run, on what, how long) beside the published `rows`, then
    the per-class figures."""
    size = f"{config['height']}x{config['width']} input"
    ours = md_cell(f"**ours**: {config['model']}, {size}, iteration {result.get('iter')} "
                   f"({result['num_images']} {result['split']} images)")
    rule = "|---" * (len(METRICS) + 1) + "|"
    lines = [f"# Results: {config['model']} on {config['dataset']} {result['split']}", "",
             "| | " + " | ".join(k.label for k in METRICS) + " |", rule,
             f"| {ours} | " + " | ".join(_md_pct(result[k.key]) for k in METRICS) + " |"]
    for label, *figures in rows:
        figures = ["-" if v is None else f"{v:.2f}" for v in figures]
        lines.append(f"| {md_cell(label)} | " + " | ".join(figures) + " |")
    lines += ["", "| class | " + " | ".join(k.per_class_label for k in PER_CLASS_METRICS) + " |",
              "|---" * (len(PER_CLASS_METRICS) + 1) + "|"]
    for name, r in result["per_class"].items():
        figures = [_md_pct(r[k.per_class]) for k in PER_CLASS_METRICS]
        lines.append(f"| {md_cell(name)} | " + " | ".join(figures) + " |")
    lines += ["", one_md_line(f"Evaluated with `{command}` on {hardware} in {seconds:.0f} s."),
              one_md_line(f"Checkpoint: `{result['checkpoint']}`. Training config: "
              + ", ".join(f"{k}={config[k]}" for k in ("model", "height", "width", "batch_size", "max_iters",
                                                      "lr", "optimizer", "class_weights", "normalize")
                          if k in config) + ".")]
    return replace_text(path, "\n".join(lines) + "\n")


def picture_folders(out_dir, uncertainty):
    """The picture folders; returns those created, to be removed again if they stay empty."""
    subs = ("predictions", "colour", "collages") + (("uncertainty",) if uncertainty else ())
    return make_folders([out_dir / sub for sub in subs])


INCOMPLETE = "INCOMPLETE"  # in an evaluation's folder while it is written: what is there is partial
RESULT_FILES = ("metrics.json", "results.md", "confusion_matrix.png")  # what describes a whole evaluation


class EvalFolder:
    """An evaluation's out_dir, owned by this evaluation while it writes (with EvalFolder(...) as
    folder: ...; folder.done() once metrics.json and results.md are written):

    - it holds the folder's OS lock (files.lock_folder, the lock training takes): a second
      evaluation, or a training run, in the folder is refused (FolderInUse);
    - it writes the INCOMPLETE marker first and removes the previous evaluation's metrics.json,
      results.md and confusion_matrix.png before any new prediction, so nothing there describes
      another model; done() removes the marker, so a folder without it is whole;
    - an error or Ctrl-C leaves the marker; one before the marker (a picture folder that is a
      symlink), or before any picture was written into a folder this evaluation created, leaves
      nothing of it (no empty folders, no marker, no lock file)."""

    def __init__(self, out_dir, uncertainty=False, pictures=True):
        self.out_dir, self.lock_fd = out_dir, None
        self.created = make_folders([out_dir])
        lock_existed = os.path.lexists(out_dir / ".lock")
        try:
            self.lock_fd = lock_folder(out_dir)
        except FolderInUse as e:
            remove_empty(self.created)
            raise BlockingIOError(f"--out_dir={out_dir} is in use by another evaluation or training run (process "
                                  f"{e.holder}, lock {e.lock}); wait for it to end, or choose another "
                                  f"--out_dir") from None
        self.ours = [INCOMPLETE] + ([] if lock_existed else [".lock"])
        # what Ctrl-C says (errors.interrupted_as): the marker stays
        self.partial = (f"interrupted: {out_dir} holds a partial evaluation (its {INCOMPLETE} file says so); "
                        f"run the evaluation again to complete it")
        self.marked = False  # the folder is changed from here on
        try:
            self.created += picture_folders(out_dir, uncertainty) if pictures else []  # none may be a symlink
            self.marked = True
            replace_text(out_dir / INCOMPLETE, f"an evaluation (process {os.getpid()}) is writing this folder; "
                                               f"what it holds is partial until this file is gone\n")
            for name in RESULT_FILES:
                (out_dir / name).unlink(missing_ok=True)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise

    def done(self):
        """Every output is written: the folder is whole."""
        (self.out_dir / INCOMPLETE).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if self.lock_fd is None:
            return
        if kind is not None and (not self.marked or self.out_dir in self.created and not any(
                p.is_file() for p in self.out_dir.rglob("*") if p.name not in self.ours)):
            for name in self.ours:  # the folder unchanged, or nothing written into our own: take it all back
                (self.out_dir / name).unlink(missing_ok=True)
        remove_empty(self.created)  # a failed evaluation leaves no empty output folders behind
        unlock_folder(self.lock_fd)
        self.lock_fd = None


def save_png(path, array):
    """A new file (replacing any, and never writing through a symlink found at `path`)."""
    replace_file(path, serialized(Image.fromarray(array).save, format="PNG"))


class PictureWriter:
    """The per-batch callback of the evaluation: predictions/ (class indices), colour/, collages/
    (input | ground truth | prediction, or input | prediction in predict mode: the first
    `collages` images) and uncertainty/ heat maps, PNG-encoded on two threads so that writing
    overlaps the next batch."""

    def __init__(self, out_dir, dataset, normalize, palette, collages):
        self.out_dir, self.dataset, self.collages = out_dir, dataset, collages
        self.palette = palette
        self.mean, self.std = map(torch.tensor, input_to_unit(normalize))
        self.pool, self.pending = ThreadPoolExecutor(2), []

    def _save(self, sub, name, array):
        self.pending.append(self.pool.submit(save_png, self.out_dir / sub / name, array))

    def __call__(self, batch, first):
        for b, pred in enumerate(batch.preds):
            name, pred_np = self.dataset.name(first + b), pred.to(torch.uint8).cpu().numpy()
            self._save("predictions", name, pred_np)
            self._save("colour", name, colorize(pred_np, self.palette))
            if batch.uncertainty is not None:
                self._save("uncertainty", name, heatmap(batch.uncertainty[b].float().cpu().numpy()))
            if batch.images is not None and first + b < self.collages:  # predict mode: input | prediction
                img = batch.images[b].float() * self.std[:, None, None] + self.mean[:, None, None]
                img = torch.nn.functional.interpolate(img[None], size=pred_np.shape, mode="bilinear")[0]
                img = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                gt = batch.masks[b].cpu().numpy() if batch.masks is not None else None
                self._save("collages", name, collage(img, gt, pred_np, self.palette))

    def close(self):
        """Wait for every picture; raises the first failed write (an OSError)."""
        self.pool.shutdown(wait=True)
        for p in self.pending:
            p.result()
