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
import pathlib
import sys
import time

import torch

from segnet import runtime
from segnet.build import build_dataset
from segnet.checkpoint import model_from_checkpoint
from segnet.config import help_text, parse_overrides, wants_help
from segnet.data import (DATASETS, DEFAULT_DATASET, SPLITS, DatasetNames, Labelled, UnlabelledImages, collate,
                         published_rows)
from segnet.data.check import check_dataset
from segnet.data.registry import check_class_names, check_fits, default_root, some_names, split_size_warning
from segnet.errors import UserError, interrupted_as, memory_errors, read_errors, run_cli, user_errors
from segnet.evaluation import evaluate
from segnet.files import check_outside_data, check_writable_folder, make_folders
from segnet.outputs import EvalFolder, PictureWriter, write_metrics, write_results_md
from segnet.progress import Stage
from segnet.score import PredictionPairs, tally_pairs
from segnet.video import segment_video
from segnet.visualize import checkpoint_palette

DEFAULTS = {
    "dataset": "",       # "" = the checkpoint's data set | another registered one with the same class count
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
    # score mode: score a folder of predicted label PNGs by the paper's rules, without a checkpoint
    "predictions": "",   # the folder ("" = evaluate a checkpoint)
    "num_classes": 0,    # score mode only (a checkpoint brings its own): 0 = the data set's own
    # video mode (segnet/video.py, needs PyAV): one output video instead of metrics and pictures
    "video": "",         # a video file, or a webcam index (0, 1, ...)
    "out": "",           # the output video; "" = <checkpoint folder>/video/<input name>.mp4
    "side_by_side": False,  # frame | prediction colours, instead of the colours over the frame
}
SHIPPED = pathlib.Path(__file__).resolve().parent / "weights"
SHIPPED_OUT = SHIPPED.parent / "checkpoints" / "shipped-eval"
CHOICES = {"split": SPLITS, "dtype": runtime.DTYPE_CHOICES, "dataset": DatasetNames("")}
NOTHING_WRITTEN = "interrupted before any output was written"  # Ctrl-C before the output folder is ours
MINIMUMS = {"batch_size": 1, "num_workers": 0, "mc_samples": 0, "collages": 0, "num_classes": 0}

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    with user_errors():
        ckpt_path, args = parse_command_line(argv)
    if args["predictions"]:
        return score_mode(args)
    with user_errors(), interrupted_as(NOTHING_WRITTEN):
        model, ckpt = model_from_checkpoint(ckpt_path)
        # evaluation reads the data, never fetches it: nothing is created in the data folder
        config = {**data_config(ckpt["config"], args), "download": False}
        # the layout of this machine, not the run's
        rt = runtime.setup(args["device"], args["dtype"], "auto", kernel_size=model.spec.kernel_size,
                           tf32=args["dtype"] != "float32")
        model = rt.place(model)
    if args["video"]:
        return video_mode(args, ckpt_path, model, ckpt, rt)
    with user_errors(), interrupted_as(NOTHING_WRITTEN):
        predict_mode = bool(args["images"])
        out_dir = out_dir_for(args, ckpt_path, predict_mode)
        check_writable_folder(out_dir)  # before any data is read
        if not predict_mode:
            check_outside_data(out_dir, config["data_root"])  # an output there would be read as data
            check_data_fits(config, ckpt_path, ckpt["config"]["dataset"])  # before anything is read from --data_root
        dataset = make_dataset(args, config, list(ckpt["class_names"]), ckpt_path, predict_mode,
                               ckpt["config"]["dataset"])
        folder = EvalFolder(out_dir, uncertainty=args["mc_samples"] > 0)  # locked, marked INCOMPLETE
    if args["mc_samples"] > 0 and not any(isinstance(m, torch.nn.Dropout) for m in model.modules()):
        print("note: this model has no dropout (trained with bayesian=false): all MC samples are the same")
    with folder, interrupted_as(folder.partial):
        loader = read_errors(torch.utils.data.DataLoader(
            dataset, args["batch_size"], shuffle=False, num_workers=args["num_workers"],
            pin_memory=rt.device.type == "cuda", collate_fn=collate))
        pictures = PictureWriter(out_dir, dataset, config["normalize"], checkpoint_palette(ckpt), args["collages"])
        t0 = time.time()
        with memory_errors(f"evaluating batches of {args['batch_size']} images", "lower --batch_size"):
            m = evaluate(model, loader, config["num_classes"], rt.device, rt.dtype, rt.channels_last,
                         boundary=args["boundary"] and not predict_mode, mc_samples=args["mc_samples"],
                         on_batch=pictures, stage="predict" if predict_mode else f"evaluation {args['split']}")
        with user_errors():
            pictures.close()
        elapsed = time.time() - t0
        print(f"{m['num_images']} images in {elapsed:.1f} s ({m['num_images'] / max(elapsed, 1e-9):.2f} img/s) on "
              f"{rt.device}, {rt.precision}; outputs in {out_dir}")
        if not predict_mode:
            warn_split_size(m["num_images"], config, args["split"])
            source = {"checkpoint": str(ckpt_path), "iter": ckpt.get("iter"), "mc_samples": args["mc_samples"]}
            rows = published_rows(config)
            result = write_metrics(m, list(ckpt["class_names"]), args["split"], out_dir, source, rows)
            write_results_md(out_dir / "results.md", result, config, rows,
                             "python Evaluate_SegNet.py " + " ".join(argv), runtime.hardware_line(rt.device), elapsed)
        folder.done()
    if predict_mode:
        return 0
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
    config, source = ckpt["config"], args["video"]
    name = f"webcam{source}" if source.isdigit() else pathlib.Path(source).stem
    out = pathlib.Path(args["out"] or pathlib.Path(args["out_dir"] or pathlib.Path(ckpt_path).parent / "video")
                       / f"{name}.mp4")
    with user_errors():
        if not args["out"]:
            make_folders([out.parent])  # never a symlink planted at video/
        r = segment_video(model, source, out, config["height"], config["width"], config["normalize"],
                          checkpoint_palette(ckpt), rt.device, rt.dtype,
                          side_by_side=args["side_by_side"], channels_last=rt.channels_last)
    print(f"{r['frames']} frames in {r['seconds']:.1f} s ({r['fps']:.2f} frames/s) on {rt.device}, "
          f"{rt.precision}; video in {out}")
    return 0


def score_data(args):
    """(data set, folder) that score mode reads: --dataset / --data_root, else the default data set
    and its registry entry's default folder."""
    dataset = args["dataset"] or DEFAULT_DATASET
    if args["data_root"]:
        return dataset, args["data_root"]
    try:
        return dataset, default_root(dataset)
    except ValueError as e:
        raise UserError(str(e)) from None


def score_mode(args):
    """Score mode: a folder of predicted label PNGs against the split's annotations, no checkpoint."""
    folder = pathlib.Path(args["predictions"])
    dataset, data_root = score_data(args)
    named = folder.resolve()  # "." and ".." have a name only once resolved
    out_dir = pathlib.Path(args["out_dir"] or named.parent / f"{named.name or 'predictions'}-score-{args['split']}")
    t0 = time.time()
    with user_errors():
        check_writable_folder(out_dir)  # before the scoring
        pairs = PredictionPairs(folder, data_root, args["split"], args["num_classes"], dataset)
    with user_errors(), interrupted_as(NOTHING_WRITTEN), Stage(f"score {args['split']}", len(pairs)) as stage:
        m = tally_pairs(pairs, boundary=args["boundary"], num_workers=args["num_workers"],
                        batch_size=args["batch_size"], on_batch=lambda batch, first: stage.update(len(batch.preds)))
    print(f"{m['num_images']} prediction files scored in {time.time() - t0:.1f} s; outputs in {out_dir}")
    warn_split_size(m["num_images"], {"dataset": dataset, "data_root": data_root}, args["split"])
    source = {"checkpoint": None, "predictions": str(folder), "iter": None, "mc_samples": 0}
    with user_errors(), EvalFolder(out_dir, pictures=False) as owned, interrupted_as(owned.partial):
        write_metrics(m, pairs.class_names, args["split"], out_dir, source,
                      published_rows({"dataset": dataset, "num_classes": pairs.num_classes, "model": "segnet"}))
        owned.done()
    return 0


def out_dir_for(args, ckpt_path, predict_mode):
    """--out_dir, else beside the checkpoint; for the repo's shipped weights, under checkpoints/
    (outside the tracked tree), so that trying them leaves `git status` clean."""
    ckpt = pathlib.Path(ckpt_path).resolve()
    base = SHIPPED_OUT / ckpt.stem if ckpt.parent == SHIPPED else ckpt.parent
    return pathlib.Path(args["out_dir"] or base / ("predict" if predict_mode else f"eval-{args['split']}"))


def check_data_fits(config, ckpt_path, trained_on):
    """Before anything is read: --data_root holds the kind of data set the checkpoint is read as
    (`trained_on`, or --dataset), in a layout that has its number of classes (ValueError /
    FileNotFoundError otherwise; the data set's registry entry knows its layouts)."""
    kind, n = config["dataset"], config["num_classes"]
    trained = (f"checkpoint {ckpt_path} was trained on {kind} ({n} classes)" if kind == trained_on else
               f"checkpoint {ckpt_path} ({n} classes, trained on {trained_on}) read as --dataset={kind}")
    check_fits(config["data_root"], kind, n, trained)


def warn_split_size(n, config, split):
    """One line when a whole data set's split did not give the number of images it has."""
    warning = split_size_warning(config["dataset"], n, split, config["data_root"])
    if warning:
        print(warning)


def make_dataset(args, config, class_names, ckpt_path, predict_mode, trained_on):
    """Predict mode: the images given; else the split, labelled, checked against the checkpoint's classes."""
    if predict_mode:
        print(f"predicting the checkpoint's {len(class_names)} classes: {', '.join(class_names)}")
        return UnlabelledImages(args["images"], config["height"], config["width"], config["normalize"])
    n = DATASETS[config["dataset"]].num_classes(config["data_root"], len(class_names))
    if n != len(class_names):
        raise UserError(f"checkpoint {ckpt_path} predicts {len(class_names)} classes ({some_names(class_names)}) "
                        f"but the {config['dataset']} data at {config['data_root']} has {n}")
    dataset = Labelled(build_dataset(config, args["split"], train=False))
    check_dataset(dataset.dataset)  # every pair decodes and agrees in size, before the first batch
    # --dataset naming another data set scores other data under the checkpoint's names
    check_class_names(class_names, dataset.class_names, f"checkpoint {ckpt_path}",
                      f"the {config['dataset']} data at {config['data_root']}",
                      other_data=bool(args["dataset"]) and args["dataset"] != trained_on)
    return dataset


if __name__ == "__main__":
    sys.exit(run_cli(main))
