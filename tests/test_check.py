"""The pre-flight data check: the first bad file is named before any iteration runs."""
import pytest
from PIL import Image

from helpers import make_tutorial_camvid
from segnet.data import CamVid
from segnet.data.check import check_dataset


@pytest.fixture
def camvid(tmp_path):
    return make_tutorial_camvid(tmp_path / "CamVid", sizes=(("train", 3),), hw=(16, 24))


def test_a_good_split_passes(camvid):
    assert check_dataset(CamVid(camvid, "train")) == 3


def test_a_truncated_png_is_named(camvid):
    bad = camvid / "train" / "f001.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header still parses; the data and end marker are gone
    with pytest.raises(ValueError) as e:
        check_dataset(CamVid(camvid, "train"))
    assert str(bad) in str(e.value) and "corrupt" in str(e.value)


def test_a_flipped_byte_fails_the_checksum(camvid):
    bad = camvid / "trainannot" / "f002.png"
    data = bytearray(bad.read_bytes())
    data[60] ^= 0xFF  # inside the first data chunk: the CRC no longer matches
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="f002.png is corrupt"):
        check_dataset(CamVid(camvid, "train"))


def test_sizes_must_agree(camvid):
    Image.new("L", (12, 16)).save(camvid / "trainannot" / "f000.png")
    with pytest.raises(ValueError, match=r"f000.png is 24x16 but its label .*f000.png is 12x16"):
        check_dataset(CamVid(camvid, "train"))


def test_a_file_that_is_not_an_image(camvid):
    (camvid / "train" / "f000.png").write_text("not a png")
    with pytest.raises(ValueError, match="f000.png is corrupt or not an image"):
        check_dataset(CamVid(camvid, "train"))


@pytest.mark.realdata
def test_real_camvid_passes(camvid_root):
    assert [check_dataset(CamVid(camvid_root, s)) for s in ("train", "val", "test")] == [367, 101, 233]
