#!/usr/bin/env bash
# GPU check, at most 8 minutes on one GPU: the CUDA tests, then the full-size benchmark (the release
# architecture with random weights, bfloat16, 4 cameras x 4 frames of 1920x1080, 1 and 6 samples, every
# option of bench/bench_model.py, the reference-shaped baseline included), and its table.
#
#   bash bench/gpu_check.sh                 on the GPU machine; writes to $OUT (or bench/results/)
#   bash bench/gpu_check.sh --fetch-wheels  on a machine with PyPI: the pinned wheels into .whl/
#                                           (for a GPU machine without network; add /.whl/ to .git/info/exclude)
#   bash bench/gpu_check.sh --cpu-smoke     the same steps on the CPU with the tiny config (checks the script)
#
# The GPU image's own transformers may be another major version: the pinned one (requirements.txt) is
# installed from .whl/ when present, else from PyPI, into /tmp/alpamayo-site, ahead of the image's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PINNED=(transformers==4.57.1 tokenizers==0.22.2 huggingface-hub==0.36.2 safetensors==0.8.0)
WHEELS=.whl
SITE=/tmp/alpamayo-site
PYTHON=${PYTHON:-python3}
RESULTS=${OUT:-bench/results}
TEST_TIMEOUT_S=150   # test/model/test_cuda.py
BENCH_EAGER_TIMEOUT_S=180     # model build (11 B parameters), 3 warm-up + 3 timed ticks of 8 options
BENCH_COMPILED_TIMEOUT_S=150  # model build, the flow compiled for 1 and 6 samples (CUDA graphs), ticks
BENCH_TICKS=${GPU_CHECK_TICKS:-3}
BENCH_TOKENS=${GPU_CHECK_TOKENS:-32}

log() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

fetch_wheels() {
    mkdir -p "$WHEELS"
    for spec in "${PINNED[@]}"; do
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$WHEELS" "$spec"
    done
    ls -l "$WHEELS"
}

pinned_present() {
    "$PYTHON" - "${PINNED[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, wanted = spec.split("==")
    try:
        got = version(name)
    except PackageNotFoundError:
        got = None
    if got != wanted:
        sys.exit(f"{name} {got}, want {wanted}")
EOF
}

install_pinned() {
    if pinned_present 2>/dev/null; then
        log "pinned packages already installed"
        return
    fi
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        log "installing the pinned packages from $WHEELS/"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    else
        log "installing the pinned packages from PyPI (no $WHEELS/ wheels here)"
        "$PYTHON" -m pip install -q --no-deps --no-cache-dir --upgrade --target "$SITE" "${PINNED[@]}"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    pinned_present
}

case "${1:-}" in
    --fetch-wheels) fetch_wheels; exit 0 ;;
    --cpu-smoke) DEVICE=cpu; CONFIG=tiny; BENCH_TICKS=1; BENCH_TOKENS=2 ;;
    "") DEVICE=cuda; CONFIG=full ;;
    *) echo "usage: $0 [--fetch-wheels | --cpu-smoke]" >&2; exit 2 ;;
esac

mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/alpamayo-inductor}
[ "$DEVICE" = cuda ] && install_pinned
"$PYTHON" - "$DEVICE" <<'EOF'
import sys
import torch
import transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA device visible")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu.txt"

status=0
log "test/model/test_cuda.py"
timeout "$TEST_TIMEOUT_S" "$PYTHON" -m pytest -q -p no:cacheprovider test/model/test_cuda.py 2>&1 \
    | tee "$RESULTS/test_cuda.txt" || status=1

# Two runs, so that a slow compilation cannot cost the eager table: every eager option with the
# reference-shaped baseline first, then the compiled ones beside the plain path (ratios are per run).
EAGER=(plain "vision reuse" "device preprocessing" "6 shared prefill" "6 per-sample prefill" "6 shared reasoning"
       reference-shaped "reference-shaped 6")
COMPILED=(plain "compiled flow" "6 fastest")
bench() {  # name, timeout, options...
    local name=$1 limit=$2
    shift 2
    log "bench/bench_model.py --configs $CONFIG: $name ($BENCH_TICKS ticks, $BENCH_TOKENS tokens)"
    timeout "$limit" "$PYTHON" bench/bench_model.py --configs "$CONFIG" --device "$DEVICE" --ticks "$BENCH_TICKS" \
        --tokens "$BENCH_TOKENS" --out "$RESULTS/bench_${CONFIG}_$name.json" --options "$@" 2>&1 \
        | tee "$RESULTS/bench_${CONFIG}_$name.txt" || status=1
}
bench eager "$BENCH_EAGER_TIMEOUT_S" "${EAGER[@]}"
bench compiled "$BENCH_COMPILED_TIMEOUT_S" "${COMPILED[@]}"
log "done (status $status); results in $RESULTS/"
exit "$status"
