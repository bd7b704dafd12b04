"""Export a trained SegNet to one self-contained ONNX or TorchScript file, and check it against PyTorch.

    python -m segnet.export checkpoints/RUN/best.pt --format=onnx --out=segnet.onnx
    python -m segnet.export CKPT --format=onnx --out=segnet.onnx --dynamic=true      # any height and width
    python -m segnet.export CKPT --format=torchscript --out=segnet.pt --argmax=true   # class indices out
    python -m segnet.export CKPT --format=onnx --out=segnet.onnx --bench=true        # onnxruntime vs PyTorch, CPU

The file's contract: one input, float32 (B, 3, H, W), RGB in 0..1 (the checkpoint's normalisation
is inside the model); one output, logits (B, C, H, W) float32, or with --argmax=true class indices
(B, H, W) int64. Class names and palette are in the file's metadata (`read_metadata`).
After writing, the file is run (onnxruntime / torch.jit.load) against the PyTorch model at the
export size and, with --dynamic=true, at an odd size too; the figures are printed.
"""
import contextlib
import copy
import io
import json
import math
import pathlib
import sys
import time
import warnings

import torch
import torch.nn as nn

from .bench.exported import bench_cpu, bench_unpool, cpu_lines
from .checkpoint import model_from_checkpoint
from .config import help_text, parse_overrides, wants_help
from .data import palette_for
from .errors import UserError, run_cli, user_errors
from .files import check_replaceable, check_writable_folder, output_folder, replace_file, serialized
from .model import use_scatter_unpool
from .transforms import NORMALIZATIONS, input_to_unit
from .visualize import checkpoint_palette

DEFAULTS = {
    "format": "onnx",     # onnx | torchscript
    "out": "",            # "" = <checkpoint folder>/<checkpoint name>.onnx (or .torchscript.pt)
    "height": 0,          # 0 = the checkpoint's training height
    "width": 0,           # 0 = the checkpoint's training width
    "dynamic": False,     # true: the file accepts any height and width (odd ones too)
    "argmax": False,      # true: output class indices (B, H, W) instead of logits (B, C, H, W)
    "opset": 18,          # ONNX opset
    "check": True,        # run the written file against PyTorch and print the largest differences
    "bench": False,       # time the written file against PyTorch on the CPU (segnet/bench/exported.py)
    "threads": 2,         # CPU threads for the check and the benchmark, both runtimes alike
    "bench_batch": 1,
    "bench_reps": 10,
    "overwrite": False,   # true: --out may replace a checkpoint or weights file (never done silently)
}
CHOICES = {"format": ("onnx", "torchscript")}
MINIMUMS = {"height": 0, "width": 0, "threads": 1, "bench_batch": 1, "bench_reps": 1, "opset": 17}
TOLERANCE = 1e-4  # largest logit difference allowed between the exported file and PyTorch (fp32)
ORT_MISSING = "onnxruntime is not installed, so the ONNX file was not run: `pip install onnxruntime`, then " \
              "`python -m segnet.export CKPT --format=onnx --out=PATH` again checks it (or read it with read_metadata)"


# -- the model as it is exported ----------------------------------------------------------------
def load_model(ckpt_path):
    """(model in eval mode, config, class names, palette) from a checkpoint or a shipped weights file."""
    model, ckpt = model_from_checkpoint(ckpt_path)
    return model, dict(ckpt["config"]), list(ckpt["class_names"]), checkpoint_palette(ckpt)


class Exportable(nn.Module):
    """RGB in 0..1 => the checkpoint's input normalisation => SegNet => logits (or class indices).

    The normalisation is segnet/transforms.py's on pixels p/255 (transforms.input_to_unit):
    imagenet (x - mean) / std, none x, raw255 x * 255.
    """

    def __init__(self, model, normalize, argmax=False):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={normalize!r}: expected one of {NORMALIZATIONS}")
        mean, std = input_to_unit(normalize)
        self.model, self.argmax = model, argmax
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, image):                               # (B, 3, H, W) RGB in 0..1
        x = (image - self.mean) / self.std
        logits = self.model(x)                              # (B, C, H, W)
        return logits.argmax(1) if self.argmax else logits  # (B, H, W) int64 with argmax


def exportable(model, normalize, argmax=False, scatter=True):
    """A copy of `model` wrapped for export; `scatter` switches its unpooling to the export-friendly
    max_unpool2d_scatter (same values; MaxUnpool2d stays faster in PyTorch, see docs/export.md)."""
    model = copy.deepcopy(model).eval()
    if scatter:
        use_scatter_unpool(model)
    return Exportable(model, normalize, argmax).eval()


def make_metadata(config, class_names, palette, argmax, height, width, dynamic, source=""):
    """String key -> string value: ONNX metadata_props, and one JSON extra file in TorchScript."""
    c = len(class_names)
    return {
        "class_names": json.dumps(class_names),
        "palette": json.dumps(palette),  # [r, g, b] 0..255 per class, in class order
        "input": "image: float32 (B, 3, H, W), RGB in 0..1",
        "output": "classes: int64 (B, H, W)" if argmax else f"logits: float32 (B, {c}, H, W)",
        "normalize": f"{config['normalize']} (inside the model)",
        "model": config["model"],
        "num_classes": str(c),
        "size": f"{height}x{width}" + (" (any size accepted)" if dynamic else ""),
        "source": str(source),
    }


def export_onnx(module, path, height, width, dynamic=False, metadata=None, opset=18):
    """Write `module` (an Exportable) to `path` as one ONNX file, weights included.

    The batch is always dynamic; `dynamic=True` makes height and width symbolic too (the
    unpool sizes then follow the input's, odd sizes included).
    """
    try:
        import onnx  # noqa: F401 (torch's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("--format=onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    import onnx
    example = torch.rand(1, 3, height, width)
    dim = torch.export.Dim.DYNAMIC
    shapes = {"image": {0: dim, 2: dim, 3: dim} if dynamic else {0: dim}}
    out_name = "classes" if module.argmax else "logits"
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), None, dynamo=True, input_names=["image"],
                                        output_names=[out_name], dynamic_shapes=shapes, opset_version=opset,
                                        external_data=False)
    except Exception as e:  # the exporter's own report is long; keep its last line
        raise RuntimeError(f"ONNX export failed: {e}\n{log.getvalue()[-2000:]}") from e
    proto = program.model_proto
    _name_dims(proto, {0: "batch", 2: "height", 3: "width"})
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    return replace_file(path, proto.SerializeToString())  # what onnx.save writes, whole or not at all


def _name_dims(proto, names):
    """Rename the exporter's symbolic dims (s0, s53, ...) of the input to batch/height/width,
    everywhere they appear, so a reader of the file sees what they mean."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[i].dim_param: n for i, n in names.items() if dims[i].dim_param}
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]


def export_torchscript(module, path, height, width, metadata=None):
    """Write `module` to `path` as a traced TorchScript file; metadata as extra file segnet.json.

    Traced sizes stay symbolic (the unpool sizes come from tensor shapes), so the file accepts any
    height and width whether or not it was exported with --dynamic=true (tested at an odd size).
    """
    example = torch.rand(1, 3, height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.export
        traced = torch.jit.trace(module, example, check_trace=False)
        data = serialized(torch.jit.save, traced, _extra_files={"segnet.json": json.dumps(metadata or {})})
    return replace_file(path, data)


def read_metadata(path):
    """The metadata dict of an exported file (either format); class_names and palette are JSON."""
    path = str(path)
    if path.endswith(".onnx"):
        import onnx
        return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    files = {"segnet.json": ""}
    _jit_load(path, files)
    return json.loads(files["segnet.json"])


# -- running the exported file -------------------------------------------------------------------
def onnx_runner(path, threads=2):
    """A function image (numpy float32) -> output (numpy), on onnxruntime's CPU provider."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _jit_load(path, extra_files=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})


def torchscript_runner(path):
    module = _jit_load(path).eval()

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def torch_runner(module):
    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def parity(reference, runner, image):
    """Largest |logit difference| and argmax agreement of `runner` against PyTorch `reference`
    (an Exportable returning logits) on one image batch (numpy float32 (B, 3, H, W))."""
    import numpy as np
    with torch.inference_mode():
        ref = reference(torch.from_numpy(image)).numpy()
    out = runner(image)
    if out.ndim == 3:  # the file outputs class indices: compare the argmax only
        return {"max_abs_diff": None, "argmax_agreement": float((out == ref.argmax(1)).mean()),
                "shape": list(out.shape)}
    return {"max_abs_diff": float(np.abs(out - ref).max()),
            "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "shape": list(out.shape)}


def odd_size(height, width):
    """An odd size other than the export size, for the dynamic-shape check (360x480 -> 271x361)."""
    return max(1, height * 3 // 4) | 1, max(1, width * 3 // 4) | 1


def check_sizes(height, width, dynamic):
    return [(height, width)] + ([odd_size(height, width)] if dynamic else [])


def random_image(batch, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g).numpy()


# -- the command ---------------------------------------------------------------------------------
def export(model, config, class_names, path, fmt="onnx", height=0, width=0, dynamic=False, argmax=False,
           opset=18, source="", palette=None):
    """Write the checkpoint's model to `path`; returns (path, metadata). `palette`: the data set's
    colours the checkpoint stores (visualize.checkpoint_palette), else its data set's (segnet.data.palette_for)."""
    path = pathlib.Path(path)
    check_out_path(path)
    module = exportable(model, config["normalize"], argmax)
    palette = palette or palette_for(config["dataset"], class_names)
    meta = make_metadata(config, class_names, [list(c) for c in palette], argmax, height, width, dynamic,
                         source)
    if fmt == "onnx":
        export_onnx(module, path, height, width, dynamic, meta, opset)
    else:
        export_torchscript(module, path, height, width, meta)
    return path, meta


def check_out_path(path):
    """Before the export's work: `path` names a file in an existing folder this process may write."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out={path} is a folder; expected the path of the file to write, "
                                f"e.g. --out={path / 'segnet.onnx'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"--out={path}: {path.parent} is a file, not a folder")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--out={path}: folder {path.parent} does not exist")
    check_writable_folder(output_folder(path.parent, "--out folder"), "--out folder")


def check(model, config, runner, height, width, dynamic):
    """Print and return the parity figures of the exported file at the export size (and an odd one)."""
    reference = exportable(model, config["normalize"], argmax=False, scatter=False)  # plain MaxUnpool2d
    results = []
    for h, w in check_sizes(height, width, dynamic):
        r = parity(reference, runner, random_image(1, h, w))
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        print(f"check {h}x{w} against PyTorch: max |logit diff| {diff}, "
              f"argmax agreement {100 * r['argmax_agreement']:.4f}%")
        if r["max_abs_diff"] is not None and not math.isfinite(r["max_abs_diff"]):  # NaN > TOLERANCE is False
            raise ValueError(f"check {h}x{w} failed: max |logit diff| {diff} (a non-finite logit, in the "
                             f"exported file's output or PyTorch's)")
        if (r["max_abs_diff"] or 0.0) > TOLERANCE or r["argmax_agreement"] < 1:
            print(f"warning: the file differs from PyTorch by more than {TOLERANCE} at {h}x{w} (docs/export.md, Parity: "
                  f"a near-tie inside a 2x2 max-pool window can pick the other pixel)")
        results.append({"size": [h, w], **r})
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print(help_text(__doc__, DEFAULTS))
        return 0
    if argv == ["--bench_unpool=true"]:  # no checkpoint needed: the unpooling figures of docs/export.md
        print(json.dumps(bench_unpool(), indent=2))
        return 0
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1:
        raise UserError("usage: python -m segnet.export CHECKPOINT --format=onnx|torchscript --out=PATH "
                        f"[--key=value ...]; keys: {', '.join(DEFAULTS)}")
    ckpt_path = pathlib.Path(positional[0])
    args = parse_overrides(DEFAULTS, [a for a in argv if a.startswith("--")], presets={}, choices=CHOICES,
                           minimums=MINIMUMS)
    torch.set_num_threads(args["threads"])
    out = args["out"] or ckpt_path.with_name(ckpt_path.stem + (".onnx" if args["format"] == "onnx" else ".torchscript.pt"))
    with user_errors():
        check_out_path(out)
        check_replaceable(out, [ckpt_path], args["overwrite"])
        model, config, class_names, palette = load_model(ckpt_path)
    h, w = args["height"] or config["height"], args["width"] or config["width"]
    t0 = time.time()
    with user_errors():
        out, meta = export(model, config, class_names, out, args["format"], h, w, args["dynamic"], args["argmax"],
                           args["opset"], source=ckpt_path.name, palette=palette)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args['format']}, output {meta['output']}, "
          f"size {meta['size']}) in {time.time() - t0:.1f} s")
    if not (args["check"] or args["bench"]):
        return 0
    if args["format"] == "onnx":
        try:
            runner = onnx_runner(out, args["threads"])
        except ImportError:
            print(f"note: {ORT_MISSING}")
            return 0
    else:
        runner = torchscript_runner(out)
    if args["check"]:
        try:
            check(model, config, runner, h, w, args["dynamic"])
        except ValueError as e:  # the file does not compute the model: it is not left to pass for it
            out.unlink(missing_ok=True)
            raise UserError(f"{e}; {out} removed") from None
    if args["bench"]:
        reference = exportable(model, config["normalize"], args["argmax"], scatter=False)
        res = bench_cpu({"pytorch": torch_runner(reference), args["format"]: runner}, h, w,
                        args["bench_batch"], args["bench_reps"], args["threads"])
        print("\n".join(cpu_lines(res, h, w, args["bench_batch"], args["threads"])))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
