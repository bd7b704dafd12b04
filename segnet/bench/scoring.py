"""How long score mode takes: a split's labels shifted right stand in for a system's predictions,
written as PNGs and scored by the paper's rules (G, C, mIoU and BF, segnet/score.py).

    python -m segnet.bench.scoring --data_root=data/CamVid --split=test --shift=3 --out=DIR
"""
import pathlib
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from ..config import help_text, parse_overrides, wants_help
from ..data import DEFAULT_DATASET, SPLITS, entry
from ..errors import run_cli, user_errors
from ..score import prediction_name, score_predictions


def write_shifted_predictions(data_root, split, out_dir, shift=3, num_classes=11, dataset=DEFAULT_DATASET):
    """Predictions made from the labels: void becomes class 0, each map moves `shift` px right,
    the gap repeats the first column. Returns the number of files written."""
    labels = entry(dataset).build(data_root, split, num_classes, None, False)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        m = labels.load_mask(i)
        m = np.where(m >= num_classes, 0, m).astype(np.uint8)
        m = np.concatenate([np.repeat(m[:, :1], shift, 1), m[:, :m.shape[1] - shift]], 1)
        Image.fromarray(m).save(out / prediction_name(labels, i))
    return len(labels)


def time_scoring(data_root, split="test", shift=3, num_classes=11, out_dir=None, dataset=DEFAULT_DATASET):
    """Seconds to score a split (reading the PNGs, confusion matrix and the paper's BF) on the
    labels shifted `shift` px right, written first to `out_dir` (default: a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(out_dir or tmp)
        write_shifted_predictions(data_root, split, folder, shift, num_classes, dataset)
        t0 = time.perf_counter()
        m, _ = score_predictions(folder, data_root, split, num_classes, dataset)
        seconds = time.perf_counter() - t0
    n = m["num_images"]
    return {"split": split, "images": n, "shift": shift, "seconds": seconds,
            "img_per_s": n / seconds, "boundary_f1": m["boundary_f1"], "global_accuracy": m["global_accuracy"],
            "class_average_accuracy": m["class_average_accuracy"], "mean_iou": m["mean_iou"]}


DEFAULTS = {
    "data_root": entry(DEFAULT_DATASET).default_root,  # the default data set's folder
    "split": "test",             # train | val | test
    "shift": 3,                  # px the labels are shifted right to make the predictions
    "out": "",                   # keep the shifted predictions in this folder ("" = a temporary one)
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    a = parse_overrides(DEFAULTS, argv, presets={}, choices={"split": SPLITS}, minimums={"shift": 0})
    with user_errors():
        r = time_scoring(a["data_root"], a["split"], a["shift"], out_dir=a["out"] or None)
    print(f"scored {r['images']} {a['split']} images (labels shifted {a['shift']} px) in {r['seconds']:.1f} s "
          f"({r['img_per_s']:.1f} img/s): BF {r['boundary_f1']:.6f}, G {r['global_accuracy']:.4f}, "
          f"C {r['class_average_accuracy']:.4f}, mIoU {r['mean_iou']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
