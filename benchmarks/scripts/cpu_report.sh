#!/usr/bin/env bash
# The committed CPU report, in one command (from the repository root, in the dev venv):
#
#   bash benchmarks/scripts/cpu_report.sh
#
# 1. weights: $WEIGHTS, else the bundled default checkpoint, else the reference weights (the authors' layout
#    rebuilt by tests/helpers/reference.py: deterministic, NOT trained; then no quality table);
# 2. `lightbsr export --split` (FP32 ONNX and its split graphs), `lightbsr quantize --int8` for --target tensorrt
#    and --target cpu, calibrated on training images ($CALIB, default ../shared/datasets/train/SunHays80; never on
#    benchmark images);
# 3. with trained weights and $SET5 present: `lightbsr eval` of the FP32, INT8-cpu and INT8-tensorrt graphs on Set5,
#    σ = 1.2 (the papers' protocol), on ONNX Runtime and, where OpenVINO is installed, on the openvino backend (and
#    in BF16 there, on a CPU with BF16);
# 4. `lightbsr bench`: roofline (GEMM peaks), latency of every target at $SIZES with GFLOP/s and % of peak, ONNX
#    Runtime's time by operator type, tiling throughput at $TILING_SIZE, an upscale under load; writes
#    $OUT/$NAME.json, .md and .png.
# Steps 1-3 reuse the files in $WORK when they are newer than their inputs (FRESH=1 rebuilds them).
# Environment overrides: OUT (benchmarks/results), NAME (cpu-<threads>core), WORK (runs/bench-cpu), THREADS (the
# usable CPUs), SIZES ("64 128"), REPEATS (5), MAX_SECONDS (8), TILING_SIZE (512), TILES ("128 256"),
# TILING_REPEATS (1), CALIB, SET5 (../shared/datasets/benchmark/Set5), TARGETS (see `lightbsr bench --help`).
set -euo pipefail
start=$SECONDS
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(python -c "from lightbsr.hardware import available_cpus; print(available_cpus())")}
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-cpu-${THREADS}core}
WORK=${WORK:-runs/bench-cpu}
SIZES=${SIZES:-64 128}
REPEATS=${REPEATS:-5}
MAX_SECONDS=${MAX_SECONDS:-8}
TILING_SIZE=${TILING_SIZE:-512}
TILES=${TILES:-128 256}
TILING_REPEATS=${TILING_REPEATS:-1}
CALIB=${CALIB:-../shared/datasets/train/SunHays80}
SET5=${SET5:-../shared/datasets/benchmark/Set5}
TARGETS=${TARGETS:-torch-fp32 torch-channels-last-fp32 torch-compile-fp32 ort-cpu ort-cpu-spin ort-cpu-extended openvino-cpu openvino-cpu-bf16}
ARCH=lightbsr_student_x4
mkdir -p "$WORK" "$OUT"
[ -n "${FRESH:-}" ] && rm -f "$WORK"/*.onnx "$WORK"/*.json
if [ ! -d "$CALIB" ]; then
    echo "cpu_report.sh: no calibration images at $CALIB (set CALIB to a folder of training HR images)" >&2
    exit 2
fi

# 1. weights
if [ -z "${WEIGHTS:-}" ]; then
    WEIGHTS=$(python -c "from lightbsr.weights import default_checkpoint as d; print(d())" 2>/dev/null || true)
fi
[ -n "$WEIGHTS" ] && [ -f "$WEIGHTS" ] && WEIGHTS=$(realpath --relative-to=. "$WEIGHTS")
TRAINED=1
if [ -z "$WEIGHTS" ] || [ ! -f "$WEIGHTS" ]; then
    TRAINED=0
    WEIGHTS=$WORK/$ARCH.reference.safetensors
    if [ ! -f "$WEIGHTS" ]; then
        python - "$WORK/$ARCH.authors.safetensors" "$ARCH" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, str(Path("tests/helpers").resolve()))
from reference import reference_state_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

save_file(reference_state_dict(sys.argv[2]), sys.argv[1])
PY
        lightbsr convert "$WORK/$ARCH.authors.safetensors" -o "$WEIGHTS" --arch "$ARCH"
    fi
fi

# 2. ONNX FP32 (+ split graphs) and INT8 for both targets
FP32=$WORK/model.onnx
if [ ! -f "$FP32" ] || [ "$WEIGHTS" -nt "$FP32" ]; then
    lightbsr export "$WEIGHTS" -o "$FP32" --split
fi
for target in cpu tensorrt; do
    int8=$WORK/model.int8-$target.onnx
    if [ ! -f "$int8" ] || [ "$FP32" -nt "$int8" ]; then
        lightbsr quantize "$FP32" --int8 --target "$target" --calib "$CALIB" --calib-count 16 --calib-size 48 \
            --seed 0 -o "$int8"
    fi
done

# 3. quality on Set5, σ = 1.2 (trained weights only)
EVALS=()
if [ "$TRAINED" = 1 ] && [ -d "$SET5" ]; then
    for model in model model.int8-cpu model.int8-tensorrt; do
        if [ ! -f "$WORK/eval-$model.json" ] || [ "$WORK/$model.onnx" -nt "$WORK/eval-$model.json" ]; then
            lightbsr eval "$WORK/$model.onnx" --dataset "$SET5" --sigma 1.2 --json --no-progress \
                > "$WORK/eval-$model.json.partial"
            mv "$WORK/eval-$model.json.partial" "$WORK/eval-$model.json"
        fi
        EVALS+=("$WORK/eval-$model.json")
    done
    # the same graphs on the openvino backend, where OpenVINO is installed: as they are (FP32; INT8 with FP32 float
    # layers), and on a CPU with BF16 with --bf16 (what is not INT8 in BF16)
    if python -c "import openvino" 2>/dev/null; then
        BF16=$(python -c "from lightbsr.runtime.openvino_backend import cpu_has_bf16, ov; print(int(cpu_has_bf16(ov.Core())))")
        runs=("model" "model.int8-cpu" "model.int8-tensorrt")
        [ "$BF16" = 1 ] && runs+=("model --bf16" "model.int8-cpu --bf16" "model.int8-tensorrt --bf16")
        for run in "${runs[@]}"; do
            model=${run%% *}
            flags=${run#"$model"}
            out="$WORK/eval-$model.openvino${flags// /}.json"
            if [ ! -f "$out" ] || [ "$WORK/$model.onnx" -nt "$out" ]; then
                # shellcheck disable=SC2086
                lightbsr eval "$WORK/$model.onnx" --backend openvino $flags --dataset "$SET5" --sigma 1.2 --json \
                    --no-progress > "$out.partial"
                mv "$out.partial" "$out"
            fi
            EVALS+=("$out")
        done
    fi
fi

# 4. one bench run: everything measured in the same process, on the same machine state
if [ "$TRAINED" = 1 ]; then
    weights_note="Weights: $WEIGHTS (trained)."
else
    weights_note="Weights: the authors' reference checkpoint layout rebuilt by tests/helpers/reference.py (deterministic, NOT trained): accuracy columns measure backend agreement, not image quality."
fi
# shellcheck disable=SC2086
lightbsr bench "$WEIGHTS" --complexity --latency \
    --onnx "$FP32" "$WORK/model.int8-cpu.onnx" "$WORK/model.int8-tensorrt.onnx" \
    --targets $TARGETS --size $SIZES --batch 1 --threads "$THREADS" \
    --warmup 1 --repeats "$REPEATS" --min-repeats 2 --max-seconds "$MAX_SECONDS" \
    --ort-profile --tiling --tiling-size "$TILING_SIZE" --tiles $TILES --tiling-repeats "$TILING_REPEATS" \
    --contention \
    ${EVALS[@]+--eval-json "${EVALS[@]}"} \
    --note "$weights_note" \
    --note "INT8: lightbsr quantize --int8 --target cpu|tensorrt, calibrated on 16 LR crops (48×48) of training images ($CALIB); the accuracy image is a crop of examples/Set5/baby.png; quality: lightbsr eval on $SET5, σ = 1.2." \
    --note "Made by: bash benchmarks/scripts/cpu_report.sh (THREADS=$THREADS SIZES='$SIZES' REPEATS=$REPEATS MAX_SECONDS=$MAX_SECONDS TILING_SIZE=$TILING_SIZE TILES='$TILES' TILING_REPEATS=$TILING_REPEATS)." \
    ${NOTE:+--note "$NOTE"} \
    --json "$OUT/$NAME.json" --markdown "$OUT/$NAME.md" --plot "$OUT/$NAME.png" > /dev/null
echo "wrote $OUT/$NAME.json $OUT/$NAME.md $OUT/$NAME.png in $((SECONDS - start)) s"
