"""What a run writes for people to read: `curves.png` from `metrics.csv` (training loss and
validation G / C / mIoU against iterations), and `results.md` beside the published rows."""
import csv
import math
import pathlib

from .data import published_rows
from .files import replace_file, replace_text, serialized

CURVE_KEYS = (("global_accuracy", "G"), ("class_average_accuracy", "C"), ("mean_iou", "mIoU"))


def read_metrics_csv(path):
    """metrics.csv rows as dicts of floats (an empty field becomes nan)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_curves(run_dir):
    """Draw `curves.png` beside `metrics.csv`; returns its path, or None (with a note printed once
    per process) when matplotlib is not installed."""
    run_dir = pathlib.Path(run_dir)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not getattr(write_curves, "noted", False):
            print("note: curves.png skipped (pip install matplotlib to draw it)")
            write_curves.noted = True
        return None
    rows = read_metrics_csv(run_dir / "metrics.csv")
    its = [r["iter"] for r in rows]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    if rows and "train_loss" in rows[0]:
        ax_loss.plot(its, [r["train_loss"] for r in rows], marker=".")
    ax_loss.set(xlabel="iteration", ylabel="training loss (mean since the last validation)", title="loss")
    for key, label in CURVE_KEYS:
        ax_val.plot(its, [100 * r[key] for r in rows], marker=".", label=label)
    ax_val.set(xlabel="iteration", ylabel="%", title="validation")
    ax_val.legend()
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    data = serialized(fig.savefig, dpi=100, format="png")
    plt.close(fig)
    return replace_file(run_dir / "curves.png", data)


def _pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def write_results_md(path, result, config, command, hardware, seconds):
    """`results.md`: our row (what was run, on what, how long) beside the published rows, then
    per-class accuracy, IoU and BF."""
    size = f"{config['height']}x{config['width']} input"
    ours = (f"**ours**: {config['model']}, {size}, iteration {result.get('iter')} "
            f"({result['num_images']} {result['split']} images)")
    lines = [f"# Results: {config['model']} on {config['dataset']} {result['split']}", "",
             "| | G | C | mIoU | BF |", "|---|---|---|---|---|",
             f"| {ours} | {_pct(result['global_accuracy'])} | {_pct(result['class_average_accuracy'])} | "
             f"{_pct(result['mean_iou'])} | {_pct(result['boundary_f1'])} |"]
    for label, g, c, miou, bf in published_rows(config):
        lines.append(f"| {label} | {g:.2f} | {c:.2f} | {miou:.2f} | {'-' if bf is None else f'{bf:.2f}'} |")
    lines += ["", "| class | accuracy | IoU | BF |", "|---|---|---|---|"]
    for name, r in result["per_class"].items():
        lines.append(f"| {name} | {_pct(r['accuracy'])} | {_pct(r['iou'])} | {_pct(r['boundary_f1'])} |")
    lines += ["", f"Evaluated with `{command}` on {hardware} in {seconds:.0f} s.",
              f"Checkpoint: `{result['checkpoint']}`. Training config: "
              + ", ".join(f"{k}={config[k]}" for k in ("model", "height", "width", "batch_size", "max_iters",
                                                      "lr", "optimizer", "class_weights", "normalize")
                          if k in config) + "."]
    return replace_text(path, "\n".join(lines) + "\n")
