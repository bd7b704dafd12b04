#!/usr/bin/env bash
# The GPU measurements in one command, under 10 minutes (docs/gpu.md "The GPU script"):
#   bash tools/gpu_check.sh unpack   # only unpack the CamVid part(s) in shared/camvid_webp to data/CamVid
#   bash tools/gpu_check.sh          # unpack what is there, then: pytest -m cuda, the bench rows (whole
#                                    # process, utilisation, memory at batch 2/4/8), the profile by operator
#                                    # class, the batch-12 rates of segnet_basic_paper, the fp32 memory with a
#                                    # bounded cuDNN workspace, and a compiled row; all output under $OUT
# Each step has its own time limit and the script keeps to DEADLINE seconds in all, skipping what no
# longer fits, so a slow step costs only itself. Without the real CamVid (fewer than 367 training
# frames in data/CamVid) the steps that need it are skipped and say so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DATA=data/CamVid  # ignored by git; kept on a warm machine between calls
DEADLINE="${DEADLINE:-560}"
START=$SECONDS
LOG="$OUT/gpu_check.log"

step() {  # step NAME LIMIT_S COMMAND...: run it if LIMIT_S still fits before the deadline
    local name=$1 limit=$2; shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then echo "== $name: skipped, ${left}s left" | tee -a "$LOG"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s, at $((SECONDS - START))s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - START))s" | tee -a "$LOG"
}

if [ -d shared/camvid_webp ]; then
    step unpack 120 "$PY" tools/camvid_webp.py unpack --src=shared/camvid_webp --out="$DATA"
fi
[ "${1:-}" = unpack ] && exit 0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$LOG"
nproc | sed 's/^/cores: /' | tee -a "$LOG"
frames=$(ls "$DATA/train" 2>/dev/null | wc -l)
if [ "$frames" -ge 367 ] && [ "$(ls "$DATA/val" 2>/dev/null | wc -l)" -ge 101 ]; then REAL=1; ROOT=$DATA
else REAL=0; ROOT=none; echo "only $frames CamVid training frames in $DATA: the steps that need them are skipped" | tee -a "$LOG"; fi

# 1. the CUDA tests
step pytest_cuda 180 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/ -o addopts="" --junitxml="$OUT/pytest_cuda.xml"

# 2. the bench: yardstick, fp32 and bf16 channels_last at batch 2, the default row at 4 and 8, the
#    matmul peak at up to 8192; with the real CamVid the loader and Train_SegNet.py over 300 iterations
WHOLE=(); [ "$REAL" = 1 ] && WHOLE=(--whole_process --whole_iters=300)
step bench 300 "$PY" -m segnet.bench --device=cuda --modes=yardstick,float32_cl,bfloat16_cl --batch_sizes=2,4,8 \
    --iters=20 --warmup=5 --matmul_size=8192 --data_root="$ROOT" "${WHOLE[@]}" --json="$OUT/bench.json"

# 3. where a bf16 step's time goes, by operator class (batch 4, the CUDA target's row)
step profile 60 "$PY" -m segnet.bench.profile --device=cuda --batch_size=4 --steps=5 --rows=25

# 4. SegNet-Basic, the paper's recipe: batch-12 rates in bf16 and fp32 (channels_last, data on the device)
if [ "$REAL" = 1 ]; then
    for dt in bfloat16 float32; do
        step "rate_segnet_basic_paper_$dt" 90 "$PY" Train_SegNet.py --config=segnet_basic_paper --data_root="$DATA" \
            --device=cuda --dtype=$dt --max_iters=300 --eval_interval=0 --bn_recompute=false --log_interval=50 \
            --out_dir=checkpoints/rate_$dt --overwrite=true
    done
fi

# 5. fp32 memory: is the 9.6 GB peak cuDNN's autotuner workspace? The same row with the workspace capped
CUDNN_CONV_WSCAP_DBG=1024 step fp32_workspace_capped 60 "$PY" -m segnet.bench --device=cuda --modes=float32_cl \
    --iters=10 --warmup=3 --matmul_size=4096 --data_root=none --json="$OUT/bench_fp32_wscap.json"

# 6. torch.compile on the default row at batch 4 (compile stays false by default until this wins)
step compile 200 "$PY" -m segnet.bench --device=cuda --modes=bfloat16_cl --batch_size=4 --compile --iters=20 \
    --warmup=3 --matmul_size=8192 --data_root=none --json="$OUT/bench_compile.json"

echo "done in $((SECONDS - START))s; files in $OUT" | tee -a "$LOG"
