#!/usr/bin/env bash
# The committed CPU report, in one command (from the repository root, in the dev venv):
#
#   bash benchmarks/scripts/cpu_report.sh
#
# 1. rebuilds the reference weights (authors' layout, tests/helpers/reference.py: deterministic, NOT trained)
#    and converts them with `lightbsr convert`;
# 2. exports ONNX FP32 (`lightbsr export`), converts to FP16 and INT8 Q/DQ (`lightbsr quantize`;
#    INT8 calibrated on the Set5 images of examples/ other than baby.png, the accuracy image);
# 3. `lightbsr bench` writes $OUT/$NAME.json, .md and .png.
# Environment overrides: OUT (benchmarks/results), NAME (cpu-<nproc>core), WORK (runs/bench-cpu),
# THREADS (nproc), SIZES ("64 128"), REPEATS (10), MAX_SECONDS (15), CALIB (a folder of HR images).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-cpu-${THREADS}core}
WORK=${WORK:-runs/bench-cpu}
SIZES=${SIZES:-64 128}
REPEATS=${REPEATS:-10}
MAX_SECONDS=${MAX_SECONDS:-15}
ARCH=lightbsr_student_x4
mkdir -p "$WORK" "$OUT"
if [ -z "${CALIB:-}" ]; then
    CALIB=$WORK/calib
    mkdir -p "$CALIB"
    cp examples/Set5/bird.png examples/Set5/butterfly.png examples/Set5/head.png examples/Set5/woman.png "$CALIB/"
fi

python - "$WORK/$ARCH.authors.safetensors" "$ARCH" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, str(Path("tests/helpers").resolve()))
from reference import reference_state_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

save_file(reference_state_dict(sys.argv[2]), sys.argv[1])
PY
lightbsr convert "$WORK/$ARCH.authors.safetensors" -o "$WORK/$ARCH.safetensors" --arch "$ARCH"
lightbsr export "$WORK/$ARCH.safetensors" -o "$WORK/$ARCH.onnx"
lightbsr quantize "$WORK/$ARCH.onnx" --fp16 -o "$WORK/$ARCH.fp16.onnx"
lightbsr quantize "$WORK/$ARCH.onnx" --int8 --calib "$CALIB" --calib-count 16 --calib-size 48 --seed 0 \
    -o "$WORK/$ARCH.int8.onnx"

# shellcheck disable=SC2086
lightbsr bench "$WORK/$ARCH.safetensors" --complexity --latency \
    --onnx "$WORK/$ARCH.onnx" "$WORK/$ARCH.fp16.onnx" "$WORK/$ARCH.int8.onnx" \
    --targets torch-fp32 torch-bf16 ort-cpu --size $SIZES --batch 1 --threads "$THREADS" \
    --warmup 1 --repeats "$REPEATS" --min-repeats 2 --max-seconds "$MAX_SECONDS" \
    --note "Weights: the authors' reference checkpoint layout rebuilt by tests/helpers/reference.py (deterministic, NOT trained): accuracy columns measure backend agreement, not image quality." \
    --note "INT8: lightbsr quantize --int8, calibrated on 16 LR crops (48×48) from examples/Set5 without baby.png; the accuracy image is a crop of examples/Set5/baby.png." \
    --note "Made by: bash benchmarks/scripts/cpu_report.sh (THREADS=$THREADS SIZES='$SIZES' REPEATS=$REPEATS MAX_SECONDS=$MAX_SECONDS)." \
    --json "$OUT/$NAME.json" --markdown "$OUT/$NAME.md" --plot "$OUT/$NAME.png" > /dev/null
echo "wrote $OUT/$NAME.json $OUT/$NAME.md $OUT/$NAME.png"
