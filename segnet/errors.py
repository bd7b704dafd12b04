"""Mistakes a user can fix (bad path, bad value, wrong file) end in one line, not a traceback.

Library code raises ordinary exceptions: ValueError for a bad value or a corrupt file, OSError
(FileNotFoundError, ConnectionError, ...) for a missing file or a failed download, ImportError for a
missing optional package. The command-line layer turns those into a UserError where it calls the
library on the user's input (`with user_errors():`, `read_errors(loader)`), and `run_cli` prints a
UserError as one line; anything else is a bug and keeps its traceback.
"""
import contextlib
import re
import sys

from .files import WriteFailed

INPUT_ERRORS = (ValueError, OSError, ImportError)


class UserError(Exception):
    """A problem with the user's input: the message names the thing and what was expected."""


def one_line(error):
    """The message of `error` as one line; an error re-raised from a DataLoader worker keeps only the
    original exception's own message (the last line of the worker's traceback)."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = re.sub(r"^[\w.]+: ", "", message.splitlines()[-1])
    return message.splitlines()[0] if message else error.__class__.__name__


@contextlib.contextmanager
def user_errors():
    """Inside this block, the library's ValueError / OSError / ImportError become a UserError."""
    try:
        yield
    except INPUT_ERRORS as e:
        raise UserError(one_line(e)) from None


@contextlib.contextmanager
def interrupted(message):
    """Inside this block, Ctrl-C (KeyboardInterrupt) ends the command with `message`, one line."""
    try:
        yield
    except KeyboardInterrupt:
        raise UserError(message) from None


class DataError(UserError):
    """A file of the data set could not be read mid-run (the training loop saves last.pt first)."""


class WorkerDied(DataError):
    """A DataLoader worker process ended without being asked to (killed from outside, or by the
    out-of-memory killer): nothing is wrong with the data, the loader has to be started again."""


WORKER_DIED = "DataLoader worker (pid"  # how torch's messages for a dead worker begin (dataloader.py)


class read_errors:
    """Iterate `loader`, turning what reading a batch raises (an unreadable or corrupt file, in this
    process or in a worker) into a DataError, and a worker's death into WorkerDied; errors in the
    caller's loop body are left alone."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            try:
                batch = next(batches, None)
            except INPUT_ERRORS as e:
                raise DataError(one_line(e)) from None
            except RuntimeError as e:
                if not str(e).startswith(WORKER_DIED):
                    raise
                raise WorkerDied(one_line(e)) from None
            if batch is None:
                return
            yield batch


def run_cli(main, argv=None):
    """Call `main(argv)`; a UserError, or a file that could not be written (files.WriteFailed: a
    full disk, a read-only folder, wherever it happens), becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except (UserError, WriteFailed) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
