"""The web demo (segnet/demo.py): the real command, started on a free port of 127.0.0.1, called
through Gradio's own client (gradio_client) and, marked `browser`, by a headless Chromium driven
over the Chrome DevTools Protocol. Its segmentation must be predict mode's, pixel for pixel
(Evaluate_SegNet.py --images on the same files); a bad or too large file gets its one message;
two requests at once both succeed; Ctrl-C stops it with one line. Every wait is bounded.

SEGNET_DEMO_SCREENSHOT=docs/demo.png python -m pytest tests/test_demo.py -m browser  # the README's picture
"""
import base64
import fcntl
import json
import os
import pathlib
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import Evaluate_SegNet
from conftest import REPO, SHARED_DATA
from segnet import demo
from segnet.build import build_dataset, build_model
from segnet.data.base import read_image
from segnet.errors import run_cli
from segnet.weights import save_weights, weights_from_checkpoint
from test_mnist import square_digits, write_mnist_set

SHIPPED = REPO / "weights" / "segnet_basic_camvid.pt"
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium")
                 if p and os.path.isfile(p)), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-pipe", "--window-size=1280,1000", "--hide-scrollbars"]
START_S, REQUEST_S = 90, 60  # the longest waits: the server's start, one request


def test_without_gradio_one_line_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    with pytest.raises(SystemExit) as e:
        run_cli(demo.main, [str(SHIPPED)])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: the web demo needs Gradio: pip install gradio\n"


def test_a_busy_port_is_one_line_before_anything_loads(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            run_cli(demo.main, [f"--port={port}"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (f"error: --port={port} cannot be served on --host=127.0.0.1 (Address already "
                                       f"in use): another program has it; pick another with --port=N\n")


@pytest.mark.parametrize("arg, message", [
    ("--port=99999", "--port=99999: expected a port from 1 to 65535"),
    ("--host=192.0.2.1", "--host=192.0.2.1 is not an address of this machine (Cannot assign requested address): "
                         "expected 127.0.0.1, 0.0.0.0 or one of its own addresses"),
])
def test_a_port_out_of_range_or_a_host_not_ours_is_one_line(arg, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(demo.main, [arg])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_an_ipv6_host_reaches_gradio_in_brackets():
    demo.check_port("::1", free_port())  # binds without them
    demo.check_port("[::1]", free_port())
    assert [demo.url_host(h) for h in ("::1", "[::1]", "127.0.0.1", "localhost")] == \
        ["[::1]", "[::1]", "127.0.0.1", "localhost"]  # Gradio builds its address as http://HOST:PORT/


def test_predict_mode_and_the_demo_turn_a_photo_as_its_exif_orientation_says(tmp_path, capsys):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    Image.fromarray(a).save(tmp_path / "phone.png", exif=exif)
    assert np.array_equal(read_image(tmp_path / "phone.png", upright=True), np.rot90(a, -1))
    assert np.array_equal(read_image(tmp_path / "phone.png"), a)  # training pairs: the pixels as stored
    assert Evaluate_SegNet.main([str(SHIPPED), f"--images={tmp_path / 'phone.png'}", f"--out_dir={tmp_path / 'p'}",
                                 "--num_workers=0"]) == 0
    with Image.open(tmp_path / "p" / "predictions" / "phone.png") as im:
        assert im.size == (2, 3)  # width x height of the photo as shown, not as stored (3 x 2)
    image, pred, _, _ = demo.Segmenter(SHIPPED, "cpu")(tmp_path / "phone.png", "phone.png")
    assert np.array_equal(image, np.rot90(a, -1)) and pred.shape == (3, 2)


def bayesian_folder_weights(path, names, palette, height=32, width=48):
    """A small Bayesian SegNet-lite's weights file for a `folder` data set, at `path`."""
    config = {**torch.load(SHIPPED, weights_only=True)["config"], "dataset": "folder", "num_classes": len(names),
              "model": "segnet_lite", "bayesian": True, "height": height, "width": width,
              "data_root": str(path.parent / "gone")}
    ckpt = {"model": build_model(config, init=False).state_dict(), "config": config, "class_names": names,
            "palette": palette}
    save_weights(weights_from_checkpoint(ckpt), path)
    return path


def test_a_bayesian_folder_checkpoint_brings_its_names_palette_and_uncertainty(tmp_path):
    names, palette = ["ground", "<b>sky</b>", "thing"], [(10, 20, 30), (40, 50, 60), (70, 80, 90)]
    seg = demo.Segmenter(bayesian_folder_weights(tmp_path / "w.pt", names, palette), "cpu")
    assert (seg.class_names, seg.palette, seg.bayesian) == (names, palette, True)
    examples = demo.example_images(seg.config, tmp_path)  # no data there: frames drawn at the input size
    assert [pathlib.Path(e).name for e in examples] == [f"generated_{i}.png" for i in range(4)]
    assert Image.open(examples[0]).size == (48, 32)
    Image.new("RGB", (50, 20), (200, 10, 10)).save(tmp_path / "small.png")
    image, pred, unc, _ = seg(tmp_path / "small.png", "small.png", mc_samples=3)
    assert image.shape == (20, 50, 3) and pred.shape == unc.shape == (20, 50)
    legend = demo.legend_html(pred, names, palette)
    present = np.unique(pred)
    assert legend.count('class="segnet-class"') == len(present)
    assert "&lt;b&gt;sky&lt;/b&gt;" in legend or 1 not in present  # a name is text, never markup
    assert f"rgb{palette[int(present[0])]}".replace(" ", "") in legend


def test_the_examples_of_a_data_set_without_image_files_are_its_images_written_out(tmp_path):
    write_mnist_set(tmp_path, "t10k", *square_digits(50))
    config = {**torch.load(SHIPPED, weights_only=True)["config"], "dataset": "multidigit_mnist", "height": 64,
              "width": 64, "data_root": str(tmp_path)}
    (tmp_path / "out").mkdir()
    examples = demo.example_images(config, tmp_path / "out")
    assert [pathlib.Path(e).name for e in examples] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    data = build_dataset({**config, "download": False}, "test", train=False)
    assert np.array_equal(read_image(examples[1]), data.load_image(1))


def test_frames_drawn_for_a_small_model_have_its_input_size(tmp_path):
    assert Image.open(demo.drawn_frame(tmp_path / "f.png", 24, 32, 0)).size == (32, 24)


def test_monte_carlo_samples_outside_the_sliders_range_get_a_message(tmp_path):
    gr = pytest.importorskip("gradio")
    seg = demo.Segmenter(bayesian_folder_weights(tmp_path / "w.pt", ["a", "b"], [(0, 0, 0), (9, 9, 9)]), "cpu")
    Image.new("RGB", (50, 20)).save(tmp_path / "x.png")
    upload = {"path": str(tmp_path / "x.png"), "orig_name": "x.png"}
    for samples in (0, 1, 33, 100000, 2.5, -3):  # the API takes any number; a million would hold the queue
        with pytest.raises(gr.Error) as e:
            demo.Page(seg).segment(upload, 1.0, True, samples)
        assert e.value.message == f"samples={samples}: expected a whole number from 2 to 32"
    assert demo.Page(seg).segment(upload, 1.0, True, 2.0)[4].endswith(
        "Monte Carlo dropout: 2 samples; 50x20 image, model input 48x32")


@pytest.mark.realdata
def test_the_examples_are_the_checkpoints_test_frames(camvid_root, tmp_path):
    config = {**torch.load(SHIPPED, weights_only=True)["config"], "data_root": str(camvid_root)}
    expected = sorted((camvid_root / "test").glob("*.png"))[:4]
    assert [pathlib.Path(e) for e in demo.example_images(config, tmp_path)] == expected
    assert not list(tmp_path.iterdir())  # nothing drawn


def test_blend_ends_are_the_image_and_the_colours():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    colours = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(demo.blend(image, colours, 1.0), colours)
    assert np.array_equal(demo.blend(image, colours, 0.0), image)
    half = (image.astype(int) * 127 + colours.astype(int) * 128 + 127) // 255
    assert np.array_equal(demo.blend(image, colours, 0.5), half)


# the running server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A CamVid test frame (the real one where SEGNET_SHARED_DATA has CamVid, else one drawn) and a
    small 16-bit grayscale image of another size, with predict mode's colour/ pictures of both."""
    folder = tmp_path_factory.mktemp("images")
    real = sorted((SHARED_DATA / "CamVid" / "test").glob("*.png"))
    frame = folder / "frame.png"
    if real:
        shutil.copy(real[0], frame)
    else:
        demo.drawn_frame(frame, 360, 480, seed=7)
    ramp = (np.arange(37 * 53, dtype=np.uint32).reshape(37, 53) * 33).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16.png")
    out = tmp_path_factory.mktemp("predict")
    assert Evaluate_SegNet.main([str(SHIPPED), f"--images={folder}", f"--out_dir={out}", "--num_workers=0",
                                 "--device=cpu", "--collages=0"]) == 0
    return {name: (folder / name, np.asarray(Image.open(out / "colour" / name)))
            for name in ("frame.png", "grey16.png")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """`python -m segnet.demo` on a free port; (address, process, its stdout lines, its stderr file).
    Predict mode's pictures (`images`) are made while it starts."""
    tmp = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segnet.demo", f"--port={free_port()}", "--device=cpu"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=(tmp / "stderr").open("w"), text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    request.getfixturevalue("images")
    try:
        first = lines.get(timeout=START_S)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"the demo printed no address in {START_S} s: {(tmp / 'stderr').read_text()[-2000:]}")
    assert first.startswith("SegNet demo: http://127.0.0.1:"), first
    url = first.split()[2]
    yield url, proc, lines, tmp / "stderr"
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def client(server, tmp_path):
    gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client (requirements-dev.txt)")
    return gradio_client.Client(server[0], verbose=False, download_files=str(tmp_path), analytics_enabled=False)


def segment(client, path):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), 1.0, False, 8, api_name="/segment")


def test_the_page_segments_as_predict_mode_does(client, images):
    path, expected = images["grey16.png"]  # the CamVid frame: the two tests below
    shown, seg, uncertainty, legend, info = segment(client, path)
    assert np.array_equal(np.asarray(Image.open(seg)), expected)
    assert np.array_equal(np.asarray(Image.open(shown)), read_image(path))  # 16-bit scaled to 8, as predict reads it
    assert uncertainty is None and info.endswith(" ms** on cpu, float32 (no autocast); 53x37 image, model input 480x360")
    assert legend.count('class="segnet-class"') == len(np.unique(expected.reshape(-1, 3), axis=0))


def test_a_bad_or_too_large_file_gets_its_message(client, server, images, tmp_path):
    from gradio_client.exceptions import AppError
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(AppError) as e:
        segment(client, tmp_path / "notes.png")
    assert str(e.value) == "notes.png is not an image (expected a picture: PNG, JPG, JPEG, BMP, TIF, TIFF, ...)"
    whole = images["frame.png"][0].read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(AppError) as e:
        segment(client, tmp_path / "cut.png")
    assert str(e.value) == "cut.png is cut short or corrupt: it does not decode in full"
    Image.new("1", (9500, 9500)).save(tmp_path / "huge.png")  # 11 kB on disk, 90,250,000 pixels
    with pytest.raises(AppError) as e:
        segment(client, tmp_path / "huge.png")
    assert str(e.value) == ("huge.png is 9500x9500, 90,250,000 pixels: more than the 89,478,485 pixels an image "
                            "may have (PIL's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS); resize it")
    assert "Traceback" not in server[3].read_text()


def test_two_requests_at_once_both_succeed(server, images, tmp_path):
    from gradio_client import Client, handle_file
    jobs = []
    for i, (path, _) in enumerate(images.values()):
        c = Client(server[0], verbose=False, download_files=str(tmp_path / str(i)), analytics_enabled=False)
        jobs.append(c.submit(handle_file(str(path)), 1.0, False, 8, api_name="/segment"))
    for job, (_, expected) in zip(jobs, images.values()):
        assert np.array_equal(np.asarray(Image.open(job.result(timeout=REQUEST_S)[1])), expected)


class Chromium:
    """Headless Chromium driven over the DevTools Protocol on its debugging pipe (fds 3 and 4:
    JSON messages ended by a NUL byte), attached to its one page."""

    def __init__(self, profile):
        r_cmd, w_cmd = os.pipe()
        r_res, w_res = os.pipe()

        def pipes():  # in the child: the protocol's fds (moved up first: a pipe may itself be fd 3 or 4)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (r_cmd, w_res)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)
        self.proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=pipes, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(r_cmd)
        os.close(w_res)
        self.send_fd, self.messages, self.next_id, self.events = w_cmd, queue.Queue(), 0, []
        threading.Thread(target=self._read, args=(r_res,), daemon=True).start()
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _read(self, fd):
        buffer = b""
        while chunk := os.read(fd, 1 << 16):
            buffer += chunk
            *whole, buffer = buffer.split(b"\0")
            for message in whole:
                self.messages.put(json.loads(message))

    def call(self, method, timeout=30, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if getattr(self, "session", None):
            message["sessionId"] = self.session
        os.write(self.send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"the page never gave {expression} in {timeout} s")

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (queue.Empty, OSError, AssertionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.send_fd)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium)")
def test_in_a_browser_an_upload_shows_predict_modes_segmentation(server, images, tmp_path):
    path, expected = images["frame.png"]
    browser = Chromium(tmp_path / "profile")
    try:
        browser.call("Network.enable")
        browser.call("Page.navigate", url=server[0])
        browser.wait_for("!!document.querySelector('#upload input[type=file]')", REQUEST_S)
        root = browser.call("DOM.getDocument")["root"]["nodeId"]
        node = browser.call("DOM.querySelector", nodeId=root, selector="#upload input[type=file]")["nodeId"]
        browser.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)
        src = browser.wait_for("(() => { const i = document.querySelector('#segmentation img');"
                               " return i && i.complete && i.naturalWidth ? i.src : ''; })()", REQUEST_S)
        browser.wait_for("document.querySelector('#legend').innerText.includes('%')", REQUEST_S)
        with urllib.request.urlopen(src, timeout=REQUEST_S) as r:
            shown = np.asarray(Image.open(r).convert("RGB"))
        assert np.array_equal(shown, expected)
        time.sleep(0.5)  # the last layout settles before the picture
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        requested = [e["params"]["request"]["url"] for e in browser.events
                     if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    assert requested and all(u.startswith((server[0], "data:", "blob:")) for u in requested), \
        [u for u in requested if not u.startswith((server[0], "data:", "blob:"))][:5]  # nothing fetched outside
    if os.environ.get("SEGNET_DEMO_SCREENSHOT"):  # the README's picture, in 128 colours to stay small
        (tmp_path / "shot.png").write_bytes(png)
        Image.open(tmp_path / "shot.png").convert("RGB").quantize(128).save(
            os.environ["SEGNET_DEMO_SCREENSHOT"], optimize=True)


def test_ctrl_c_while_monte_carlo_samples_run_stops_with_one_line(tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status
    weights = bayesian_folder_weights(tmp_path / "w.pt", ["a", "b"], [(0, 0, 0), (9, 9, 9)], 360, 480)
    proc = subprocess.Popen([sys.executable, "-m", "segnet.demo", str(weights), f"--port={free_port()}",
                             "--device=cpu"], cwd=REPO, env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "g")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[2]
        Image.new("RGB", (1600, 1200), (90, 90, 90)).save(tmp_path / "large.png")
        job = Client(url, verbose=False, download_files=str(tmp_path), analytics_enabled=False).submit(
            handle_file(str(tmp_path / "large.png")), 1.0, True, 32, api_name="/segment")
        deadline = time.monotonic() + REQUEST_S
        while job.status().code != Status.PROCESSING and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the image read, its 32 samples on the model
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "SegNet demo stopped\n", "")  # not C++'s "terminate called ..."


def test_ctrl_c_stops_the_demo_with_one_line(server):
    url, proc, lines, stderr = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    rest = list(iter(lambda: lines.get(timeout=10), None))  # to the end of its output
    assert rest == ["SegNet demo stopped\n"]
    assert stderr.read_text() == ""  # nothing, after the bad files above too: no traceback, no warning
