"""A local web demo: drop in an image, get SegNet's segmentation (the authors served SegNet as a
web demo beside the code, TPAMI 2017 footnote 2).

    python -m segnet.demo                                  # the shipped SegNet-Basic weights
    python -m segnet.demo checkpoints/RUN/best.pt --port=7861 --device=cuda
    python -m segnet.demo --host=0.0.0.0                   # reachable from other machines too

The page runs predict mode's code on each image (segnet.data.UnlabelledImages reads it at the
model's input size, segnet.evaluation.model_predictions brings the prediction back to the image's
own size, segnet.visualize colours it), so it shows what `Evaluate_SegNet.py CKPT --images=FILE`
writes to colour/. Gradio serves it (`pip install gradio`, optional like PyAV for video); it runs
offline: no analytics or telemetry, no web fonts. Requests are queued and run one at a
time on the one model, loaded once. docs/demo.md.
"""
import errno
import html
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import runtime
from .build import build_dataset
from .checkpoint import model_from_checkpoint
from .config import help_text, parse_overrides, wants_help
from .data import UnlabelledImages, collate
from .data.base import ImageTooLarge, open_image, read_image
from .data.registry import default_root
from .data.views import IMAGE_EXTENSIONS
from .errors import UserError, run_cli, user_errors
from .evaluation import model_predictions
from .visualize import checkpoint_palette, colorize, heatmap

DEFAULTS = {
    "port": 7860,            # a busy port is refused in one line (never a silent other one)
    "host": "127.0.0.1",     # 127.0.0.1: this machine only | 0.0.0.0: every network this machine is on
    "device": "auto",        # auto | cpu | cuda | cuda:N
    "share": False,          # true: a public *.gradio.live link through Gradio's servers (needs the internet)
}
SHIPPED = pathlib.Path(__file__).resolve().parents[1] / "weights" / "segnet_basic_camvid.pt"
INSTALL = "the web demo needs Gradio: pip install gradio"
MAX_FILE_SIZE = "200mb"      # uploads above this are refused by Gradio before they reach the model
EXAMPLES = 4
MC_SAMPLES = 8
MC_RANGE = (2, 32)      # the samples a request may ask for: a variance needs two; the queue waits on the rest


def _gradio():
    """Gradio, imported with its telemetry off (it reads the switches at import): it runs offline."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # huggingface_hub, which Gradio imports, also reports
    try:
        import gradio
    except ImportError:
        raise ImportError(INSTALL) from None
    return gradio


def check_image(path, name):
    """ValueError, in one line naming the upload as `name`, unless `path`'s header is an image's
    within the repo's pixel limit (base.open_image: PIL's Image.MAX_IMAGE_PIXELS). Whether it
    decodes in full is predict mode's own check (UnlabelledImages)."""
    try:
        with open_image(path):
            pass
    except ImageTooLarge as e:  # refused from the header, before any pixel is decoded
        raise ValueError(str(e).replace(str(path), name, 1)) from None
    except (OSError, SyntaxError, ValueError):
        raise ValueError(f"{name} is not an image (expected a picture: "
                         f"{', '.join(e[1:].upper() for e in IMAGE_EXTENSIONS)}, ...)") from None


def blend(image, colours, opacity):
    """The class colours over the image: `opacity` 0 shows the image, 1 the colours alone
    (exactly predict mode's colour/ picture); integer arithmetic, rounded."""
    a = int(round(255 * min(max(float(opacity), 0.0), 1.0)))
    mixed = image.astype(np.uint16) * (255 - a) + colours.astype(np.uint16) * a + 127
    return (mixed // 255).astype(np.uint8)


def legend_html(pred, class_names, palette):
    """The classes present in `pred`, largest first: a colour swatch, the name, the share of pixels."""
    counts = np.bincount(pred.ravel(), minlength=len(class_names))[:len(class_names)]
    rows = []
    for i in np.argsort(-counts, kind="stable"):
        if counts[i] == 0:
            break
        r, g, b = palette[i]
        rows.append(f'<div class="segnet-class"><span style="display:inline-block;width:1em;height:1em;'
                    f'vertical-align:middle;border:1px solid #888;background:rgb({r},{g},{b})"></span> '
                    f"{html.escape(str(class_names[i]))}: {share(counts[i] / pred.size)}</div>")
    return '<div class="segnet-legend">' + "".join(rows) + "</div>"


def share(fraction):
    """A share of the pixels in percent; a class present on a few pixels reads <0.1%, not 0.0%."""
    return "<0.1%" if 0 < fraction < 0.0005 else f"{100 * fraction:.1f}%"


class Segmenter:
    """The model, loaded once, and predict mode's path for one image at a time (a lock: one model,
    one request on it at once, whatever the web server does)."""

    def __init__(self, path, device="auto"):
        model, ckpt = model_from_checkpoint(path)
        self.path, self.config = pathlib.Path(path), ckpt["config"]
        self.class_names, self.palette = list(ckpt["class_names"]), checkpoint_palette(ckpt)
        self.rt = runtime.setup(device, "float32", "auto", kernel_size=model.spec.kernel_size, tf32=False)
        self.model = self.rt.place(model)
        self.bayesian = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
        self.lock = threading.Lock()

    def __call__(self, path, name, mc_samples=0):
        """(image as read: (H, W, 3) uint8, class map (H, W) uint8, uncertainty (H, W) float or None,
        seconds of inference) for the image file `path`; a ValueError names it as `name`."""
        check_image(path, name)
        try:  # predict mode's reader, which skips (here: refuses) a file that does not decode in full
            images = UnlabelledImages(path, self.config["height"], self.config["width"], self.config["normalize"],
                                      say=lambda line: None)
        except ValueError:
            raise ValueError(f"{name} is cut short or corrupt: it does not decode in full") from None
        image = read_image(path, upright=True)  # what predict mode reads, shown beside the segmentation
        item = images[0]
        with self.lock, torch.inference_mode():  # as evaluation.tally runs it
            t0 = time.perf_counter()
            batch, = model_predictions(self.model, [collate([item])], self.rt.device, self.rt.dtype,
                                       self.rt.channels_last, mc_samples=mc_samples)
            pred = batch.preds[0].to(torch.uint8).cpu().numpy()
            unc = batch.uncertainty[0].float().cpu().numpy() if batch.uncertainty is not None else None
            seconds = time.perf_counter() - t0
        return image, pred, unc, seconds


def example_images(config, folder, count=EXAMPLES):
    """The first `count` test images of the checkpoint's data (its data_root, else the data set's
    default folder: data/CamVid for CamVid; a data set that composes its images, as multi-digit
    MNIST does, has them written into `folder`), else `count` street-like frames drawn there."""
    roots = [config["data_root"]]
    try:
        roots.append(default_root(config["dataset"]))
    except (ValueError, KeyError):
        pass
    for root in roots:
        try:
            data = build_dataset({**config, "data_root": root, "download": False}, "test", train=False)
            files = [image for image, _ in data.item_files()[:count]]
            if not files:  # no image files of its own: its first images, written out
                files = [pathlib.Path(folder) / data.item_name(i) for i in range(min(count, len(data)))]
                for i, path in enumerate(files):
                    Image.fromarray(data.load_image(i)).save(path)
        except (ValueError, OSError, KeyError, ImportError):
            continue
        if files:
            return [str(image) for image in files]
    return [str(drawn_frame(pathlib.Path(folder) / f"generated_{i}.png", config["height"], config["width"], i))
            for i in range(count)]


def drawn_frame(path, height, width, seed):
    """A street-like picture: sky, buildings, a tree, a road with its markings, a car; written to `path`
    at height x width (drawn at least 360x480, as CamVid's frames, so that a small model's has its parts)."""
    size = (width, height)
    scale = max(1.0, 360 / height, 480 / width)
    height, width = int(round(height * scale)), int(round(width * scale))
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (width, height), (128, 160, 200))
    d = ImageDraw.Draw(im)
    horizon = int(height * rng.uniform(0.45, 0.6))
    x = 0
    while x < width:  # buildings along the horizon
        w, top = int(width * rng.uniform(0.08, 0.2)), int(height * rng.uniform(0.1, 0.35))
        d.rectangle([x, top, x + w, horizon], fill=tuple(int(v) for v in rng.integers(90, 170, 3)))
        x += w
    cx = int(width * rng.uniform(0.1, 0.9))
    d.rectangle([cx - 3, int(horizon * 0.6), cx + 3, horizon], fill=(90, 60, 30))
    d.ellipse([cx - 25, int(horizon * 0.3), cx + 25, int(horizon * 0.7)], fill=(60, 120, 40))
    d.rectangle([0, horizon, width, height], fill=(110, 100, 115))
    d.rectangle([0, horizon, width, horizon + height // 30], fill=(170, 170, 160))  # pavement
    for mx in range(0, width, width // 6):
        d.rectangle([mx, int(height * 0.8), mx + width // 12, int(height * 0.8) + 3], fill=(230, 230, 230))
    car = int(width * rng.uniform(0.1, 0.6))
    d.rectangle([car, horizon + 5, car + width // 5, horizon + height // 6], fill=(40, 40, 120))
    im.resize(size, Image.Resampling.BOX).save(path)
    return path


def mc_samples(value):
    """`value` as a number of Monte Carlo samples; ValueError unless a whole number in MC_RANGE (the
    page's slider keeps to it, its API, with preprocessing off, does not: one request of a million
    samples would hold the queue for hours)."""
    try:
        ok = int(value) == value and MC_RANGE[0] <= value <= MC_RANGE[1]
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"samples={value}: expected a whole number from {MC_RANGE[0]} to {MC_RANGE[1]}")
    return int(value)


class Page:
    """The page's handlers over one Segmenter: the segmentation of an upload, and the overlay redrawn
    at another opacity (no model call)."""

    def __init__(self, seg):
        self.seg = seg

    def segment(self, upload, opacity, mc, samples):
        gr = _gradio()
        if not upload or not upload.get("path"):
            return None, None, None, "", "", None
        name = pathlib.Path(upload.get("orig_name") or upload["path"]).name
        try:
            samples = mc_samples(samples) if mc and self.seg.bayesian else 0
            image, pred, unc, seconds = self.seg(upload["path"], name, samples)
        except ValueError as e:  # the user's file or samples: a message on the page, nothing in the terminal
            raise gr.Error(str(e), print_exception=False) from None
        colours = colorize(pred, self.seg.palette)
        rt = self.seg.rt
        sampled = f", Monte Carlo dropout: {samples} samples" if samples else ""
        info = (f"**{1000 * seconds:.0f} ms** on {rt.device}, {rt.precision}{sampled}; {image.shape[1]}x"
                f"{image.shape[0]} image, model input {self.seg.config['width']}x{self.seg.config['height']}")
        return (image, blend(image, colours, opacity), heatmap(unc) if unc is not None else None,
                legend_html(pred, self.seg.class_names, self.seg.palette), info, (image, colours))

    def redraw(self, last, opacity):
        return None if last is None else blend(last[0], last[1], opacity)


def build_page(seg, examples):
    """The Gradio page: the upload, the input beside its segmentation, the legend, the timing, the
    examples, and for a Bayesian model the Monte Carlo switch and the uncertainty map."""
    gr = _gradio()
    page = Page(seg)
    names = ", ".join(seg.class_names)
    with gr.Blocks(title="SegNet demo", analytics_enabled=False) as blocks:
        gr.Markdown(f"## SegNet: {seg.config['model']} ({seg.path.name})\n{len(seg.class_names)} classes: "
                    f"{html.escape(names)}. Drop an image, paste one or use the webcam.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.Image(label="image", sources=["upload", "clipboard", "webcam"], type="filepath",
                                  elem_id="upload")
                opacity = gr.Slider(0, 1, value=1, step=0.05, label="overlay opacity (0: image, 1: classes)",
                                    elem_id="opacity")
                mc = gr.Checkbox(False, label="Monte Carlo dropout (Bayesian SegNet)", visible=seg.bayesian)
                samples = gr.Slider(*MC_RANGE, value=MC_SAMPLES, step=1, label="samples", visible=seg.bayesian)
                gr.Examples(examples, inputs=upload, label="examples")
            with gr.Column(scale=2):
                with gr.Row():
                    shown = gr.Image(label="input", format="png", interactive=False, elem_id="input")
                    segmentation = gr.Image(label="segmentation", format="png", interactive=False,
                                            elem_id="segmentation")
                uncertainty = gr.Image(label="uncertainty (variance over the samples)", format="png",
                                       interactive=False, visible=seg.bayesian, elem_id="uncertainty")
                with gr.Row():
                    legend = gr.HTML(label="legend", elem_id="legend")
                    info = gr.Markdown(label="info", elem_id="info")
        last = gr.State()
        outputs = [shown, segmentation, uncertainty, legend, info, last]
        inputs = [upload, opacity, mc, samples]
        # one queue, one request at a time on the one model; the file arrives unopened (preprocess
        # off), so that predict mode's reader, not Gradio's, decodes it
        model = {"preprocess": False, "concurrency_limit": 1, "concurrency_id": "model"}
        upload.change(page.segment, inputs, outputs, api_name="segment", **model)
        mc.change(page.segment, inputs, outputs, api_visibility="private", **model)
        samples.release(page.segment, inputs, outputs, api_visibility="private", **model)
        opacity.change(page.redraw, [last, opacity], segmentation, api_visibility="private")
    return blocks.queue(default_concurrency_limit=1, max_size=64)


def theme():
    """Gradio's default look with the system's fonts (its own are fetched from Google Fonts)."""
    gr = _gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def serve(blocks, host, port, share, allowed):
    """Start the server without blocking; returns its address."""
    _, url, share_url = blocks.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
        allowed_paths=allowed, max_file_size=MAX_FILE_SIZE, theme=theme(), ssr_mode=False, mcp_server=False,
        run_history=False, footer_links=["api"])
    return share_url or url


def check_port(host, port):
    """OSError unless `port` can be served on `host` (said before minutes of loading, not after)."""
    if not 1 <= port <= 65535:
        raise OSError(f"--port={port}: expected a port from 1 to 65535")
    address = host.strip("[]")  # an IPv6 address may come in brackets, as in a URL
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a port in TIME_WAIT is free
        try:
            s.bind((address, port))
        except OSError as e:
            if e.errno == errno.EACCES:
                raise OSError(f"--port={port} cannot be served on --host={host} ({e.strerror}): ports below "
                              f"1024 need administrator rights; pick another with --port=N") from None
            if e.errno == errno.EADDRINUSE:
                raise OSError(f"--port={port} cannot be served on --host={host} ({e.strerror or e}): "
                              f"another program has it; pick another with --port=N") from None
            raise OSError(f"--host={host} is not an address of this machine ({e.strerror or e}): expected "
                          f"127.0.0.1, 0.0.0.0 or one of its own addresses") from None


def url_host(host):
    """`host` as Gradio wants it: an IPv6 address in brackets, as in a URL (it builds its own
    address from it and binds without them)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) > 1:
        raise UserError(f"usage: python -m segnet.demo [CHECKPOINT] [--key=value ...]; keys: {', '.join(DEFAULTS)}")
    args = parse_overrides(DEFAULTS, [a for a in argv if a.startswith("--")], presets={},
                           minimums={"port": 1})
    with user_errors():
        check_port(args["host"], args["port"])
        _gradio()  # before the model loads: a missing Gradio is one line at once
    with tempfile.TemporaryDirectory(prefix="segnet-demo-") as folder:
        with user_errors():
            seg = Segmenter(positional[0] if positional else SHIPPED, args["device"])
            examples = example_images(seg.config, folder)
            blocks = build_page(seg, examples)
            url = serve(blocks, url_host(args["host"]), args["port"], args["share"],
                        sorted({str(pathlib.Path(e).resolve().parent) for e in examples}))
        print(f"SegNet demo: {url} ({seg.path.name}, {len(seg.class_names)} classes, on {seg.rt.device}); "
              f"Ctrl-C stops it", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            blocks.close(verbose=False)
            print("SegNet demo stopped", flush=True)
            if not seg.lock.acquire(timeout=0.1):
                # a request is still on the model: Python's exit would tear torch's threads down under
                # it (C++ "terminate called without an active exception", status 134); end here instead
                shutil.rmtree(folder, ignore_errors=True)
                os._exit(0)
            # the lock held from here on: no request starts the model while Python exits
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
