"""One runtime setup: what `auto` resolves to on each kind of machine."""
import pytest
import torch

from segnet import runtime


@pytest.mark.parametrize("capability, expected", [("AVX512", True), ("AVX512_VNNI", True), ("AVX2", True),
                                                  ("DEFAULT", True), ("", True)])
def test_channels_last_auto_follows_the_cpu_isa(monkeypatch, capability, expected):
    monkeypatch.setattr(runtime, "cpu_capability", lambda: capability)
    cpu = torch.device("cpu")
    assert runtime.resolve_channels_last("auto", cpu, torch.float32) is expected
    # without AVX512, NHWC only pays with the GEMM weight gradient, which is fp32 only
    avx512 = capability.startswith("AVX512")
    assert runtime.resolve_channels_last("auto", cpu, torch.float32, "onednn") is avx512
    assert runtime.resolve_channels_last("auto", cpu, torch.bfloat16) is avx512
    assert runtime.resolve_channels_last("auto", cpu, torch.float32, kernel_size=7) is avx512  # SegNet-Basic
    assert runtime.resolve_channels_last("auto", torch.device("cuda"), torch.bfloat16) is True


def test_channels_last_explicit_and_stored_values():
    cpu = torch.device("cpu")
    assert runtime.resolve_channels_last("true", cpu, torch.float32) is True
    assert runtime.resolve_channels_last("false", cpu, torch.bfloat16) is False
    assert runtime.resolve_channels_last(True, cpu, torch.float32) is True  # a bool, as the bench's rows pass
    with pytest.raises(ValueError, match="channels_last=yes: expected one of auto, true, false"):
        runtime.resolve_channels_last("yes", cpu, torch.float32)


def test_setup_on_this_machine_reports_what_it_chose():
    rt = runtime.setup("cpu", "float32", "auto")
    avx512 = runtime.cpu_capability().startswith("AVX512")
    assert rt.channels_last is True and rt.gemm_wgrad is not avx512
    assert rt.layout == "channels_last" + ("" if avx512 else ", GEMM weight gradients")
    line = runtime.hardware_line(torch.device("cpu"))
    assert line.startswith("CPU ") and "bf16" in line and torch.__version__ in line
