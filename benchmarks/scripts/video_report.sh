#!/usr/bin/env bash
# The committed video report, in one command (from the repository root, in the dev venv):
#
#   bash benchmarks/scripts/video_report.sh
#
# 1. the model: $MODEL if set (a lightbsr checkpoint, or an ONNX file with its split graphs beside it),
#    else the bundled default model (lightbsr.weights.default_checkpoint), else the reference weights
#    (tests/runtime_models.py: deterministic, NOT trained); a checkpoint is exported with `lightbsr export --split`;
# 2. the clip (python -m lightbsr.benchmarks.video clip): three scenes panning over two Set14 images and one
#    BSD68 image, setting-1 degradation (σ = 1.2, 2.4, 3.6), two cuts, an audio track; lossless FFV1;
# 3. `lightbsr upscale` on ONNX Runtime (CPU) with --idr per-frame, per-scene and fixed (lossless FFV1 output,
#    so the measures see the model, not the codec), and per-scene with the default encoder (libx264, crf 18);
# 4. python -m lightbsr.benchmarks.video report writes $OUT/$NAME.json and .md.
# Environment overrides: MODEL, DATASETS (../shared/datasets/benchmark), OUT (benchmarks/results),
# NAME (video-cpu-<nproc>core), WORK (runs/video-report), FRAMES (16 per scene).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATASETS=${DATASETS:-../shared/datasets/benchmark}
OUT=${OUT:-benchmarks/results}
NAME=${NAME:-video-cpu-$(nproc)core}
WORK=${WORK:-runs/video-report}
FRAMES=${FRAMES:-16}
mkdir -p "$WORK" "$OUT"
if [ ! -d "$DATASETS/Set14" ] || [ ! -d "$DATASETS/BSD68" ]; then
    echo "error: $DATASETS has no Set14/ and BSD68/ (set DATASETS)" >&2
    exit 2
fi

WEIGHTS=""
if [ -z "${MODEL:-}" ]; then
    if MODEL=$(python -c "from lightbsr.weights import default_checkpoint; print(default_checkpoint())" 2>/dev/null); then
        WEIGHTS="the bundled default model ($(basename "$MODEL"))"
    else
        python tests/runtime_models.py "$WORK" > /dev/null
        MODEL=$WORK/lightbsr_student_x4_ref.safetensors
        WEIGHTS="the authors' reference checkpoint layout rebuilt by tests/reference.py (deterministic, NOT trained): quality figures compare the modes, they do not measure image quality"
    fi
fi
WEIGHTS=${WEIGHTS:-$MODEL}
case "$MODEL" in
    *.onnx) ONNX=$MODEL ;;
    *) ONNX=$WORK/model.onnx
       lightbsr export "$MODEL" -o "$ONNX" --split > /dev/null ;;
esac

python -m lightbsr.benchmarks.video clip --datasets "$DATASETS" --out "$WORK" --frames "$FRAMES"
runs=()
for idr in per-frame per-scene fixed; do
    lightbsr upscale -i "$WORK/clip.mkv" -o "$WORK/$idr.mkv" -m "$ONNX" --device cpu --overwrite \
        --codec ffv1 --pix-fmt bgr0 --idr "$idr" --report "$WORK/$idr.json"
    runs+=(--run "$idr" "$WORK/$idr.mkv" "$WORK/$idr.json")
done
lightbsr upscale -i "$WORK/clip.mkv" -o "$WORK/per-scene-x264.mp4" -m "$ONNX" --device cpu --overwrite \
    --report "$WORK/per-scene-x264.json"
runs+=(--run "per-scene, libx264" "$WORK/per-scene-x264.mp4" "$WORK/per-scene-x264.json")

python -m lightbsr.benchmarks.video report --clip "$WORK/clip.json" "${runs[@]}" \
    --note "Weights: $WEIGHTS." \
    --note "ONNX Runtime on the CPU (split graphs from lightbsr export --split), whole frames (no tiles), the threads ONNX Runtime picks; the machine may be shared: throughput is indicative." \
    --note "Made by: bash benchmarks/scripts/video_report.sh (FRAMES=$FRAMES)." \
    --json "$OUT/$NAME.json" --markdown "$OUT/$NAME.md" > /dev/null
echo "wrote $OUT/$NAME.json $OUT/$NAME.md"
