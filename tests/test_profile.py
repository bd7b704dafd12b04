"""python -m segnet.profile: the operator table and the oneDNN kernel summary."""
import subprocess
import sys

import torch

from segnet import profile

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
    out = subprocess.run([sys.executable, "-m", "segnet.profile", "--model=segnet_lite", "--height=16", "--width=24",
                          "--steps=1", "--rows=4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("segnet_lite 16x24, batch 2, training step, autocast ")
    assert "aten::" in out.stdout and "Self CPU" in out.stdout
    if torch.backends.mkldnn.is_available():
        assert "oneDNN primitives, one step" in out.stdout
        assert any(line.split()[:1] == ["convolution"] for line in lines)


def test_profile_refuses_a_bad_option():
    out = subprocess.run([sys.executable, "-m", "segnet.profile", "--conv_wgrad=blas"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --conv_wgrad=blas: expected one of auto, gemm, onednn"]
