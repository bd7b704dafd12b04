"""Files written whole or not at all: every output (checkpoints, weights, exports, metrics,
pictures) goes through `replace_file`, which writes the bytes to a temp file beside the target
and renames it into place.

- a crash or a kill at any point leaves either the previous file or the new one, never half of one;
- a failed write (disk full, read-only, permission) removes its temp file and raises WriteFailed,
  one line naming the path and the bytes needed; the previous file is untouched;
- the temp file is created afresh (O_EXCL, O_NOFOLLOW) and the rename replaces the directory
  entry, so a symlink planted at the target or at the temp name is replaced, never written through;
- temp names begin `.segnet-tmp-PID-`, a prefix only this project makes, so the cleanup of a killed
  writer's leftovers (temp_files) never takes a user's own `.something.tmp`;
- an output folder that is a symbolic link is refused (output_folder, make_folders), so a link
  planted where an output folder goes never sends the files elsewhere.
"""
import errno
import hashlib
import io
import os
import pathlib
import re
import shutil
import stat
import zipfile

TEMP_PREFIX = ".segnet-tmp-"
TEMP_PATTERN = re.compile(r"^\.segnet-tmp-\d+-(.+)$")  # temp_name's names: .segnet-tmp-PID-NAME


class WriteFailed(OSError):
    """A file could not be written (disk full, read-only, no permission): the message is one line
    that names the path and the bytes needed; the previous file, if any, is kept."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.errno = code

    def __str__(self):
        return self.args[0]


def temp_name(path):
    """The temp file beside `path` that this process writes before renaming it into place."""
    path = pathlib.Path(path)
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")


def temp_files(folder, name=None):
    """Temp files (and folders) left in `folder` (of `name` only, if given) by writers of this
    project that never renamed them; nothing else matches TEMP_PATTERN."""
    folder = pathlib.Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = [(p, TEMP_PATTERN.match(p.name)) for p in folder.iterdir()]
    return sorted(p for p, m in found if m and (name is None or m.group(1) == name))


def remove_temp(path):
    """Remove a leftover of temp_files: a file or link is unlinked, a folder removed with its content."""
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def user_cache_dir():
    """This project's folder in the user's cache: $XDG_CACHE_HOME/segnet, else ~/.cache/segnet
    (the XDG base directory rule). Data folders are only read; what is derived from them goes here."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "segnet"


def _write(fd, data):
    """Write all of `data` to the open file `fd` (the one place bytes reach the disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def describe_failure(path, e, size=None):
    """One line for an OSError `e` met while writing `path` (`size` bytes, if known)."""
    path = pathlib.Path(path)
    need = f"{size} bytes needed" if size is not None else "size unknown"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path.parent)
        free = f", {free} free" if free is not None else ""
        return (f"cannot write {path}: no space left on the device ({need}{free}); free some space and run "
                f"again (the previous {path.name}, if any, is kept)")
    reason = e.strerror or e.__class__.__name__
    return f"cannot write {path}: {reason} ({need}); the previous {path.name}, if any, is kept"


def replace_file(path, data):
    """Write `data` (bytes) to `path` through a temp file and an atomic rename; returns the path.
    WriteFailed on any OSError, with the temp file removed; the temp file is also removed when the
    write is interrupted (KeyboardInterrupt)."""
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        raise WriteFailed(f"cannot write {path}: it is a folder, expected a file path", errno.EISDIR)
    tmp = temp_name(path)
    fd = None
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:  # left by a killed process that had this pid
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o644)
        _write(fd, data)
        os.fsync(fd)  # the rename must not reach the disk before the data (power loss)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException as e:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteFailed):
            raise WriteFailed(describe_failure(path, e, len(data)), e.errno) from None
        raise
    return path


def replace_text(path, text):
    return replace_file(path, text.encode())


def serialized(save, *args, **kwargs):
    """The bytes `save(obj, file, ...)` writes (torch.save, torch.jit.save, PIL's Image.save, ...),
    collected in memory so that replace_file knows their size and writes them in one go."""
    buffer = io.BytesIO()
    save(*args, buffer, **kwargs)
    return buffer.getvalue()


def _probe(folder):
    """Create and remove a file in `folder` (OSError if the folder does not let us)."""
    probe = temp_name(pathlib.Path(folder) / "write-probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    os.close(fd)
    os.unlink(probe)


def check_writable_folder(folder, what="--out_dir"):
    """Before any work: `folder` (or, if it does not exist yet, its nearest existing parent) is a
    folder this process can create files in. Creates nothing; a probe file is made and removed.
    WriteFailed otherwise, naming the folder."""
    folder = pathlib.Path(folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.is_symlink():  # a dangling link
            raise WriteFailed(f"{what}={folder}: {probe_in} is a broken symbolic link", errno.ENOENT)
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise WriteFailed(f"{what}={folder}: {probe_in} is a file, expected a folder", errno.ENOTDIR)
    try:
        _probe(probe_in)
    except OSError as e:
        raise WriteFailed(f"cannot write to {what}={folder}: {e.strerror or e.__class__.__name__} "
                          f"(in {probe_in})", e.errno) from None
    return folder


def check_outside_data(folder, data_root, what="--out_dir"):
    """An output folder is neither the data folder nor inside it: what a run or an evaluation writes
    (curves.png, confusion_matrix.png, predictions/) would be read as data by the next one (a folder
    data set pairs every image in images/SPLIT/). ValueError otherwise; creates nothing."""
    out, data = (pathlib.Path(os.path.realpath(p)) for p in (folder, data_root))
    if out == data or data in out.parents:
        where = "the" if out == data else "inside the"
        raise ValueError(f"{what}={folder} is {where} data folder {data_root}: outputs are never written "
                         f"into the data they are read with (a file there would be read as data); choose an "
                         f"{what} outside it")


def output_folder(folder, what="output folder"):
    """`folder` may take outputs: it is not a symbolic link (one planted there would send the files
    elsewhere, replacing whatever has their names there). WriteFailed otherwise; creates nothing."""
    folder = pathlib.Path(folder)
    if folder.is_symlink():
        raise WriteFailed(f"{what} {folder} is a symbolic link (to {os.readlink(folder)}); outputs are never "
                          f"written through one: remove it, or choose another folder", errno.ELOOP)
    return folder


def torch_archive(source):
    """Which of torch's zip archives `source` (a path, or a file object, rewound after) is:
    "torchscript" (torch.jit.save: ARCHIVE/code/ and constants.pkl), "saved" (torch.save: a
    training checkpoint or weights file, ARCHIVE/data.pkl without code), or None (anything else).
    Read from the zip's directory only, nothing is unpickled."""
    try:
        with zipfile.ZipFile(source) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "saved" if any(n.endswith("/data.pkl") for n in names) else None


def check_replaceable(out, inputs=(), overwrite=False, flag="--out"):
    """Before an export or weights file is written to `out`: it is not one of `inputs` (the files
    the command reads) nor a checkpoint or weights file (torch_archive), unless `overwrite`.
    FileExistsError, one line naming the file and --overwrite=true, otherwise."""
    out = pathlib.Path(out)
    if overwrite or not out.is_file():
        return
    if any(pathlib.Path(i).is_file() and os.path.samefile(out, i) for i in inputs):
        what = "the checkpoint this command reads"
    elif torch_archive(out) == "saved":
        what = "a training checkpoint or weights file"
    else:
        return
    raise FileExistsError(f"{flag}={out} is {what}; it is kept: choose another {flag}, or replace it with "
                          f"--overwrite=true")


def download_target(root):
    """Where training may fetch a data set by itself (--download=true): `root` exists, or is a new
    folder inside an existing one (data/CamVid in a clone). A path whose parent is missing too is
    most likely mistyped: FileNotFoundError, and nothing is created."""
    root = pathlib.Path(root)
    if not root.exists() and not root.parent.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist, nor does {root.parent}, so nothing is downloaded "
                                f"there: check --data_root (a download goes into a new folder inside an existing "
                                f"one, e.g. data/CamVid), or fetch it first with `python -m segnet.data download`")
    return root


def make_folders(folders):
    """Create `folders` (parents included), none of which may be a symbolic link (output_folder);
    returns the ones this call created, outermost first, for remove_empty to take back when the job
    fails. WriteFailed if one cannot be created."""
    for folder in folders:  # all checked before any is made
        output_folder(folder)
    created = []
    for folder in folders:
        missing = []
        p = pathlib.Path(folder)
        while not p.exists() and p.parent != p:
            missing.append(p)
            p = p.parent
        try:
            pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise WriteFailed(f"cannot create folder {folder}: a file of that name is in the way",
                              errno.EEXIST) from None
        except OSError as e:
            raise WriteFailed(f"cannot create folder {folder}: {e.strerror or e.__class__.__name__}",
                              e.errno) from None
        created += [m for m in reversed(missing) if m not in created]
    return created


def remove_empty(folders):
    """Remove those of `folders` that are empty, innermost first (what a failed job created)."""
    for folder in sorted(map(pathlib.Path, folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty, or gone


# -- one process per folder -----------------------------------------------------------------------
try:
    import fcntl
except ImportError:  # not on Windows: folders are not locked there
    fcntl = None

_held = set()  # this process's lock fds


def _close_inherited_locks():
    # A forked child (a DataLoader worker) shares the parent's flock through its copy of the fd and
    # would keep the folder locked after the parent let go; it closes the copy (no unlock: the lock
    # stays the parent's).
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class FolderInUse(OSError):
    """Another process holds the folder's lock; `holder` is its process id as it wrote it."""

    def __init__(self, lock, holder):
        super().__init__(errno.EWOULDBLOCK, f"{lock} is held by process {holder}")
        self.lock, self.holder = lock, holder


class NotALockFile(OSError):
    """The lock's path holds something this project did not put there (a link, a folder, a file
    with other content): it is left alone, and the folder is not used."""

    def __str__(self):
        return self.args[0]


def _lock_fd(path):
    """The lock file opened for reading and writing, never through a symlink and only if it is a
    plain file of its own (one link) that holds at most a process id: a file planted there is
    neither followed nor truncated."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    refuse = (f"lock file {path} is {{}}; expected a plain file holding a process id (remove it, or choose "
              f"another folder)")
    if path.is_symlink():
        raise NotALockFile(refuse.format(f"a symbolic link (to {os.readlink(path)})"))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link planted between the check and the open
            raise NotALockFile(refuse.format("a symbolic link")) from None
        raise
    st = os.fstat(fd)
    problem = ("not a plain file" if not stat.S_ISREG(st.st_mode) else
               f"a hard link to a file of {st.st_nlink} names" if st.st_nlink > 1 else
               "larger than a process id" if st.st_size > 32 else None)
    if problem is None and not os.pread(fd, 32, 0).strip().isdigit() and st.st_size:
        problem = "a file with other content"
    if problem is not None:
        os.close(fd)
        raise NotALockFile(refuse.format(problem))
    return fd


def lock_folder(folder, name=".lock"):
    """An exclusive OS lock (flock) on folder/name, which records this process's id; the system
    drops it when the process ends, however it ends. Returns the fd for unlock_folder; FolderInUse
    if another process (or another lock in this one) holds it; NotALockFile if the path holds
    something else (a symlink, a folder, a file that is not a lock file), which is left untouched."""
    path = pathlib.Path(folder) / name
    fd = _lock_fd(path)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderInUse(path, holder) from None
    # the pid is written only now, with the lock held, into the file checked above
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held.add(fd)
    return fd


def unlock_folder(fd):
    _held.discard(fd)
    os.close(fd)  # the last fd of the lock's open file: the lock goes with it


def sha256(path):
    """The file's sha256 hex digest, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
