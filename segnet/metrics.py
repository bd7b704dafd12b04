"""Segmentation metrics of the SegNet paper (TPAMI 2017, Sec. 4): global accuracy, class-average
accuracy, mIoU (from one streaming confusion matrix) and boundary F1 (BF).

    cm, bf = ConfusionMatrix(11, ignore_index=11), BoundaryF1(11, ignore_index=11)
    for image, target in loader:
        pred = model(image).argmax(1)
        cm.update(pred, target); bf.update(pred, target)
    cm.all_reduce(); bf.all_reduce()          # no-ops unless torch.distributed is initialised
    print(cm.compute()["mean_iou"], bf.compute()["boundary_f1"])

Everything is torch ops on the inputs' device; `update` never syncs with the host.
"""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _distributed():
    return dist.is_available() and dist.is_initialized()


class ConfusionMatrix:
    """Streaming (num_classes, num_classes) int64 counts: rows = ground truth, cols = prediction.

    After pytorch/vision references/segmentation/utils.py ConfusionMatrix, except that classes absent
    from the ground truth are reported as absent (NaN) and left out of the means, not averaged as 0.
    """

    def __init__(self, num_classes, ignore_index=255, device=None):
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a real class; expected a value outside "
                             f"0..{num_classes - 1}")
        self.num_classes, self.ignore_index, self.device = num_classes, ignore_index, device
        self.reset()

    def reset(self):
        n = self.num_classes
        self.mat = torch.zeros((n, n), dtype=torch.int64, device=self.device)
        # Out-of-range labels are counted here and raised in compute(): checking in update would
        # cost a host sync per batch. Rows: target, pred; columns: pixel count, largest bad value.
        self.bad = torch.zeros((2, 2), dtype=torch.int64, device=self.device)

    def update(self, pred, target):
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if self.mat.device != target.device:
            self.mat, self.bad = self.mat.to(target.device), self.bad.to(target.device)
        n = self.num_classes
        gt, pred = target.reshape(-1).long(), pred.reshape(-1).long()  # long: uint8 n*gt overflows
        if gt.numel() == 0:  # .max() below has no empty case
            return
        keep = gt != self.ignore_index
        for row, x, where in ((0, gt, keep), (1, pred, keep)):
            out = where & ((x < 0) | (x >= n))
            self.bad[row, 0] += out.sum()
            self.bad[row, 1] = torch.maximum(self.bad[row, 1],
                                             torch.where(out, x, torch.iinfo(torch.int64).min).max())
        ok = keep & (gt >= 0) & (gt < n) & (pred >= 0) & (pred < n)
        # The bincount(n * gt + pred) of the torchvision reference, written as index_add_ because
        # CUDA bincount reads min and max back to the host (aten/src/ATen/native/cuda/SummaryOps.cu).
        # Invalid pixels go to bin n*n, one past the matrix, and are dropped by the slice.
        idx = torch.where(ok, n * gt + pred, n * n)
        counts = torch.zeros(n * n + 1, dtype=torch.int64, device=idx.device)
        self.mat += counts.index_add_(0, idx, torch.ones_like(idx))[: n * n].reshape(n, n)

    def all_reduce(self):
        if _distributed():
            dist.all_reduce(self.mat)
            bad_max = self.bad[:, 1].clone()
            dist.all_reduce(self.bad)
            dist.all_reduce(bad_max, op=dist.ReduceOp.MAX)
            self.bad[:, 1] = bad_max

    def compute(self):
        bad = self.bad.cpu().tolist()
        for (count, value), name in zip(bad, ("target", "pred")):
            if count:
                raise ValueError(f"{name} holds {count} pixels with a label outside 0.."
                                 f"{self.num_classes - 1} and not ignore_index {self.ignore_index} "
                                 f"(largest: {value})")
        mat = self.mat.cpu()
        h = mat.double()
        tp, row, col = h.diag(), h.sum(1), h.sum(0)
        present = row > 0
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        acc = torch.where(present, tp / row, nan)
        iou = torch.where(present, tp / (row + col - tp), nan)
        return {
            "global_accuracy": (tp.sum() / h.sum()).item(),  # 0/0 = NaN for an empty matrix
            "class_average_accuracy": acc[present].mean().item(),  # mean of nothing = NaN
            "mean_iou": iou[present].mean().item(),
            "per_class_accuracy": acc.tolist(),
            "per_class_iou": iou.tolist(),
            "present": present.tolist(),
            "confusion_matrix": mat.tolist(),
        }


def _boundaries(labels, num_classes):
    """(C, H, W) bool: pixels of each class mask with a 4-neighbour outside it.

    Replicate padding makes the image border count as inside, so a mask touching the edge has no
    boundary there. Labels outside 0..C-1 (void) belong to no mask.
    """
    classes = torch.arange(num_classes, device=labels.device)
    mask = (labels[None] == classes[:, None, None]).float()  # (C, H, W)
    p = F.pad(mask[None], (1, 1, 1, 1), mode="replicate")[0]  # (C, H+2, W+2)
    inner = torch.minimum(torch.minimum(p[:, :-2, 1:-1], p[:, 2:, 1:-1]),
                          torch.minimum(p[:, 1:-1, :-2], p[:, 1:-1, 2:]))
    return (mask > 0) & (inner == 0), mask.flatten(1).amax(1) > 0


def _disk(radius_px, device):
    """(2r+1, 2r+1) float kernel of the offsets (dy, dx) with dy^2 + dx^2 <= radius_px^2."""
    r = int(math.floor(radius_px))
    d = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    return (d[:, None] ** 2 + d[None, :] ** 2 <= radius_px ** 2).float()


def _boundary_f1_per_class(pred, target, num_classes, ignore_index, tol):
    """(C,) float64 tensor: BF of each class, NaN for classes in neither map. No host sync."""
    h, w = target.shape
    c = num_classes
    # Void is in no class mask: map it to -1 (no mask), even if ignore_index lies inside 0..C-1.
    target = torch.where(target == ignore_index, -1, target.long())
    pred = torch.where(pred == ignore_index, -1, pred.long())
    gt_b, gt_in = _boundaries(target, c)
    pr_b, pr_in = _boundaries(pred, c)
    disk = _disk(tol * math.hypot(h, w), target.device)  # Sec. 4: tolerance = 0.75% of diagonal
    k = disk.shape[0] // 2
    weight = disk.expand(c, 1, -1, -1)

    def near(b):  # pixels within tolerance of a boundary pixel: dilation by the disk
        return F.conv2d(b.float()[None], weight, padding=k, groups=c)[0] > 0.5

    n_pr, n_gt = pr_b.flatten(1).sum(1).double(), gt_b.flatten(1).sum(1).double()
    precision = (pr_b & near(gt_b)).flatten(1).sum(1) / n_pr
    recall = (gt_b & near(pr_b)).flatten(1).sum(1) / n_gt
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall), nan=0.0)  # P+R=0 -> 0
    # An empty boundary with a non-empty mask means the mask is the whole image (void is outside
    # every mask). Both empty: 1 if the class is in both maps (both are all that class), else 0.
    both_empty = (n_pr == 0) & (n_gt == 0)
    f1 = torch.where(both_empty, (pr_in & gt_in).double(), f1)
    f1 = torch.where((n_pr == 0) ^ (n_gt == 0), 0.0, f1)
    return torch.where(pr_in | gt_in, f1, float("nan"))


def boundary_f1_image(pred, target, num_classes, ignore_index=255, tol=0.0075):
    """BF of one (H, W) label map: (mean over classes in gt or pred, NaN if none; per-class (C,))."""
    if pred.shape != target.shape or target.dim() != 2:
        raise ValueError(f"expected pred and target of the same (H, W) shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    per_class = _boundary_f1_per_class(pred, target, num_classes, ignore_index, tol)
    return per_class.nanmean().item(), per_class


class BoundaryF1:
    """Mean BF over images, and per class over the images where the class is in gt or pred.

    Images with no class in either map (all void) have no score and are not counted.
    """

    def __init__(self, num_classes, ignore_index=255, tol=0.0075, device=None):
        self.num_classes, self.ignore_index, self.tol = num_classes, ignore_index, tol
        self.device = device
        self.reset()

    def reset(self):
        c = self.num_classes
        f64 = dict(dtype=torch.float64, device=self.device)
        self.image_sum, self.image_count = torch.zeros((), **f64), torch.zeros((), **f64)
        self.class_sum, self.class_count = torch.zeros(c, **f64), torch.zeros(c, **f64)

    def _tensors(self):
        return self.image_sum, self.image_count, self.class_sum, self.class_count

    def update(self, pred, target):
        if pred.shape != target.shape or target.dim() not in (2, 3):
            raise ValueError(f"expected pred and target of the same (B, H, W) or (H, W) shape, "
                             f"got {tuple(pred.shape)} and {tuple(target.shape)}")
        if self.image_sum.device != target.device:
            self.image_sum, self.image_count, self.class_sum, self.class_count = (
                t.to(target.device) for t in self._tensors())
        for p, t in zip(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
            per_class = _boundary_f1_per_class(p, t, self.num_classes, self.ignore_index, self.tol)
            seen = ~per_class.isnan()
            self.class_sum += torch.where(seen, per_class, 0.0)
            self.class_count += seen
            score = per_class.nanmean()
            self.image_sum += torch.nan_to_num(score, nan=0.0)
            self.image_count += seen.any()

    def all_reduce(self):
        if _distributed():
            for t in self._tensors():
                dist.all_reduce(t)

    def compute(self):
        image_sum, image_count, class_sum, class_count = (t.cpu() for t in self._tensors())
        return {
            "boundary_f1": (image_sum / image_count).item(),  # 0/0 = NaN before any image
            "per_class_boundary_f1": (class_sum / class_count).tolist(),
        }
