"""Pictures for evaluation: colour label maps, collages, a confusion matrix, uncertainty heat maps.
PIL only (no plotting library)."""
import numpy as np
from PIL import Image, ImageDraw

from .data import palette_for


def checkpoint_palette(ckpt):
    """The display colours a checkpoint (or weights file) stores, its data set's; one without them
    (written before they were stored) gets its data set's colours from the registry."""
    stored = ckpt.get("palette")
    return [tuple(c) for c in stored] if stored else palette_for(ckpt["config"]["dataset"], ckpt["class_names"])


VOID_COLOUR = (224, 224, 192)  # PASCAL VOC's void border colour


def colorize(labels, palette):
    """(H, W) int labels -> (H, W, 3) uint8 colours; labels outside the palette (void) are black,
    or VOC's void colour where a class is black (the default palette's class 0), so the two differ."""
    lut = np.zeros((256, 3), np.uint8)
    if any(tuple(c) == (0, 0, 0) for c in palette):
        lut[:] = VOID_COLOUR
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[np.clip(np.asarray(labels), 0, 255).astype(np.uint8)]


def heatmap(values):
    """(H, W) non-negative floats -> (H, W, 3) uint8, black -> red -> yellow -> white, scaled to the max."""
    v = np.asarray(values, np.float32)
    v = v / v.max() if v.max() > 0 else v
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def collage(image, gt, pred, palette):
    """input | ground truth | prediction, side by side, 4 px apart; input | prediction without a
    ground truth (predict mode: gt None)."""
    parts = [np.asarray(image, np.uint8)] + ([colorize(gt, palette)] if gt is not None else []) + \
        [colorize(pred, palette)]
    gap = np.full((parts[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([x for part in parts for x in (part, gap)][:-1], 1)


def confusion_matrix_image(mat, names, cell=28):
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction) with labels."""
    mat = np.asarray(mat, np.float64)
    rows = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    n = len(names)
    left, top = 8 + 7 * max(map(len, names)), 8 + 7 * max(map(len, names))
    img = Image.new("RGB", (left + n * cell + 8, top + n * cell + 8), "white")
    d = ImageDraw.Draw(img)
    for i in range(n):
        d.text((4, top + i * cell + cell // 3), names[i], fill="black")
        # column labels, written vertically one character per line
        for k, ch in enumerate(names[i][: top // 10]):
            d.text((left + i * cell + cell // 3, 4 + 10 * k), ch, fill="black")
        for j in range(n):
            v = rows[i, j]
            shade = int(255 * (1 - v))
            d.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1],
                        fill=(shade, shade, 255))
            if v >= 0.005:
                d.text((left + j * cell + 3, top + i * cell + cell // 3), f"{100 * v:.0f}",
                       fill="white" if v > 0.5 else "black")
    return img
