"""Multi-digit MNIST: the reference's .mat batches, the composer on hand-made idx files, the errors."""
import gzip
import pickle
import sys

import numpy as np
import pytest
import torch

from segnet.data import mnist
from segnet.data.mnist import MultiDigitMNIST
from segnet.errors import INPUT_ERRORS

scipy_io = pytest.importorskip("scipy.io")


# --- fixtures made by hand ------------------------------------------------------------------------
def write_idx(path, array):
    """LeCun's idx format: 0x00 0x00 0x08 (uint8) ndim, big-endian uint32 dims, then the bytes."""
    array = np.asarray(array, np.uint8)
    raw = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(raw)


def square_digits(n, side=28, label_offset=0):
    """Digit j: a solid 10x10 square of ink 255 ringed by a 2-pixel halo of ink 100 (below 0.5).

    Returns images (n, side, side) uint8 and labels (n,) = (j + label_offset) % 10."""
    images = np.zeros((n, side, side), np.uint8)
    images[:, 7:21, 7:21] = 100
    images[:, 9:19, 9:19] = 255
    return images, (np.arange(n) + label_offset) % 10


def write_mnist_set(folder, prefix, images, labels, gz=True):
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)


@pytest.fixture
def t10k_only(tmp_path):
    write_mnist_set(tmp_path, "t10k", *square_digits(50))
    return tmp_path


# --- source 1: the reference's .mat batches -------------------------------------------------------
def random_batch(rng, b, h=64, w=64):
    # values a uint8 image holds (k / 255), as float32: exactly representable after reading
    images = (rng.integers(0, 256, size=(h, w, 3, b)) / 255.0).astype(np.float32)
    masks = rng.integers(0, 11, size=(h, w, b)).astype(np.float64)  # MATLAB keeps masks as doubles
    return images, masks


def test_mat_batches_read_in_name_order_then_batch_order(tmp_path):
    rng = np.random.default_rng(0)
    batches = {"batch00002.mat": random_batch(rng, 3), "batch00001.mat": random_batch(rng, 2),
               "batch00010.mat": random_batch(rng, 1), "testset001.mat": random_batch(rng, 4)}
    for name, (images, masks) in batches.items():  # written out of order on purpose
        if images.shape[3] == 1:  # MATLAB drops a trailing singleton dimension: H x W x 3, H x W
            images, masks = images[..., 0], masks[..., 0]
        scipy_io.savemat(tmp_path / name, {"imgMat": images, "semanticMaskMat": masks, "other": 1.0})
    (tmp_path / "notes.mat").write_bytes(b"not a batch")  # ignored: neither batchN nor testsetN

    train = MultiDigitMNIST(tmp_path, "train")
    assert train.source == "mat" and len(train) == 6
    assert [p.split("/")[-1] for p, _ in train.files] == ["batch00001.mat", "batch00002.mat", "batch00010.mat"]
    expected = [(n, b) for n, _ in train.files for b in range(batches[n.split("/")[-1]][0].shape[3])]
    for i in [5, 0, 3, 1, 4, 2]:  # random access crosses files and back
        name, b = expected[i]
        images, masks = batches[name.split("/")[-1]]
        image, mask = train[i]
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        assert mask.dtype == torch.int64 and mask.shape == (64, 64)
        assert torch.equal(image, torch.from_numpy(images[..., b].transpose(2, 0, 1).copy()))
        assert torch.equal(mask, torch.from_numpy(masks[..., b].astype(np.int64)))

    test = MultiDigitMNIST(tmp_path, "test", size=3)
    assert len(test) == 3 and test.files[0][0].endswith("testset001.mat")
    assert torch.equal(test[2][1], torch.from_numpy(batches["testset001.mat"][1][..., 2].astype(np.int64)))

    clone = pickle.loads(pickle.dumps(train))  # what a DataLoader worker gets: no open-file cache
    assert clone._cached[0] is None and torch.equal(clone[4][0], train[4][0])


def test_mat_errors(tmp_path, monkeypatch):
    images, masks = random_batch(np.random.default_rng(0), 2, 8, 8)
    scipy_io.savemat(tmp_path / "batch00001.mat", {"imgMat": images, "mask": masks})
    with pytest.raises(INPUT_ERRORS, match=r"batch00001\.mat has no variable 'semanticMaskMat'"):
        MultiDigitMNIST(tmp_path, "train")
    with pytest.raises(INPUT_ERRORS, match=r"no test batches in .*testsetNNN\.mat"):
        MultiDigitMNIST(tmp_path, "test")

    scipy_io.savemat(tmp_path / "batch00001.mat", {"imgMat": images, "semanticMaskMat": masks[:, :, :1]})
    with pytest.raises(INPUT_ERRORS, match=r"batch00001\.mat: expected imgMat H x W x 3 x B"):
        MultiDigitMNIST(tmp_path, "train")

    scipy_io.savemat(tmp_path / "batch00001.mat", {"imgMat": images, "semanticMaskMat": masks + 11})
    with pytest.raises(INPUT_ERRORS, match=r"batch00001\.mat: semanticMaskMat must hold whole numbers 0-10"):
        MultiDigitMNIST(tmp_path, "train")[0]

    (tmp_path / "batch00001.mat").write_bytes(b"\x00" * 10)
    with pytest.raises(INPUT_ERRORS, match=r"cannot read .*batch00001\.mat as a MATLAB"):
        MultiDigitMNIST(tmp_path, "train")

    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(INPUT_ERRORS, match=r"batch00001\.mat needs scipy.*pip install scipy"):
        MultiDigitMNIST(tmp_path, "train")


# --- source 2: composed from MNIST idx files ------------------------------------------------------
def test_single_digit_mask_is_class_plus_one_where_ink_above_threshold(t10k_only):
    ds = MultiDigitMNIST(t10k_only, "train", digits_per_image=(1, 1), size=40)
    _, labels = square_digits(50)
    for i in range(len(ds)):
        image, mask = ds[i]
        (d,) = ds.digit_indices(i)
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # grayscale x 3
        assert image.unique().tolist() == pytest.approx([0.0, 100 / 255, 1.0])
        assert (image[0] > 0).sum() == 14 * 14  # the whole digit, halo included, is on the canvas
        assert torch.equal(mask, torch.where(image[0] > 0.5, labels[d] + 1, 0))
        assert (mask > 0).sum() == 100  # the halo (ink 0.39) stays background


def test_later_digits_overwrite_earlier_ones(tmp_path):
    # 64x64 digits can only land at (0, 0), so every overlap is known: digit j inks columns 4j..4j+11.
    n = 12
    images = np.zeros((n, 64, 64), np.uint8)
    for j in range(n):
        images[j, :, 4 * j:4 * j + 12] = 200 + j  # distinct inks, all above threshold
    labels = np.arange(n) % 10
    write_mnist_set(tmp_path, "t10k", images, labels, gz=False)
    ds = MultiDigitMNIST(tmp_path, "train", digits_per_image=(3, 3), size=20)
    overlapped = 0
    for i in range(len(ds)):
        image, mask = ds[i]
        which = ds.digit_indices(i)
        assert len(which) == 3 and len(set(which.tolist())) == 3  # no digit twice in one image
        want_mask = torch.zeros(64, 64, dtype=torch.int64)
        for d in which:  # paste order
            want_mask[:, 4 * d:4 * d + 12] = int(labels[d]) + 1
        want_image = torch.from_numpy(images[which].max(axis=0) / 255.0).float()
        assert torch.equal(mask, want_mask)
        assert torch.allclose(image[0], want_image)
        overlapped += any(abs(int(a) - int(b)) < 3 for a in which for b in which if a != b)
    assert overlapped > 0  # the check above did meet overlaps


def test_composition_is_deterministic_per_seed(t10k_only):
    a, b = MultiDigitMNIST(t10k_only, seed=0), MultiDigitMNIST(t10k_only, seed=0)
    other = MultiDigitMNIST(t10k_only, seed=1)
    assert len(a) == 10_000 and len(MultiDigitMNIST(t10k_only, "test")) == 2_000  # defaults
    for i in [0, 7, 9_999]:
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
        assert np.array_equal(a.digit_indices(i), b.digit_indices(i))
    assert any(not torch.equal(a[i][0], other[i][0]) for i in range(5))
    assert any(not torch.equal(a[i][0], a[i + 1][0]) for i in range(5))
    counts = [len(a.digit_indices(i)) for i in range(300)]
    assert set(counts) == {1, 2, 3}  # "several digits": 1 to 3 per image


def test_t10k_only_is_split_into_disjoint_pools(t10k_only):
    train = MultiDigitMNIST(t10k_only, "train", size=500)
    test = MultiDigitMNIST(t10k_only, "test", size=500)
    assert train.pool == (0, 40) and test.pool == (40, 50)  # first 80% train, last 20% test
    used_train = set(np.concatenate([train.digit_indices(i) for i in range(len(train))]).tolist())
    used_test = set(np.concatenate([test.digit_indices(i) for i in range(len(test))]).tolist())
    assert used_train == set(range(40)) and used_test == set(range(40, 50))


def test_full_mnist_uses_its_train_and_test_sets_and_finds_mnist_raw(tmp_path):
    raw = tmp_path / "MNIST" / "raw"  # torchvision's layout; uncompressed, as it extracts them
    raw.mkdir(parents=True)
    write_mnist_set(raw, "train", *square_digits(30), gz=False)
    write_mnist_set(raw, "t10k", *square_digits(20), gz=False)
    train, test = MultiDigitMNIST(tmp_path, "train", size=5), MultiDigitMNIST(tmp_path, "test", size=5)
    assert train.files[0][0].endswith("MNIST/raw/train-images-idx3-ubyte") and train.pool == (0, 30)
    assert test.files[0][0].endswith("MNIST/raw/t10k-images-idx3-ubyte") and test.pool == (0, 20)


def test_transforms_get_image_and_mask(t10k_only):
    # the transforms get the uint8 image, as every data set gives it
    ds = MultiDigitMNIST(t10k_only, size=3,
                         transforms=lambda image, mask: (image.float() / 255 * 2, mask + 100))
    plain = MultiDigitMNIST(t10k_only, size=3)
    assert torch.equal(ds[1][0], plain[1][0] * 2) and torch.equal(ds[1][1], plain[1][1] + 100)
    with pytest.raises(IndexError):
        plain[3]

    from torchvision.transforms import v2
    flipped = MultiDigitMNIST(t10k_only, size=3, transforms=v2.RandomHorizontalFlip(p=1.0))
    image, mask = flipped[2]
    assert type(image) is torch.Tensor and mask.dtype == torch.int64
    assert torch.equal(image.float() / 255, plain[2][0].flip(-1)) and torch.equal(mask, plain[2][1].flip(-1))  # mask moves too


def test_download_offline_says_how_to_fetch_by_hand(tmp_path, monkeypatch):
    import torchvision

    def offline(root, train, download):
        raise RuntimeError("Error downloading t10k-images-idx3-ubyte.gz:\nTried ...")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(INPUT_ERRORS, match=r"could not download MNIST into .*MNIST/raw .*ossci-datasets"):
        mnist.ENTRY.ensure(tmp_path, True)  # fetching is the registry entry's ensure; reading never fetches

    def fake_download(root, train, download):
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True)
        write_mnist_set(raw, "t10k", *square_digits(10))

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    mnist.ENTRY.ensure(tmp_path, True)
    assert len(MultiDigitMNIST(tmp_path, size=4)) == 4


def test_errors_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(INPUT_ERRORS, match=r"no multi-digit MNIST data in .*nowhere.*batchNNNNN\.mat.*t10k-images-idx3"):
        MultiDigitMNIST(tmp_path / "nowhere")
    with pytest.raises(INPUT_ERRORS, match=r"split must be 'train' or 'test'.*'val'"):
        MultiDigitMNIST(tmp_path, "val")

    images, labels = square_digits(10)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    with pytest.raises(INPUT_ERRORS, match=r"holds t10k-images-idx3-ubyte.gz but not t10k-labels-idx1-ubyte"):
        MultiDigitMNIST(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:9])
    with pytest.raises(INPUT_ERRORS, match=r"holds 10 digits but .*t10k-labels-idx1-ubyte.gz holds 9 labels"):
        MultiDigitMNIST(tmp_path)

    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gzip.open(gz, "wb").write(b"\x00\x00\x0d\x01" + b"\x00" * 12)  # type 0x0d = float, not MNIST
    with pytest.raises(INPUT_ERRORS, match=r"t10k-labels-idx1-ubyte.gz is not an MNIST idx file"):
        MultiDigitMNIST(tmp_path)
    gzip.open(gz, "wb").write(b"\x00\x00\x08\x01\x00\x00\x00\x0a" + b"\x00" * 9)  # says 10, holds 9
    with pytest.raises(INPUT_ERRORS, match=r"t10k-labels-idx1-ubyte.gz is truncated or corrupt"):
        MultiDigitMNIST(tmp_path)
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x0a" + b"\x00" * 10)[:-6])  # cut gzip stream
    with pytest.raises(INPUT_ERRORS, match=r"cannot read .*t10k-labels-idx1-ubyte.gz"):
        MultiDigitMNIST(tmp_path)


# --- the real MNIST test set ----------------------------------------------------------------------
@pytest.mark.realdata
def test_real_t10k_composes_both_splits(mnist_root):
    train, test = MultiDigitMNIST(mnist_root, "train"), MultiDigitMNIST(mnist_root, "test")
    assert (len(train), len(test)) == (10_000, 2_000)
    assert train.pool == (0, 8_000) and test.pool == (8_000, 10_000)
    assert train.num_classes == 11 and train.class_names[:2] == ["background", "0"]
    seen = set()
    for ds in (train, test):
        for i in range(0, len(ds), len(ds) // 25):
            image, mask = ds[i]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert mask.shape == (64, 64) and mask.dtype == torch.int64
            assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.9
            assert 0 <= mask.min() and mask.max() <= 10
            assert torch.all(image[0][mask > 0] > 0.5)  # every digit pixel is inked
            labels = set((train._labels[ds.digit_indices(i)] + 1).tolist())
            assert set(mask.unique().tolist()) - {0} <= labels  # only the pasted digits' classes
            seen |= set(mask.unique().tolist())
    assert seen == set(range(11))  # all ten digits and background show up
