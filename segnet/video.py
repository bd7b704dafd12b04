"""Segment a video file (or a webcam) frame by frame and write the prediction over the frames.

    python Evaluate_SegNet.py CKPT --video=drive.mp4 --out=drive_segnet.mp4
    python Evaluate_SegNet.py CKPT --video=drive.mp4 --out=side.mp4 --side_by_side=true
    python Evaluate_SegNet.py CKPT --video=0 --out=webcam.mp4          # webcam 0, until Ctrl-C

Video I/O is PyAV (FFmpeg's libraries, `pip install av`), optional: without it, one line says so.
Each frame is resized to the model's input size like predict mode, segmented, and the logits are
resized back to the frame (bilinear), so the output has the input's size and frame rate
(H.264, yuv420p; an odd width or height is padded by one edge pixel, as yuv420p needs even sizes).
"""
import fractions
import os
import pathlib
import platform
import time

import numpy as np
import torch
from torchvision import tv_tensors

from .evaluation import predict
from .files import temp_name
from .progress import Stage
from .runtime import to_device
from .transforms import eval_transforms
from .visualize import colorize

INSTALL = "video input/output needs PyAV: pip install av"


def _av():
    try:
        import av
    except ImportError:
        raise ImportError(INSTALL) from None
    return av


def open_video(source):
    """(container, stream) for a file path, or for a webcam when `source` is an integer index
    (Linux: /dev/video<N> through v4l2; macOS: avfoundation device N)."""
    av = _av()
    source = str(source)
    try:
        if source.isdigit():
            system = platform.system()
            if system == "Linux":
                container = av.open(f"/dev/video{source}", format="v4l2")
            elif system == "Darwin":
                container = av.open(source, format="avfoundation", options={"framerate": "30"})
            else:
                raise ValueError(f"--video={source}: a webcam index needs Linux (v4l2) or macOS (avfoundation); "
                                f"on {system} pass a video file")
        else:
            if not os.path.isfile(source):
                raise FileNotFoundError(f"--video={source}: no such file (expected a video file or a webcam index)")
            container = av.open(source)
    except av.FFmpegError as e:
        if source.isdigit():
            raise ValueError(f"--video={source}: no webcam {source} could be opened ({e})") from None
        raise ValueError(f"--video={source}: cannot open it as a video ({e.__class__.__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"--video={source}: it has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # decode with frame threads
    return container, stream


def read_frames(container, stream):
    """Yield RGB frames, (H, W, 3) uint8."""
    for frame in container.decode(stream):
        yield frame.to_ndarray(format="rgb24")


class VideoWriter:
    """H.264 (yuv420p) MP4 writer that writes to a temp file and renames it on close."""

    def __init__(self, path, fps, codec="libx264"):
        av = _av()
        self.path = pathlib.Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"--out={path}: folder {self.path.parent} does not exist")
        self.tmp = temp_name(self.path)
        self.container = av.open(str(self.tmp), mode="w", format=_format_for(self.path))
        if codec not in av.codecs_available:
            codec = "mpeg4"  # FFmpeg's own encoder, in every build
        self.rate = fractions.Fraction(fps).limit_denominator(1001) if fps else fractions.Fraction(25)
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.pix_fmt = "yuv420p"
        self.size = None
        self.frames = 0

    def write(self, rgb):
        av = _av()
        h, w = rgb.shape[:2]
        if h % 2 or w % 2:  # yuv420p subsamples colour 2x2: pad to even sizes
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.size is None:
            self.size = rgb.shape[:2]
            self.stream.height, self.stream.width = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self):
        """Flush the encoder and move the file into place (nothing is written without a frame)."""
        if self.frames:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _format_for(path):
    ext = path.suffix.lower().lstrip(".")
    return {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "matroska", "avi": "avi"}.get(ext, "mp4")


def overlay(frame, colours, alpha=0.5):
    """The prediction's colours over the frame: (1 - alpha) * frame + alpha * colours, uint8."""
    mixed = (1 - alpha) * frame.astype(np.float32) + alpha * colours.astype(np.float32)
    return mixed.round().astype(np.uint8)


def compose(frame, colours, side_by_side=False, alpha=0.5):
    """One output frame: the overlay, or frame | colours side by side (twice as wide)."""
    if side_by_side:
        return np.concatenate([frame, colours], axis=1)
    return overlay(frame, colours, alpha)


def segment_frame(model, frame, transform, device, dtype, channels_last=False):
    """(H, W) int64 class indices of one RGB frame, at the frame's size."""
    image = torch.from_numpy(frame).permute(2, 0, 1)                       # (3, H, W) uint8
    x, _ = transform(tv_tensors.Image(image), None)                        # model size, normalised
    x = to_device(x.as_subclass(torch.Tensor)[None], device, channels_last)
    probs, _ = predict(model, x, device, dtype, frame.shape[:2])           # (1, C, H, W)
    return probs[0].argmax(0).cpu()


@torch.inference_mode()
def segment_video(model, source, out, height, width, normalize, palette, device, dtype=torch.float32,
                  side_by_side=False, alpha=0.5, channels_last=False, max_frames=None):
    """Segment every frame of `source` (a file, or a webcam index) into the video `out`.

    Returns {"frames", "seconds", "fps", "out"}; a webcam runs until Ctrl-C (or `max_frames`).
    """
    transform = eval_transforms(height, width, normalize)
    container, stream = open_video(source)
    fps = float(stream.average_rate) if stream.average_rate else 30.0
    total = stream.frames or None
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    writer = VideoWriter(out, fps)
    model.eval()
    t0, n = time.time(), 0
    try:
        with Stage("video", total, unit="frame") as stage:  # a terminal's bar shows the frame rate
            for frame in read_frames(container, stream):
                pred = segment_frame(model, frame, transform, device, dtype, channels_last)
                writer.write(compose(frame, colorize(pred.numpy(), palette), side_by_side, alpha))
                n += 1
                stage.update(1)
                if max_frames is not None and n >= max_frames:
                    break
    except KeyboardInterrupt:  # webcam: Ctrl-C ends the recording, the file is still finalised
        print(f"stopped after {n} frames")
    finally:
        container.close()
        writer.close()
    elapsed = time.time() - t0
    if n == 0:
        raise ValueError(f"--video={source}: no frames could be decoded")
    return {"frames": n, "seconds": elapsed, "fps": n / max(elapsed, 1e-9), "out": str(out)}
