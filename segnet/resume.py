"""The rules of starting a run: what a resume may continue and change, and a new run's initial
weights (docs/training.md "Stops, bad files and resume", docs/reliability.md "Exact resume").

    config, ckpt = resume.resumed_config(config, explicit, RESUME_MAY_CHANGE)   # --resume=RUN/last.pt
    ckpt = resume.load_initial_weights(net, config, class_names)                # --init_from=PATH

Only a run's last.pt continues it: best.pt (or any file saved as a best.pt) is refused, as are a
changed setting outside the list a resume may change, a --max_iters the checkpoint has already
reached, and data whose class names differ from the run's; a new run may start from any
checkpoint's or weights file's weights with --init_from.
"""
import os
import pathlib

from .checkpoint import CHECKPOINT_KIND, WEIGHTS_KIND, load_checkpoint
from .data.registry import check_class_names
from .errors import one_line


def saved_as(path, ckpt):
    """The name the checkpoint was saved under by its run ("last.pt" or "best.pt"). Files written
    before checkpoints recorded it have only their own name to go by."""
    name = ckpt.get("saved_as")
    if name is None:
        name = "best.pt" if pathlib.Path(path).name.startswith("best") else "last.pt"
    return name


def finished(ckpt):
    """The run that saved `ckpt` had done its final evaluation (files without the record: when
    their last validation was at their own iteration)."""
    return ckpt.get("finished", ckpt.get("validated", -1) == ckpt["iter"])


def load_resume_checkpoint(path):
    """The checkpoint --resume names, if it is the run's last.pt; otherwise FileNotFoundError or
    ValueError saying which file continues the run, or how to start anew from its weights."""
    path = pathlib.Path(path)
    last, best = path.parent / "last.pt", path.parent / "best.pt"
    if not path.exists() and not last.exists() and best.is_file():  # stopped (a full disk) before any last.pt
        raise FileNotFoundError(f"checkpoint {path} not found; {path.parent} holds only {best.name}, saved before "
                                f"the run's first last.pt: start a new run from its weights with "
                                f"--init_from={best} and a new --out_dir, or start afresh with "
                                f"--out_dir={path.parent} --overwrite=true")
    ckpt = load_checkpoint(path)
    if saved_as(path, ckpt) != "last.pt":
        there = f"{last}" if last.is_file() else f"{last}, which does not exist yet"
        raise ValueError(f"--resume={path} is a best.pt (iteration {ckpt['iter']}): only the run's last.pt "
                         f"({there}) continues a run; to train on from these weights, start a new run with "
                         f"--init_from={path} and a new --out_dir")
    return ckpt


def resumed_config(config, explicit, may_change):
    """The resumed run's config: the checkpoint's own, with the keys in `may_change` that were
    given on the command line (`explicit`); any other key given with another value is refused,
    and so is a --max_iters the checkpoint has already reached. Returns (config, checkpoint)."""
    path = config["resume"]
    ckpt = load_resume_checkpoint(path)
    saved = {**config, **ckpt["config"]}
    for key in sorted(explicit - set(may_change)):
        if key == "init_from" and config[key] != saved[key]:
            raise ValueError(f"--init_from={config[key]} starts a new run from a file's weights, and --resume={path} "
                             f"continues its run with the weights it has: give one of them (--init_from with a "
                             f"new --out_dir)")
        if config[key] != saved[key]:
            raise ValueError(f"--{key}={config[key]} cannot change when resuming (the checkpoint has "
                            f"{saved[key]!r}); resuming may change only {', '.join(may_change)}")
    config = {**saved, **{k: config[k] for k in explicit & set(may_change)}}
    check_max_iters(ckpt, config["max_iters"], path)
    if "overwrite" not in explicit:  # a permission for one start, never inherited from the checkpoint
        config["overwrite"] = False
    config["download"] = config["download"] and "data_root" in explicit  # a stored data_root: read, never fetched
    if "out_dir" not in explicit:
        config["out_dir"] = os.path.dirname(os.path.abspath(path))
    return config, ckpt


def check_max_iters(ckpt, max_iters, path):
    """A resume must have iterations left to train, or its own final evaluation left to run (a
    run stopped in it resumes at its last iteration to run it again); anything else would only
    rewrite the run's files."""
    it = ckpt["iter"]
    if it < max_iters or (it == max_iters == ckpt["config"]["max_iters"] and not finished(ckpt)):
        return
    done = " and its run is complete" if it == ckpt["config"]["max_iters"] and finished(ckpt) else ""
    raise ValueError(f"--max_iters={max_iters}: {path} is already at iteration {it}{done}; nothing was changed "
                    f"(to train on, pass a --max_iters above {it})")


def check_data_classes(ckpt, class_names, path, data_root):
    """Output channel i of the resumed model was trained as the checkpoint's class i: the data must
    name the same classes in the same order (ValueError naming both)."""
    if ckpt.get("class_names") is not None:
        check_class_names(ckpt["class_names"], class_names, f"--resume={path}", f"the data at {data_root}")


def load_initial_weights(net, config, class_names, log=print):
    """--init_from: `net` (built from this run's config) gets the model weights of a checkpoint or
    weights file, and nothing else (optimizer, iteration and RNG start afresh). The file's model
    and class count must be this run's, and the data (`class_names`) may name other classes but
    not the file's in another order (ValueError naming both). Returns the file's dict (None
    without --init_from)."""
    path = config["init_from"]
    if not path:
        return None
    ckpt = load_checkpoint(path, kinds=(CHECKPOINT_KIND, WEIGHTS_KIND))
    theirs = {k: ckpt["config"].get(k) for k in ("model", "num_classes")}
    ours = {k: config[k] for k in ("model", "num_classes")}
    if theirs != ours:
        raise ValueError(f"--init_from={path} holds a {theirs['model']} with {theirs['num_classes']} classes, but "
                         f"this run trains a {ours['model']} with {ours['num_classes']} classes: the weights must "
                         f"fit the model (--model, and the data's classes)")
    if ckpt.get("class_names") is not None:  # fine-tuning on other classes is fine; a reordering is a mistake
        check_class_names(ckpt["class_names"], class_names, f"--init_from={path}", "this run's data",
                          other_data=True)
    try:
        net.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ValueError(f"--init_from={path} does not fit this model: {detail[:300]}") from None
    log(f"model weights from {path} (iteration {ckpt.get('iter', '?')}); optimizer, iteration and RNG start afresh")
    return ckpt


def memory_advice(error, config, device, last=None, iteration=0):
    """One line for a training run that ran out of memory: what it was doing, what to lower, and
    how to go on from `last` (saved at `iteration`) when the run had progress to keep."""
    what = (f"out of memory training batches of {config['batch_size']} images of {config['height']}x"
            f"{config['width']} on {device} ({one_line(error)[:160]})")
    if last is None:
        return f"{what}: nothing was saved; start again with a smaller --batch_size or --height/--width"
    return (f"{what}: saved {last} at iteration {iteration}; a resume keeps the run's sizes, so free memory and "
            f"--resume={last}, or start a new run from its weights (--init_from={last}) with a smaller "
            f"--batch_size or --height/--width")
