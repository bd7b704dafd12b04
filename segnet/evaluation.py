"""The one evaluation path, shared by training's validation, Evaluate_SegNet.py (a checkpoint,
predict mode, score mode) and the video mode (pytorch/vision references/segmentation/train.py
`evaluate`): predictions of a model, and the tally of the paper's metrics over any batches of
predictions.

    m = evaluate(model, loader, num_classes, device, dtype, boundary=True)
    print(m["mean_iou"], m["boundary_f1"])
"""
import collections

import torch
import torch.nn.functional as F

from .metrics import BoundaryF1, ConfusionMatrix
from .model import mc_dropout
from .progress import size_of, track
from .runtime import autocast, to_device


def predict(model, images, device, dtype, size=None, mc_samples=0):
    """Class probabilities (B, C, H, W) in fp32, resized (bilinear, on the logits) to `size`.

    mc_samples > 0: average that many softmax samples with dropout on (Bayesian SegNet) and also
    return the per-pixel variance averaged over classes (the model uncertainty).
    """
    def once():
        with autocast(device, dtype):
            logits = model(images)
        logits = logits.float()
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.softmax(1)

    if mc_samples <= 0:
        return once(), None
    mean = sq = None
    for _ in range(mc_samples):
        p = once()
        mean = p if mean is None else mean + p
        sq = p * p if sq is None else sq + p * p
    mean, sq = mean / mc_samples, sq / mc_samples
    return mean, (sq - mean * mean).clamp_min(0).mean(1)


# One batch of predictions, from any source: images (as loaded, or None), masks (the labels on the
# device: stacked, a list where their sizes differ, or None when unlabelled), preds (one (H, W)
# class map per image, at its label's size), uncertainty (one (H, W) map per image with MC
# dropout, else None).
Batch = collections.namedtuple("Batch", "images masks preds uncertainty")


def model_predictions(model, loader, device, dtype, channels_last=False, mc_samples=0):
    """Batches of `model`'s predictions over `loader`, whose batches are (images, masks) or
    (images, masks or None, label sizes) (segnet.data.collate). Eval mode, except dropout with
    mc_samples > 0; the model's mode is restored at the end."""
    was_training = model.training
    model.eval()
    if mc_samples > 0:
        mc_dropout(model, True)
    try:
        for images, masks, *sizes in loader:
            sizes = sizes[0] if sizes else [tuple(masks.shape[-2:])] * len(images)
            x = to_device(images, device, channels_last)
            if all(s == sizes[0] for s in sizes):
                probs, unc = predict(model, x, device, dtype, sizes[0], mc_samples=mc_samples)
                preds, uncs = list(probs.argmax(1)), list(unc) if unc is not None else None
            else:  # images of different sizes (predict mode): each back to its own size
                outs = [predict(model, x[b:b + 1], device, dtype, s, mc_samples=mc_samples)
                        for b, s in enumerate(sizes)]
                preds = [p[0].argmax(0) for p, _ in outs]
                uncs = [u[0] for _, u in outs] if mc_samples > 0 else None
            if isinstance(masks, list):  # labels of different sizes (segnet.data.collate)
                masks = [m.to(device, non_blocking=True) for m in masks]
            elif masks is not None:
                masks = masks.to(device, non_blocking=True)
            yield Batch(images, masks, preds, uncs)
    finally:
        model.train(was_training)


@torch.inference_mode()
def tally(batches, num_classes, device, boundary=False, on_batch=None):
    """The one evaluation loop: a streaming confusion matrix (and the paper's BF with `boundary`)
    over `batches` of predictions from any source (model_predictions, or prediction files:
    segnet.score), all ranks together under torch.distributed. `on_batch(batch, first_index)`
    sees every batch (to write pictures).

    Returns the confusion-matrix metrics, `boundary_f1` and `per_class_boundary_f1` with
    `boundary`, and `num_images`; only `num_images` when no batch had labels."""
    cm = ConfusionMatrix(num_classes, device=device)
    bf = BoundaryF1(num_classes, device=device) if boundary else None
    n, labelled = 0, False
    try:
        for batch in batches:
            if batch.masks is not None:
                # one stacked update, or one per image where the labels differ in size
                pairs = (zip(batch.preds, batch.masks) if isinstance(batch.masks, list)
                         else [(torch.stack(batch.preds), batch.masks)])
                for pred, masks in pairs:
                    cm.update(pred, masks)
                    if bf is not None:  # the paper's BF queues the maps to CPU threads and returns
                        bf.update(pred, masks)
                labelled = True
            if on_batch is not None:
                on_batch(batch, n)
            n += len(batch.preds)
        if not labelled:
            return {"num_images": n}
        cm.all_reduce()
        metrics = cm.compute()
        if bf is not None:
            bf.all_reduce()
            metrics.update(bf.compute())
        return {**metrics, "num_images": n}
    finally:
        getattr(batches, "close", lambda: None)()  # a generator source restores its model now
        if bf is not None:
            bf.close()


def evaluate(model, loader, num_classes, device, dtype, channels_last=False, boundary=False, mc_samples=0,
             on_batch=None, stage="validation"):
    """`model`'s predictions over `loader`, tallied (training's validation and Evaluate_SegNet.py),
    with the progress of the `stage` so named (segnet.progress)."""
    batches = model_predictions(model, loader, device, dtype, channels_last, mc_samples)
    return tally(track(batches, stage, size_of(loader), count=lambda batch: len(batch.preds)),
                 num_classes, device, boundary, on_batch)
