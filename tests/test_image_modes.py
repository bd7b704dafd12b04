"""Images of every mode read as the 8-bit RGB the model was trained on (segnet/data/base.py
`read_image`): each case is one tiny image whose pixels are known, read through a folder data
set (training and evaluation) and through predict mode's reader; and `check` decodes every image,
so a JPEG cut short is found before training."""
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from segnet.data import Folder, UnlabelledImages
from segnet.data.base import read_image
from segnet.data.check import check_dataset

# mode -> (the image to write, the (R, G, B) values its three pixels must read as)
GREY = np.array([[0, 100, 255]], np.uint8)


def cases():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [10, 20, 30]]], np.uint8)
    palette = Image.fromarray(GREY).convert("P")
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    return {
        "RGB": (Image.fromarray(rgb), rgb[0]),
        "L": (Image.fromarray(GREY), np.repeat(GREY[0, :, None], 3, 1)),
        "LA": (Image.fromarray(GREY).convert("LA"), np.repeat(GREY[0, :, None], 3, 1)),
        "RGBA": (Image.fromarray(rgb).convert("RGBA"), rgb[0]),  # alpha dropped, colours kept
        "P": (palette, np.repeat(GREY[0, :, None], 3, 1)),
        "P-transparency": (transparent, np.repeat(GREY[0, :, None], 3, 1)),
        "1": (Image.fromarray(GREY > 128), np.repeat(np.array([0, 0, 255], np.uint8)[:, None], 3, 1)),
        # 16-bit: 0, half and full scale become 0, 128 and 255 (PIL's own conversion clips: all 255)
        "I;16": (Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)),
                 np.repeat(np.array([0, 128, 255], np.uint8)[:, None], 3, 1)),
        # CMYK: PIL's conversion, R = 255 - C (no ink: white; full cyan: no red; full black: black)
        "CMYK": (Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255])),
                 np.array([[255, 255, 255], [0, 255, 255], [0, 0, 0]], np.uint8)),
    }


def suffix(mode):
    return ".tif" if mode == "CMYK" else ".png"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "modes"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["a", "b"]}))
    for name, (im, _) in cases().items():
        stem = name.replace(";", "_")
        im.save(root / "images" / "train" / (stem + suffix(name)))
        Image.fromarray(np.array([[0, 1, 0]], np.uint8)).save(root / "labels" / "train" / (stem + ".png"))
    return root


@pytest.mark.parametrize("mode", list(cases()))
def test_every_mode_reads_as_its_rgb_values(folder, mode):
    _, expected = cases()[mode]
    stem = mode.replace(";", "_")
    ds = Folder(folder, "train")
    i = [pathlib.Path(p[0]).name for p in ds.files].index(stem + suffix(mode))
    image = ds.load_image(i)
    assert image.dtype == np.uint8 and image.shape == (1, 3, 3)
    np.testing.assert_array_equal(image[0], expected)
    # predict mode reads the same file the same way
    photos = UnlabelledImages(folder / "images" / "train" / (stem + suffix(mode)), 1, 3, "raw255")
    x, _, size = photos[0]
    assert tuple(size) == (1, 3)
    np.testing.assert_array_equal(x[:, 0].T.round().numpy().astype(np.uint8), expected)


def test_a_16_bit_photo_is_not_read_white(tmp_path):
    """A 16-bit frame (every value above 255, as a real photo's): PIL's convert("RGB") clips each
    to 255, a blank white frame; it must read as its values scaled to 8 bits."""
    values = np.array([[1000, 20000, 40000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "photo16.png")
    assert Image.open(tmp_path / "photo16.png").mode == "I;16"
    image = read_image(tmp_path / "photo16.png")
    np.testing.assert_array_equal(image[0, :, 0], [4, 78, 156, 255])  # round(v * 255 / 65535)
    assert (image == image[..., :1]).all()  # grey stays grey


def test_check_decodes_every_image_so_a_cut_jpeg_is_found(tmp_path):
    root = tmp_path / "jpeg"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"classes": ["a", "b"]}))
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / "images" / "train" / f"im{i}.jpg", quality=95)
        Image.fromarray((rng.random((64, 64)) > 0.5).astype(np.uint8)).save(root / "labels" / "train" / f"im{i}.png")
    assert check_dataset(Folder(root, "train")) == 2
    bad = root / "images" / "train" / "im1.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # the header and the first scans parse; the rest is gone
    with Image.open(bad) as im:
        im.verify()  # the structure check alone passes it
    with pytest.raises(ValueError) as e:
        check_dataset(Folder(root, "train"))
    assert str(bad) in str(e.value)


def test_void_and_a_black_class_are_drawn_apart():
    """The default palette draws class 0 black: void (255) then takes VOC's void colour; with a
    palette that has no black class (CamVid's own colours), void stays black as label_colors.txt has it."""
    from segnet.data.base import default_palette
    from segnet.visualize import VOID_COLOUR, colorize
    labels = np.array([[0, 1, 255]])
    drawn = colorize(labels, default_palette(3))
    assert tuple(drawn[0, 0]) == (0, 0, 0) and tuple(drawn[0, 2]) == VOID_COLOUR
    drawn = colorize(labels, [(128, 128, 128), (128, 0, 0)])
    assert tuple(drawn[0, 2]) == (0, 0, 0)
