#!/usr/bin/env bash
# One prepared run on a CUDA machine (the lent H100/H200; docs/benchmarks.md has the results):
#   1. the GPU tests (TorchScript/TensorRT on CUDA vs eager; the server on CUDA vs the CPU Predictor),
#   2. bench/gpu_check.py: parity on the trained default model, latency per runtime (yolox-s, random weights, 640),
#      and bench/gpu_e2e.py: compiled fp16 with CUDA graphs, nvJPEG decode + letterbox on the GPU, end to end from
#      JPEG bytes, each against eager fp32 / the host path in the same run,
#   3. bench/load.py with the server on the GPU (the default model exported to TorchScript fp16),
#   4. bench/load.py on that machine's CPU cores (the embedded ONNX default bundle), for the core-count effect,
#   5. bench/load.py with the server on the GPU serving a yolox-s 640 (random weights, TorchScript fp16): a model
#      whose GPU compute, not the host's per-image work, sets the pace.
# Usage: bash bench/device_check.sh   (PY=python, OUT=dir for the logs, STEPS="pytest_gpu export ..." to run only
# some; wheels in .whl/ are installed first)
set -u
PY=${PY:-python3}
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then  # packages the machine lacks, carried as wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
STEPS=${STEPS:-pytest_gpu gpu_check gpu_e2e export load_cuda load_cpu weights_s export_s load_cuda_s}
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUT/NAME.log, remember a failure
    local name=$1 limit=$2
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "=== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc"
    [ "$rc" = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
echo "cpus: $(nproc)"
step pytest_gpu 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests/export/test_gpu.py tests/service/test_cuda.py -rs
step gpu_check 200 $PY bench/gpu_check.py --batch-sizes 1 8 32 --runs 30
step gpu_e2e 240 $PY bench/gpu_e2e.py --arch yolox-s --batch-sizes 1 8 32 --runs 30
BUNDLE=/tmp/nano_cuda_fp16
step export 120 $PY -m yoloxpai.cli export --weights model/assets/default_weights.safetensors --out $BUNDLE \
    --format torchscript --precision fp16 --max-batch 16 --img-size 320 320 --score-threshold 0.05 --iou-threshold 0.65 \
    --max-detections 100 --default-score-threshold 0.3 --name shapes-nano --force
step load_cuda 200 $PY bench/load.py --bundle $BUNDLE --device cuda:0 --backend torchscript \
    --protocols rest,grpc --concurrency 1,16,64 --duration-s 3 --rounds 1
step load_cpu 200 $PY bench/load.py --bundle model/assets/default_bundle \
    --protocols rest,grpc --concurrency 1,16,64 --duration-s 3 --rounds 2
S_WEIGHTS=/tmp/yolox_s_random.safetensors
BUNDLE_S=/tmp/yolox_s_cuda_fp16
step weights_s 120 $PY -c "import sys; from model.checkpoint import save_weights; from model.classes import \
default_class_names; from model.yolox import build_model; m = build_model('yolox-s'); \
save_weights(sys.argv[1], m.state_dict(), m.cfg, default_class_names(80))" $S_WEIGHTS
step export_s 120 $PY -m yoloxpai.cli export --weights $S_WEIGHTS --out $BUNDLE_S --format torchscript \
    --precision fp16 --max-batch 32 --name yolox-s --force
step load_cuda_s 200 $PY bench/load.py --bundle $BUNDLE_S --device cuda:0 --backend torchscript \
    --protocols rest,grpc --concurrency 1,16,64 --duration-s 3 --rounds 1
exit $status
