"""python -m segnet.bench.profile: the operator table and the oneDNN kernel summary."""
import subprocess
import sys

import pytest
import torch

from segnet.bench import profile

VERBOSE = """onednn_verbose,v1,info,oneDNN v3.7.1
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx2,forward_training,src:f32,,mb2_ic3oc64,0.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32::blocked:abcd::f0,attr-scratchpad:user,alg:convolution_direct,mb2_ic3oc64,35.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32::blocked:abcd::f0,attr-scratchpad:user,alg:convolution_direct,mb2_ic64oc64,4.5
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:aBcd8b::f0 dst:f32::blocked:abcd::f0,attr-scratchpad:user,,2x64x360x480,31.25
"""


def test_onednn_summary_sums_exec_lines_by_kernel():
    s = profile.onednn_summary(VERBOSE)
    assert s == {("convolution", "jit:avx2", "forward_training"): [2, 40.0],
                 ("reorder", "jit:blk", "undef"): [1, 31.25]}  # the create line is not an execution


def test_profile_command_on_a_tiny_model():
    out = subprocess.run([sys.executable, "-m", "segnet.bench.profile", "--model=segnet_lite", "--height=16", "--width=24",
                          "--steps=1", "--rows=4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("segnet_lite 16x24, batch 2, training step, autocast ")
    assert "aten::" in out.stdout and "Self CPU" in out.stdout
    shares = [float(line.split()[-1].rstrip("%")) for line in lines[lines.index(next(
        line for line in lines if line.startswith("by operator class"))) + 1:] if line.endswith("%") and "ms/step" in line]
    assert shares and abs(sum(shares) - 100) < 0.5  # every operator's self time in one class
    assert any(line.split()[:1] == ["convolution"] and "ms/step" in line for line in lines)
    if torch.backends.mkldnn.is_available():
        assert "oneDNN primitives, one step" in out.stdout
        assert any(line.split()[:1] == ["convolution"] for line in lines)


def test_profile_refuses_a_bad_option():
    out = subprocess.run([sys.executable, "-m", "segnet.bench.profile", "--conv_wgrad=blas"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --conv_wgrad=blas: expected one of auto, gemm, onednn"]


class Event:
    def __init__(self, key, cpu_us):
        self.key, self.self_cpu_time_total, self.self_device_time_total = key, cpu_us, 0.0


def test_operator_classes_sum_self_times():
    events = [Event("aten::mkldnn_convolution", 6000), Event("aten::convolution_backward", 2000),
              Event("aten::native_batch_norm", 1000), Event("aten::max_unpool2d", 500),
              Event("aten::max_pool2d_with_indices", 250), Event("aten::threshold_backward", 150),
              Event("aten::nll_loss2d_forward", 50), Event("aten::_foreach_add_", 50), Event("aten::empty", 0)]
    got = profile.time_by_class(events, "cpu")
    assert list(got) == ["convolution", "batch norm", "unpooling", "pooling", "elementwise", "loss", "optimizer"]
    assert got["convolution"] == pytest.approx((8.0, 0.8)) and got["unpooling"] == pytest.approx((0.5, 0.05))
    assert profile.op_class("aten::scatter") == "unpooling" and profile.op_class("aten::copy_") == "layout copies"
