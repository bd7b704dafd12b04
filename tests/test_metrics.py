"""Metrics against hand-computed values: confusion matrix (global / class-average accuracy, IoU) and
boundary F1. Run: .venv/bin/python -m pytest tests/test_metrics.py -q
"""
import math

import pytest
import torch

from segnet.metrics import BoundaryF1, ConfusionMatrix, _boundaries, _disk, boundary_f1_image

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


def square(h, w, top, left, size_y, size_x, cls=1, background=0):
    m = torch.full((h, w), background)
    m[top:top + size_y, left:left + size_x] = cls
    return m


def test_disk_at_paper_resolution():
    # 360x480: diagonal 600, tol 0.0075 * 600 = 4.5 px. Offsets with dy^2 + dx^2 <= 20.25, per row
    # dy = 0, ±1, ±2: |dx| <= 4 (9 each); dy = ±3: |dx| <= 3 (7); dy = ±4: |dx| <= 2 (5)
    # -> 9 + 2*9 + 2*9 + 2*7 + 2*5 = 69 offsets in a 9x9 kernel.
    disk = _disk(0.0075 * math.hypot(360, 480), "cpu")
    assert disk.shape == (9, 9) and disk.sum() == 69
    assert disk[0, 2] == 1 and disk[0, 1] == 0  # (dy, dx) = (-4, -2): 20 in; (-4, -3): 25 out


def test_image_border_is_not_a_boundary():
    m = torch.zeros(8, 8, dtype=torch.long)
    m[:, :4] = 1  # class 1 fills the left half
    b, present = _boundaries(m, 2)
    expect1 = torch.zeros(8, 8, dtype=torch.bool)
    expect1[:, 3] = True  # only the vertical middle line, not the image's top/bottom/left edges
    expect0 = torch.zeros(8, 8, dtype=torch.bool)
    expect0[:, 4] = True
    assert torch.equal(b[1], expect1) and torch.equal(b[0], expect0)
    assert present.tolist() == [True, True]


def test_bf_identical_and_far_away():
    gt = square(64, 64, 10, 10, 10, 10)
    score, per_class = boundary_f1_image(gt, gt, 3)
    assert score == 1.0 and per_class[:2].tolist() == [1.0, 1.0] and per_class[2].isnan()
    # The square moved to (40, 40): no boundary pixel of either class (square or the ring of
    # background around it) is where the truth has one.
    score, per_class = boundary_f1_image(square(64, 64, 40, 40, 10, 10), gt, 2)
    assert score == 0.0 and per_class.tolist() == [0.0, 0.0]


def test_bf_shift_within_tolerance_is_perfect():
    # 200x200: tol = 0.0075 * 282.84 = 2.12 px, so a shift of 2 px keeps every boundary pixel in reach.
    gt = square(200, 200, 50, 50, 40, 40)
    for dy, dx in ((0, 2), (2, 0), (1, 1)):
        assert boundary_f1_image(square(200, 200, 50 + dy, 50 + dx, 40, 40), gt, 2)[0] == 1.0
    # (2, 1) is sqrt(5) = 2.24 px away: the shifted edges no longer match
    assert boundary_f1_image(square(200, 200, 52, 51, 40, 40), gt, 2)[0] < 1.0


def test_bf_at_paper_resolution():
    # 360x480: tol 4.5 px. A shift of (0, 4) or (3, 3) (4.24 px) is within it; (0, 5) is not.
    gt = square(360, 480, 100, 100, 100, 100)
    assert boundary_f1_image(square(360, 480, 100, 104, 100, 100), gt, 2)[0] == 1.0
    assert boundary_f1_image(square(360, 480, 103, 103, 100, 100), gt, 2)[0] == 1.0
    assert boundary_f1_image(square(360, 480, 100, 105, 100, 100), gt, 2)[0] < 1.0


def test_bf_shift_beyond_tolerance_hand_counted():
    # 64x64: diagonal 90.51, tol 0.0075 * 90.51 = 0.68 px < 1, so only exact positions match.
    # gt square rows 20..29, cols 20..29; pred square shifted 2 px right: cols 22..31.
    gt = square(64, 64, 20, 20, 10, 10)
    pred = square(64, 64, 20, 22, 10, 10)
    # Square class: a 10x10 boundary ring has 10 + 10 + 8 + 8 = 36 pixels in each map. Shared: top
    # and bottom rows at cols 22..29 = 8 + 8 = 16 (gt's right column 29 is inside pred, pred's left
    # column 22 is inside gt). P = R = 16/36 -> F1 = 4/9.
    # Background: the ring just outside the square, 4 * 10 = 40 pixels each. Shared: rows 19 and 30
    # at cols 22..29 = 16 (gt's col 30 is inside pred, pred's col 21 inside gt). F1 = 16/40 = 0.4.
    score, per_class = boundary_f1_image(pred, gt, 2)
    assert per_class.tolist() == pytest.approx([0.4, 4 / 9])
    assert score == pytest.approx((0.4 + 4 / 9) / 2)


def test_bf_precision_differs_from_recall_hand_counted():
    # gt 10x10 square rows 20..29, cols 20..29; pred 10x14 rectangle rows 20..29, cols 20..33.
    gt = square(64, 64, 20, 20, 10, 10)
    pred = square(64, 64, 20, 20, 10, 14)
    # Square class: gt ring 36, pred ring 14 + 14 + 8 + 8 = 44. Shared: top/bottom rows cols 20..29
    # (10 + 10) and left column rows 21..28 (8) = 28. P = 28/44 = 7/11, R = 28/36 = 7/9,
    # F1 = 2PR/(P+R) = (98/99) / (140/99) = 0.7.
    p, r = 7 / 11, 7 / 9
    # Background: gt ring 40, pred ring 14 + 14 + 10 + 10 = 48. Shared: rows 19 and 30 at cols
    # 20..29 (20) and col 19 rows 20..29 (10) = 30. P = 30/48, R = 30/40, F1 = 60/88 = 15/22.
    pb, rb = 30 / 48, 30 / 40
    _, per_class = boundary_f1_image(pred, gt, 2)
    assert per_class.tolist() == pytest.approx([2 * pb * rb / (pb + rb), 2 * p * r / (p + r)])
    assert per_class.tolist() == pytest.approx([15 / 22, 0.7])


def test_bf_whole_image_classes():
    full0, full1 = torch.zeros(8, 8, dtype=torch.long), torch.ones(8, 8, dtype=torch.long)
    # Neither map has a boundary anywhere. Same class everywhere: nothing to get wrong -> 1.
    assert boundary_f1_image(full0, full0, 2)[0] == 1.0
    # Class 0 only in gt, class 1 only in pred: both are present in one map only -> 0 each.
    score, per_class = boundary_f1_image(full1, full0, 2)
    assert score == 0.0 and per_class.tolist() == [0.0, 0.0]


def test_bf_void_belongs_to_no_class():
    gt = torch.full((8, 8), V)
    gt[:, :4] = 1  # class 1 on the left, void on the right
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[:, :4] = 1  # class 1 on the left, class 0 on the right
    # Class 1: both boundaries are column 3 (void is outside the mask) -> 1. Class 0 is only in
    # pred: its boundary is column 4, the gt's is empty -> 0. Image score (1 + 0) / 2.
    score, per_class = boundary_f1_image(pred, gt, 2, ignore_index=V)
    assert per_class.tolist() == [0.0, 1.0] and score == 0.5
    # All void in both maps: no class anywhere, no score.
    score, per_class = boundary_f1_image(torch.full((8, 8), V), torch.full((8, 8), V), 2)
    assert math.isnan(score) and per_class.isnan().all()


def test_boundary_f1_accumulator_means_over_images():
    gt = square(64, 64, 20, 20, 10, 10)
    shifted = square(64, 64, 20, 22, 10, 10)  # per class [0.4, 4/9], see the hand count above
    bf = BoundaryF1(3)
    bf.update(torch.stack([gt, shifted]), torch.stack([gt, gt]))  # a batch: scores 1 and 0.4222
    bf.update(torch.full((64, 64), V), torch.full((64, 64), V))  # all void: not counted
    m = bf.compute()
    assert m["boundary_f1"] == pytest.approx((1 + (0.4 + 4 / 9) / 2) / 2)
    pc = m["per_class_boundary_f1"]
    assert pc[:2] == pytest.approx([(1 + 0.4) / 2, (1 + 4 / 9) / 2])
    assert math.isnan(pc[2])  # class 2 never appears
    bf.all_reduce()  # no process group: a no-op
    assert bf.compute()["boundary_f1"] == m["boundary_f1"]
    bf.reset()
    assert math.isnan(bf.compute()["boundary_f1"])


def test_confusion_matrix_empty_update_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long))
    assert cm.mat.sum() == 0
