"""Evaluate a SegNet checkpoint with the paper's metrics (G, C, mIoU, BF), or segment new images.

    python Evaluate_SegNet.py checkpoints/RUN/best.pt                    # CamVid test split
    python Evaluate_SegNet.py CKPT --split=val --data_root=data/CamVid --out_dir=eval
    python Evaluate_SegNet.py CKPT --mc_samples=8                        # Bayesian SegNet uncertainty
    python Evaluate_SegNet.py CKPT --images=my_photos/ --out_dir=pred    # predict mode, no labels
    python Evaluate_SegNet.py CKPT --video=drive.mp4 --out=drive_seg.mp4  # video (or --video=0: webcam)

Classes, data set, input size and normalisation come from the checkpoint's stored config.
"""
import json
import math
import os
import pathlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

DEFAULTS = {
    "data_root": "",     # "" = the data_root stored in the checkpoint
    "split": "test",     # train | val | test
    "out_dir": "",       # "" = <checkpoint folder>/eval-<split> (or predict/)
    "batch_size": 4,
    "device": "auto",    # auto | cpu | cuda | cuda:N
    "dtype": "auto",     # auto (bf16 on AMX/AVX512-BF16 CPUs and new GPUs, fp16 on old GPUs) | float32 | bfloat16 | float16
    "num_workers": 2,
    "mc_samples": 0,     # > 0: Bayesian SegNet, average N dropout samples and save uncertainty maps
    "images": "",        # predict mode: a folder or file of images without labels
    "collages": 6,       # how many input | ground truth | prediction pictures to write
    "boundary": True,    # compute BF (Sec. 4), the slowest metric
    # video mode (segnet/video.py, needs PyAV): one output video instead of metrics and pictures
    "video": "",         # a video file, or a webcam index (0, 1, ...)
    "out": "",           # the output video; "" = <checkpoint folder>/video/<input name>.mp4
    "side_by_side": False,  # frame | prediction colours, instead of the colours over the frame
}
CHOICES = {"split": ("train", "val", "test"), "dtype": ("auto", "float32", "bfloat16", "float16")}
MINIMUMS = {"batch_size": 1, "num_workers": 0, "mc_samples": 0, "collages": 0}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# The paper's CamVid rows (11 classes, test split), in percent.
PAPER_ROWS = [
    ("SegNet, TPAMI 2017 Table 3 (3.5K road images, >80K iterations)", 90.40, 71.20, 60.10, 46.84),
    ("SegNet trained on CamVid alone (SegNet-Tutorial)", 88.6, 65.9, 50.2, None),
    ("Bayesian SegNet (Kendall et al. 2015, CamVid)", 86.9, 76.3, 63.1, None),
]


def nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def pct(x):
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def save_png(path, array):
    from PIL import Image
    Image.fromarray(array).save(path)


def main(argv=None):
    from segnet import engine
    from segnet.build import build_dataset, build_model
    from segnet.config import format_config, parse_overrides
    from segnet.data.camvid import camvid_palette
    from segnet.errors import UserError
    from segnet.metrics import BoundaryF1, ConfusionMatrix
    from segnet.model import mc_dropout
    from segnet.transforms import input_to_unit
    from segnet.visualize import collage, colorize, confusion_matrix_image, default_palette, heatmap

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(f"{__doc__}\noptions (--key=value):\n{format_config(DEFAULTS)}")
        return 0
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1:
        raise UserError("usage: python Evaluate_SegNet.py CHECKPOINT [--key=value ...]; "
                        f"keys: {', '.join(DEFAULTS)}")
    ckpt_path = positional[0]
    args = parse_overrides(DEFAULTS, [a for a in argv if a.startswith("--")], presets={}, choices=CHOICES,
                           minimums=MINIMUMS)
    ckpt = engine.load_checkpoint(ckpt_path)
    config = dict(ckpt["config"])
    if args["data_root"]:
        config["data_root"] = args["data_root"]
    class_names = list(ckpt["class_names"])
    n = config["num_classes"]

    device = engine.resolve_device(args["device"])
    amp_dtype = engine.resolve_dtype(args["dtype"], device)
    model = build_model(config, init=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {ckpt_path}: weights do not fit its own config: {str(e).splitlines()[0]}") from None
    channels_last = config.get("channels_last", False)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    mc = args["mc_samples"]
    if mc > 0 and mc_dropout(model, True) == 0:
        print("note: this model has no dropout (trained with bayesian=false): all MC samples are the same")

    if args["video"]:
        return video_mode(args, ckpt_path, model, config, class_names, device, amp_dtype)
    if args["out"] or args["side_by_side"]:
        raise UserError("--out and --side_by_side belong to --video=IN; metrics and pictures go to --out_dir")

    predict_mode = bool(args["images"])
    out_dir = pathlib.Path(args["out_dir"] or pathlib.Path(ckpt_path).parent /
                           ("predict" if predict_mode else f"eval-{args['split']}"))
    try:
        for sub in ("predictions", "colour", "collages") + (("uncertainty",) if mc > 0 else ()):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to --out_dir={out_dir}: {e.strerror}") from None

    palette = camvid_palette(class_names) if config["dataset"] == "camvid" else default_palette(n)
    if predict_mode:
        dataset = ImageFolder(args["images"], config)
    else:
        dataset = Labelled(build_dataset(config, args["split"], train=False))
        if list(dataset.class_names) != class_names:
            raise UserError(f"checkpoint {ckpt_path} predicts {n} classes ({', '.join(class_names[:4])}, ...) "
                            f"but the {config['dataset']} data has {len(dataset.class_names)} "
                            f"({', '.join(dataset.class_names[:4])}, ...)")
    loader = torch.utils.data.DataLoader(dataset, args["batch_size"], shuffle=False, num_workers=args["num_workers"],
                                         pin_memory=device.type == "cuda", collate_fn=collate)

    cm = ConfusionMatrix(n, device=device)
    bf = BoundaryF1(n, device=device) if args["boundary"] and not predict_mode else None
    mean, std = map(torch.tensor, input_to_unit(config["normalize"]))
    from tqdm import tqdm
    t0, index = time.time(), 0
    writer, pending = ThreadPoolExecutor(2), []  # PNG encoding overlaps the next batch
    with torch.inference_mode(), tqdm(total=len(dataset), unit="img", desc=args["split"] if not predict_mode else "predict") as bar:
        for images, masks, sizes in loader:
            x = engine.to_device(images, device, channels_last)
            if all(s == sizes[0] for s in sizes):
                probs, unc = engine.predict(model, x, device, amp_dtype, sizes[0], mc_samples=mc)
                preds, uncs = list(probs.argmax(1)), list(unc) if unc is not None else None
            else:  # images of different sizes (predict mode): each back to its own size
                outs = [engine.predict(model, x[b:b + 1], device, amp_dtype, s, mc_samples=mc)
                        for b, s in enumerate(sizes)]
                preds = [p[0].argmax(0) for p, _ in outs]
                uncs = [u[0] for _, u in outs] if mc > 0 else None
            if masks is not None:
                masks = masks.to(device, non_blocking=True)
                pred = torch.stack(preds)
                cm.update(pred, masks)
                if bf is not None:
                    bf.update(pred, masks)
            for b, pred in enumerate(preds):
                name, pred_np = dataset.name(index), pred.to(torch.uint8).cpu().numpy()
                pending.append(writer.submit(save_png, out_dir / "predictions" / name, pred_np))
                pending.append(writer.submit(save_png, out_dir / "colour" / name, colorize(pred_np, palette)))
                if uncs is not None:
                    pending.append(writer.submit(save_png, out_dir / "uncertainty" / name,
                                                 heatmap(uncs[b].float().cpu().numpy())))
                if masks is not None and index < args["collages"]:
                    img = images[b].float() * std[:, None, None] + mean[:, None, None]
                    img = torch.nn.functional.interpolate(img[None], size=pred_np.shape, mode="bilinear")[0]
                    img = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                    pending.append(writer.submit(save_png, out_dir / "collages" / name,
                                                 collage(img, masks[b].cpu().numpy(), pred_np, palette)))
                index += 1
            bar.update(len(preds))
    writer.shutdown(wait=True)
    for p in pending:
        try:
            p.result()
        except OSError as e:
            raise UserError(f"cannot write a picture into {out_dir}: {e}") from None
    elapsed = time.time() - t0
    print(f"{index} images in {elapsed:.1f} s ({index / max(elapsed, 1e-9):.2f} img/s) on {device}, "
          f"autocast {str(amp_dtype).replace('torch.', '')}; outputs in {out_dir}")
    if predict_mode:
        return 0

    m = cm.compute()
    b = bf.compute() if bf is not None else {"boundary_f1": float("nan"), "per_class_boundary_f1": [float("nan")] * n}
    result = {
        "global_accuracy": m["global_accuracy"], "class_average_accuracy": m["class_average_accuracy"],
        "mean_iou": m["mean_iou"], "boundary_f1": nan_to_none(b["boundary_f1"]),
        "per_class": {name: {"accuracy": nan_to_none(m["per_class_accuracy"][i]),
                             "iou": nan_to_none(m["per_class_iou"][i]),
                             "boundary_f1": nan_to_none(b["per_class_boundary_f1"][i])}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": m["confusion_matrix"], "num_images": index, "split": args["split"],
        "checkpoint": str(ckpt_path), "iter": ckpt.get("iter"), "mc_samples": mc,
    }
    with open(out_dir / "metrics.json", "w") as f:
        json.dump(result, f, indent=2)
    confusion_matrix_image(m["confusion_matrix"], class_names).save(out_dir / "confusion_matrix.png")

    width = max(12, max(map(len, class_names)))
    print(f"\n{'class':<{width}}  accuracy    IoU      BF")
    for name in class_names:
        r = result["per_class"][name]
        print(f"{name:<{width}}  {pct(r['accuracy'])}  {pct(r['iou'])}  {pct(r['boundary_f1'])}")
    print(f"\n{'':<{width}}      G       C     mIoU     BF")
    print(f"{'ours (' + args['split'] + ')':<{width}}  {pct(result['global_accuracy'])}  "
          f"{pct(result['class_average_accuracy'])}  {pct(result['mean_iou'])}  {pct(result['boundary_f1'])}")
    if config["dataset"] == "camvid" and n == 11:
        print("paper (CamVid test, 11 classes):")
        for label, g, c, miou, bfv in PAPER_ROWS:
            print(f"  {g:6.2f}  {c:6.2f}  {miou:6.2f}  {'   -  ' if bfv is None else f'{bfv:6.2f}'}   {label}")
    print(f"metrics: {out_dir / 'metrics.json'}")
    return 0


def video_mode(args, ckpt_path, model, config, class_names, device, amp_dtype):
    """--video=IN: segment a video file or a webcam into one video (segnet/video.py)."""
    from segnet.export import palette_for
    from segnet.video import segment_video
    name = f"webcam{args['video']}" if args["video"].isdigit() else pathlib.Path(args["video"]).stem
    out = pathlib.Path(args["out"] or pathlib.Path(args["out_dir"] or pathlib.Path(ckpt_path).parent / "video")
                       / f"{name}.mp4")
    if not args["out"]:
        out.parent.mkdir(parents=True, exist_ok=True)
    r = segment_video(model, args["video"], out, config["height"], config["width"], config["normalize"],
                      [tuple(c) for c in palette_for(config, class_names)], device, amp_dtype,
                      side_by_side=args["side_by_side"], channels_last=config.get("channels_last", False))
    print(f"{r['frames']} frames in {r['seconds']:.1f} s ({r['fps']:.2f} frames/s) on {device}, "
          f"autocast {str(amp_dtype).replace('torch.', '')}; video in {out}")
    return 0


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    masks = torch.stack([b[1] for b in batch]) if batch[0][1] is not None else None
    return images, masks, [tuple(b[2]) for b in batch]


class Labelled(torch.utils.data.Dataset):
    """A labelled data set's items as (image, mask, label size), with an output file name each."""

    def __init__(self, dataset):
        self.dataset, self.class_names = dataset, dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def name(self, i):
        files = getattr(self.dataset, "files", None)
        if files and isinstance(files[0], tuple):  # CamVid: (image, label) pairs
            return pathlib.Path(files[i][0]).stem + ".png"
        return f"{i:05d}.png"

    def __getitem__(self, i):
        image, mask = self.dataset[i]
        return image, mask, mask.shape[-2:]


class ImageFolder(torch.utils.data.Dataset):
    """Unlabelled images for predict mode: (image at the model's input size, None, original size)."""

    def __init__(self, path, config):
        from segnet.errors import UserError
        from segnet.transforms import eval_transforms
        p = pathlib.Path(path)
        if p.is_file():
            self.files = [p]
        elif p.is_dir():
            self.files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise UserError(f"--images={path}: no such file or folder")
        if not self.files:
            raise UserError(f"--images={path}: no images found (expected {', '.join(IMAGE_EXTENSIONS)})")
        self.transform = eval_transforms(config["height"], config["width"], config["normalize"])

    def __len__(self):
        return len(self.files)

    def name(self, i):
        return self.files[i].stem + ".png"

    def __getitem__(self, i):
        from torchvision import tv_tensors
        from segnet.data.camvid import read_png
        image = torch.from_numpy(read_png(self.files[i], "RGB")).permute(2, 0, 1)
        x, _ = self.transform(tv_tensors.Image(image), None)
        return x.as_subclass(torch.Tensor), None, image.shape[-2:]


if __name__ == "__main__":
    from segnet.errors import run_cli
    sys.exit(run_cli(main))
