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


# Published CamVid-11 test rows (percent; BF None where the source gives none), by model spec.
PUBLISHED = {
    "segnet": [
        ("SegNet, TPAMI 2017 Table 3 (3.5K road images, >80K iterations)", 90.40, 71.20, 60.10, 46.84),
        ("SegNet trained on CamVid alone (SegNet-Tutorial)", 88.6, 65.9, 50.2, None),
        ("Bayesian SegNet (Kendall et al. 2015, CamVid)", 86.9, 76.3, 63.1, None),
    ],
    "segnet_basic": [
        # TPAMI 2017 Table 1, SegNet-Basic, median frequency balancing, test G C mIoU BF
        ("SegNet-Basic, TPAMI 2017 Table 1 (median frequency balancing)", 82.7, 62.0, 47.7, 35.78),
        # chainercv examples/segnet: trained from scratch, 16k iterations at batch 12 with flips
        ("SegNet-Basic, chainercv reproduction (16k iterations, batch 12, flips)", 82.7, 67.1, 49.4, None),
    ],
}


def published_rows(config):
    """The published rows to set beside a run of this config (CamVid, 11 classes only)."""
    if config.get("dataset") != "camvid" or config.get("num_classes") != 11:
        return []
    return PUBLISHED.get(config.get("model"), [])
