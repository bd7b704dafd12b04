"""What a run writes for people to read: `curves.png` from `metrics.csv` (training loss and
the validation metrics against iterations), and the published rows to set beside a result
(`results.md` and the printed table: segnet/outputs.py)."""
import csv
import math
import pathlib

from .files import replace_file, serialized
from .metrics import VALIDATION_METRICS


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
    for k in VALIDATION_METRICS:
        ax_val.plot(its, [100 * r[k.key] for r in rows], marker=".", label=k.label)
    ax_val.set(xlabel="iteration", ylabel="%", title="validation")
    ax_val.legend()
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    data = serialized(fig.savefig, dpi=100, format="png")
    plt.close(fig)
    return replace_file(run_dir / "curves.png", data)


