"""One way to show a long stage's progress (BN recompute, validation, evaluation, class weights,
the pre-flight check): a tqdm bar named after the stage on a terminal; in a log (stderr not a
terminal, or the environment variable CI set) exactly one line when the stage is done,

    validation: 101 images in 12.3 s

never a line per update. Only rank 0 of a torch.distributed run shows either. The count comes
from the host (the items' lengths), so showing it adds no device synchronisation.

    for images, masks in track(loader, "BN recompute", count=lambda batch: len(batch[0])):
        ...
    with Stage("check train", total=len(pairs)) as stage:
        ...; stage.update(1)
"""
import os
import sys
import time

import torch
from tqdm import tqdm


def in_a_log():
    """True where a bar would be noise: stderr is not a terminal, or CI is set (CI services set
    CI=true and some give their logs a terminal)."""
    return bool(os.environ.get("CI")) or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def _rank0():
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_rank() != 0)


def size_of(loader):
    """How many images `loader` gives (a DataLoader over a sized data set), else None."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return None


class Stage:
    """A stage's progress: `update(n)` counts n more items; the bar (terminal) or the one line
    (log) names the stage. A stage left by an exception prints no line: the error speaks."""

    def __init__(self, name, total=None, unit="image"):
        self.name, self.total, self.unit, self.n = name, total, unit, 0
        self.shown = _rank0()
        self.bar, self.t0 = None, time.perf_counter()

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.shown and not in_a_log():
            # inside another bar (training's), this one goes away when done rather than stay half-drawn
            self.bar = tqdm(total=self.total, desc=self.name, unit=self.unit, dynamic_ncols=True,
                            leave=not getattr(tqdm, "_instances", None), file=sys.stderr)
        return self

    def update(self, n=1):
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, kind, value, traceback):
        if self.bar is not None:
            self.bar.close()
        elif self.shown and kind is None and self.n:
            seconds = time.perf_counter() - self.t0
            print(f"{self.name}: {self.n} {self.unit}{'s' if self.n != 1 else ''} in {seconds:.1f} s",
                  file=sys.stderr, flush=True)


def track(items, name, total=None, count=None, unit="image"):
    """`items` passed through while a Stage counts them: `count(item)` each (1 without `count`).
    Closing the generator early closes `items` too (a generator source then runs its cleanup now)."""
    try:
        with Stage(name, total, unit) as stage:
            for item in items:
                yield item
                stage.update(1 if count is None else count(item))
    finally:
        getattr(items, "close", lambda: None)()
