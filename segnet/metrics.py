"""Segmentation metrics of the SegNet paper (TPAMI 2017, Sec. 4): global accuracy, class-average
accuracy, mIoU (from one streaming confusion matrix) and boundary F1 (BF) as the authors computed
it (SegNet-Tutorial Scripts/computeBFmeasure.m: BSDS500 boundaries, one-to-one pixel matching).

    cm, bf = ConfusionMatrix(11, ignore_index=11), BoundaryF1(11, ignore_index=11)
    for image, target in loader:
        pred = model(image).argmax(1)
        cm.update(pred, target); bf.update(pred, target)
    cm.all_reduce(); bf.all_reduce()          # no-ops unless torch.distributed is initialised
    print(cm.compute()["mean_iou"], bf.compute()["boundary_f1"])

The confusion matrix is torch ops on the inputs' device; its `update` never syncs with the host.
BF's `update` queues a non-blocking copy of the label maps to CPU worker threads (numpy, scipy).
"""
import collections
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.distributed as dist

# The paper's four figures (Sec. 4), each once: its key in the metrics that ConfusionMatrix and
# BoundaryF1 compute (per class under "per_class_" + per_class), its short label, and whether it
# needs the boundary pass (BF: too slow for training's validation, so not in metrics.csv). Every
# output (metrics.json, the printed table, results.md, metrics.csv, curves.png) iterates over it.
Metric = collections.namedtuple("Metric", "key label per_class per_class_label boundary")
METRICS = (
    Metric("global_accuracy", "G", None, None, False),
    Metric("class_average_accuracy", "C", "accuracy", "accuracy", False),
    Metric("mean_iou", "mIoU", "iou", "IoU", False),
    Metric("boundary_f1", "BF", "boundary_f1", "BF", True),
)
VALIDATION_METRICS = tuple(m for m in METRICS if not m.boundary)  # what training's validation reports
PER_CLASS_METRICS = tuple(m for m in METRICS if m.per_class)


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


# -- boundary F1 (BF) ---------------------------------------------------------------------------
# Sec. 4 of the paper; computed by SegNet-Tutorial Scripts/computeBFmeasure.m with the BSDS500
# benchmark's seg2bdry(mask, 'imageSize') and correspondPixels(pred, gt, maxDist = 0.0075).
BF_MAX_DIST = 0.0075  # computeBFmeasure.m maxDist: a fraction of the image diagonal


def bf_radius(height, width, max_dist=BF_MAX_DIST):
    """Match radius in pixels: correspondPixels scales maxDist by the image diagonal (4.5 px at
    360x480). A pair matches when dy^2 + dx^2 <= radius^2 (BSDS match.cc skips d2 > maxDist^2)."""
    return max_dist * math.sqrt(height * height + width * width)


def boundary_maps(labels, num_classes, ignore_index=255):
    """(C, H, W) bool numpy array: BSDS seg2bdry(labels == n, 'imageSize') for every class n.

    Pixel (i, j) is on class n's boundary when the 2x2 block whose top-left pixel is (i, j) holds
    n and is not a single value. In the last row only the right neighbour is compared, in the last
    column only the one below, and the bottom-right pixel never is a boundary pixel: padding the
    map by repeating its last row and column gives exactly these rules. Labels outside 0..C-1 and
    `ignore_index` (void) belong to no class.
    """
    lab = np.asarray(labels).astype(np.int64)
    lab = np.where((lab < 0) | (lab >= num_classes) | (lab == ignore_index), -1, lab)
    h, w = lab.shape
    p = np.pad(lab, ((0, 1), (0, 1)), mode="edge")
    block = (p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:])
    ys, xs = np.nonzero((block[0] != block[1]) | (block[0] != block[2]) | (block[0] != block[3]))
    out = np.zeros((num_classes, h, w), dtype=bool)
    for q in block:  # a mixed block is on the boundary of every class in it (mask n is mixed too)
        v = q[ys, xs]
        keep = v >= 0
        out[v[keep], ys[keep], xs[keep]] = True
    return out


def boundary_matches(pred_bdry, gt_bdry, radius):
    """(C,) int64: per class, the size of a maximum one-to-one matching between the predicted and
    the ground-truth boundary pixels, a pair matching when at most `radius` pixels apart.

    correspondPixels solves a min-cost assignment in which an unmatched pixel costs more than any
    match, so its matched count is that of a maximum matching; we compute the maximum directly, as
    a unit-capacity max flow (source -> predicted pixel -> ground-truth pixel -> sink; Dinic's
    algorithm, i.e. Hopcroft-Karp on this graph) over all classes at once, the classes being
    disjoint parts of one graph. Candidate pairs come from one vectorised lookup per pixel of the
    offsets within the radius.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    c, h, w = gt_bdry.shape
    matched = np.zeros(c, dtype=np.int64)
    pc, py, px = np.nonzero(pred_bdry)
    gc, gy, gx = np.nonzero(gt_bdry)
    n_p, n_g = len(pc), len(gc)
    if n_p == 0 or n_g == 0:
        return matched
    k = int(math.ceil(radius))
    hp, wp = h + 2 * k, w + 2 * k  # padded so that no lookup leaves the array
    d = np.arange(-k, k + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    within = (dy * dy + dx * dx) <= radius * radius
    offsets = (dy * wp + dx)[within]  # raster order: each pixel's candidates come out sorted
    gt_id = np.full(c * hp * wp, -1, dtype=np.int32)
    gt_id[(gc * hp + gy + k) * wp + gx + k] = np.arange(n_g, dtype=np.int32)
    cand = gt_id[((pc * hp + py + k) * wp + px + k)[:, None] + offsets[None, :]]  # (n_p, K)
    ok = cand >= 0
    deg = ok.sum(1)
    n_e = int(deg.sum())
    # CSR rows: 0 = source, 1..n_p = predicted pixels, then ground-truth pixels, last = sink.
    sink = n_p + n_g + 1
    indices = np.concatenate([np.arange(1, n_p + 1), n_p + 1 + cand[ok], np.full(n_g, sink)])
    indptr = np.concatenate([[0], n_p + np.concatenate([[0], np.cumsum(deg)]),
                             n_p + n_e + np.arange(1, n_g + 1), [n_p + n_e + n_g]])
    graph = csr_array((np.ones(len(indices), dtype=np.int32), indices.astype(np.int32),
                       indptr.astype(np.int32)), shape=(sink + 1, sink + 1))
    flow = maximum_flow(graph, 0, sink, method="dinic").flow
    cols, vals = flow.indices[flow.indptr[0]:flow.indptr[1]], flow.data[flow.indptr[0]:flow.indptr[1]]
    used = cols[vals > 0] - 1  # predicted pixels that carry flow, i.e. are matched
    return np.bincount(pc[used], minlength=c).astype(np.int64)


def boundary_counts(pred, target, num_classes, ignore_index=255, max_dist=BF_MAX_DIST):
    """(matched, |P|, |G|), each (C,) int64, for one (H, W) pair of label maps (numpy)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or target.ndim != 2:
        raise ValueError(f"expected pred and target of the same (H, W) shape, got "
                         f"{pred.shape} and {target.shape}")
    pb = boundary_maps(pred, num_classes, ignore_index)
    gb = boundary_maps(target, num_classes, ignore_index)
    m = boundary_matches(pb, gb, bf_radius(*target.shape, max_dist))
    return m, pb.reshape(num_classes, -1).sum(1), gb.reshape(num_classes, -1).sum(1)


def paper_f1(matched, n_pred, n_gt):
    """(C,) float64 F1 of computeBFmeasure.m: recall m/|G| (0 if G is empty), precision m/|P|
    (0 if P is empty), F1 = 2PR/(P+R) or 0; NaN where the class does not count for the image,
    i.e. has no boundary pixel in either map (absent, or filling the whole image)."""
    m = np.asarray(matched, dtype=np.float64)
    n_pred, n_gt = np.asarray(n_pred), np.asarray(n_gt)
    p = np.where(n_pred > 0, m / np.maximum(n_pred, 1), 0.0)
    r = np.where(n_gt > 0, m / np.maximum(n_gt, 1), 0.0)
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return np.where((n_pred > 0) | (n_gt > 0), f1, np.nan)


def _paper_per_class(pred, target, num_classes, ignore_index, max_dist):
    return paper_f1(*boundary_counts(pred, target, num_classes, ignore_index, max_dist))


def _image_score(per_class):
    """computeBFmeasure.m: mean F1 over the classes that count, 0 when none does."""
    counted = ~np.isnan(per_class)
    return float(per_class[counted].mean()) if counted.any() else 0.0


def boundary_f1_image(pred, target, num_classes, ignore_index=255, tol=BF_MAX_DIST):
    """BF of one (H, W) label map pair: (image score, 0 when no class counts; per-class F1 as a
    (C,) float64 tensor, NaN for the classes that do not count)."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape or target.dim() != 2:
        raise ValueError(f"expected pred and target of the same (H, W) shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    per_class = _paper_per_class(pred.cpu().numpy(), target.cpu().numpy(), num_classes, ignore_index, tol)
    return _image_score(per_class), torch.from_numpy(per_class)


class BoundaryF1:
    """Streaming BF over a split, the paper's BF as computeBFmeasure.m computes it: per image, the
    mean F1 over the classes with a boundary pixel in the ground truth or the prediction (0 when
    none has one); BF = mean over ALL images; per-class BF = mean over the images where the class
    counts. `update` only queues a copy of the label maps: the matching runs in `workers` CPU
    threads while the caller goes on (the accelerator runs the next batch); `compute` waits for it.
    workers=0 scores inside `update`.
    """

    def __init__(self, num_classes, ignore_index=255, tol=BF_MAX_DIST, device=None, workers=2):
        if num_classes >= 2 ** 15:
            raise ValueError(f"num_classes={num_classes}: at most {2 ** 15 - 1}")
        self.num_classes, self.ignore_index, self.tol = num_classes, ignore_index, tol
        self.device, self.workers = device, workers
        self._pool, self._pending = None, collections.deque()
        self.reset()

    def reset(self):
        self._drain(keep=False)
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
        pred, target = pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])
        # Void (and anything outside 0..C-1) -> -1, as int16 to make the copy small.
        pred, target = (torch.where((x >= 0) & (x < self.num_classes) & (x != self.ignore_index), x, -1)
                        .to(torch.int16) for x in (pred, target))
        event = None
        if pred.device.type == "cuda":  # copy without waiting; the worker waits for the event
            pred, target = pred.to("cpu", non_blocking=True), target.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            pred, target = pred.cpu(), target.cpu()  # the int16 maps above are already copies
        if self.workers <= 0:
            self._add_rows(self._score(pred, target, event))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="boundary_f1")
        while len(self._pending) >= 16 * self.workers:  # bound the memory held by queued maps
            self._add_rows(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self._score, pred, target, event))

    def _score(self, pred, target, event):
        if event is not None:
            event.synchronize()
        return [_paper_per_class(p, t, self.num_classes, -1, self.tol)
                for p, t in zip(pred.numpy(), target.numpy())]

    def _add_rows(self, rows):
        for per_class in rows:
            per_class = torch.from_numpy(per_class).to(self.image_sum.device)
            seen = ~per_class.isnan()
            self.class_sum += torch.where(seen, per_class, 0.0)
            self.class_count += seen
            self.image_sum += torch.nan_to_num(per_class.nanmean(), nan=0.0)  # no class: 0
            self.image_count += 1

    def _drain(self, keep=True):
        """Wait for the queued images; add their scores unless `keep` is false."""
        while self._pending:
            rows = self._pending.popleft().result()
            if keep:
                self._add_rows(rows)

    def all_reduce(self):
        self._drain()
        if _distributed():
            for t in self._tensors():
                dist.all_reduce(t)

    def compute(self):
        self._drain()
        image_sum, image_count, class_sum, class_count = (t.cpu() for t in self._tensors())
        return {
            "boundary_f1": (image_sum / image_count).item(),  # 0/0 = NaN before any image
            "per_class_boundary_f1": (class_sum / class_count).tolist(),
            "num_images": int(image_count.item()),
        }

    def close(self):
        """Stop the worker threads (they also stop at interpreter exit)."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
