"""Where and how a run computes: device, autocast dtype, GradScaler, backend flags, memory format,
processes. One setup for training, evaluation and the benchmark.

    rt = runtime.setup("auto", "auto", channels_last="auto")    # under torchrun: also the process group
    model = rt.place(model)                                     # device, memory format, weight-gradient kernel
    with rt.autocast():
        logits = model(rt.images(images))
"""
import dataclasses
import os
import pathlib
import platform

import torch

from . import ranks
from .model import use_gemm_weight_grad

# The autocast dtypes a run may ask for ("auto" picks one, see resolve_dtype).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def cpu_has_native_bf16():
    """AVX512-BF16 / AMX: bf16 convolutions run natively (oneDNN), much faster than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name):
    """The device `name` names, checked here, before any folder is made or model built: the runs
    compute on the CPU or a CUDA GPU that this machine has (torch accepts other names, mps, xpu,
    meta..., and fails only once a tensor goes there)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name}: expected auto, cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name}: {device.type} is not a device these scripts run on; expected auto, cpu "
                         f"or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: CUDA is not available on this machine; use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def resolve_dtype(name, device):
    """The autocast dtype (float32 = no autocast). auto: bf16 where the hardware runs it natively,
    fp16 (with a GradScaler) on older GPUs, fp32 otherwise. Master weights stay fp32 either way."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype={name}: expected one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


CHANNELS_LAST_CHOICES = ("auto", "true", "false")


def cpu_capability():
    """The widest vector ISA torch's CPU kernels use here: "AVX512", "AVX2", ... ("" if unknown)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return ""


def resolve_channels_last(value, device, dtype, conv_wgrad="auto", kernel_size=3):
    """NHWC or NCHW. auto picks the faster layout as measured (docs/performance.md): NHWC on CUDA
    (tensor cores) and on AVX512 CPUs (oneDNN's NHWC kernels are faster there in fp32 and bf16); on
    AVX2-only CPUs only in fp32 with the GEMM weight gradient for 3x3 models, since oneDNN's own NHWC
    weight gradient is slower than NCHW there and so are 7x7 convs (`kernel_size` > 3 keeps NCHW).
    A bool (the bench's measured rows pass one) is taken as it is."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    if value != "auto":
        raise ValueError(f"channels_last={value}: expected one of {', '.join(CHANNELS_LAST_CHOICES)}")
    if device.type == "cuda" or cpu_capability().startswith("AVX512"):
        return True
    return device.type == "cpu" and dtype == torch.float32 and conv_wgrad != "onednn" and kernel_size <= 3


CONV_WGRAD_CHOICES = ("auto", "gemm", "onednn")


def resolve_conv_wgrad(value, device, dtype, channels_last):
    """Whether convs compute their weight gradient by GEMMs (segnet.conv_weight_grad) instead of oneDNN.
    auto: yes for fp32 channels_last training on a CPU without AVX512, where oneDNN's NHWC
    weight-gradient kernel is much slower than its blocked-layout one (docs/performance.md).
    gemm: wherever it applies (fp32 on the CPU). onednn: never. Training always uses auto; the
    other two are for the bench, the profile and the tests (runtime.setup's `conv_wgrad`)."""
    if value not in CONV_WGRAD_CHOICES:
        raise ValueError(f"conv_wgrad={value}: expected one of {', '.join(CONV_WGRAD_CHOICES)}")
    if value == "auto":
        return (device.type == "cpu" and dtype == torch.float32 and channels_last
                and not cpu_capability().startswith("AVX512"))
    return value == "gemm" and device.type == "cpu"


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def to_device(images, device, channels_last):
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def resolve_num_workers(value, processes=1):
    """DataLoader worker processes: an integer >= 0, or auto: the cores this process may use,
    shared among `processes` (DDP ranks on the machine), less one for the main process; at least 2
    (2 on a 2-core machine, where a loader with 2 workers kept the step fed) and at most 16."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(2, min(16, cores // max(processes, 1) - 1))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or str(value).strip() != str(n):
        raise ValueError(f"--num_workers={value}: expected a value >= 0 or auto")
    return n


def loader_kwargs(device, num_workers):
    """DataLoader options for `num_workers` worker processes (a count, resolve_num_workers)."""
    return dict(num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


@dataclasses.dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype                 # autocast dtype; float32 = autocast off
    scaler: object                     # torch.amp.GradScaler for fp16 on CUDA, else None
    channels_last: bool
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    gemm_wgrad: bool = False           # convs compute weight gradients by GEMMs (segnet.conv_weight_grad)
    stop_vote: object = None           # under torchrun: ranks.StopVote, how all ranks agree to stop

    @property
    def ddp(self):
        return self.world > 1

    @property
    def master(self):
        return self.rank == 0

    @property
    def dtype_name(self):
        return str(self.dtype).replace("torch.", "")

    @property
    def precision(self):
        """How a forward pass computes, for the log: "autocast bfloat16", or "float32 (no autocast)"."""
        return "float32 (no autocast)" if self.dtype == torch.float32 else f"autocast {self.dtype_name}"

    def autocast(self):
        return autocast(self.device, self.dtype)

    def images(self, images):
        return to_device(images, self.device, self.channels_last)

    def place(self, model):
        """The model on the device, in the run's memory format, with the run's weight-gradient kernel."""
        model = model.to(self.device)
        use_gemm_weight_grad(model, self.gemm_wgrad)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @property
    def layout(self):
        """The memory format and weight-gradient kernel, for a log line."""
        return ("channels_last" if self.channels_last else "NCHW") + (", GEMM weight gradients" if self.gemm_wgrad else "")

    def loader_kwargs(self, num_workers):
        return loader_kwargs(self.device, num_workers)


def setup(device="auto", dtype="auto", channels_last="auto", distributed=False, conv_wgrad="auto", kernel_size=3,
          tf32=True, dist_timeout=600):
    """Resolve the device, autocast dtype and memory format, make the GradScaler (fp16 on CUDA only), set the
    backend flags (cuDNN autotuning; TF32 matmuls and convolutions on CUDA unless `tf32` is False, which
    evaluation asks for so that its fp32 figures are fp32's on every GPU) and, with `distributed` under
    torchrun (WORLD_SIZE > 1), join the process group: NCCL on CUDA, gloo on CPU, a collective waiting at most
    `dist_timeout` seconds for a peer (segnet/ranks.py)."""
    env = os.environ if distributed else {}
    world = int(env.get("WORLD_SIZE", 1))
    rank, local_rank = int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0))
    dev, stop_vote = resolve_device(device), None
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        stop_vote = ranks.init_process_group("nccl" if dev.type == "cuda" else "gloo", dist_timeout)
    amp_dtype = resolve_dtype(dtype, dev)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    cl = resolve_channels_last(channels_last, dev, amp_dtype, conv_wgrad, kernel_size)
    return Runtime(dev, amp_dtype, scaler, cl, rank, local_rank, world,
                   resolve_conv_wgrad(conv_wgrad, dev, amp_dtype, cl), stop_vote)


def describe_machine(device):
    """What a reported figure ran on: torch, the CPU model and its ISA flags, the GPU's name."""
    cpu_model, flags = platform.processor() or platform.machine(), []
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
            break
    return {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
            "cpu_model": cpu_model, "cpu_flags": flags, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16(),
            "cpu_capability": cpu_capability(),
            "cuda": torch.version.cuda if device.type == "cuda" else None}


def hardware_line(device):
    """One line for a report, e.g. "CPU AMD EPYC (2 cores; avx2; no native bf16), torch 2.14.1"."""
    m = describe_machine(device)
    if device.type == "cuda":
        return f"GPU {m['device_name']} (CUDA {m['cuda']}), torch {m['torch']}"
    bf16 = "native bf16" if m["cpu_native_bf16"] else "no native bf16"
    return f"CPU {m['cpu_model']} ({m['cpu_count']} cores; {', '.join(m['cpu_flags']) or 'no AVX2'}; {bf16}), torch {m['torch']}"


def rng_state(device):
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
