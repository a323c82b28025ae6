#!/usr/bin/env bash
# Accuracy of the deployments of the bundled model (README "Precision, backends and tiling"), in one command:
#
#   bash benchmarks/scripts/accuracy_report.sh
#
# 1. exports the bundled checkpoint to ONNX (with the split graphs), converts it to FP16, plain INT8 Q/DQ and
#    INT8 with --max-drop 0.2 (calibrated on training images, never on the benchmark images);
# 2. `lightbsr eval` of PyTorch (the checkpoint) and of each ONNX file (ONNX Runtime, CPU) on Set5 and Set14 at
#    σ = 1.2 / 2.4 / 3.6, and the drops against ONNX FP32 (and ONNX FP32 against PyTorch);
# 3. tiling: blend and exact tiles against the untiled output on Set14 (σ = 2.4, tile 64, overlap 16),
#    PyTorch and ONNX Runtime;
# 4. CPU latency of ONNX FP32 and both INT8 files against PyTorch FP32 (lightbsr bench).
# Writes $OUT/accuracy-default.{md,json}, $OUT/tiling-set14-default.{txt,json}, $OUT/int8-cpu-default.{json,md}.
# Environment: OUT (benchmarks/results), WORK (runs/accuracy), BENCH (../shared/datasets/benchmark: Set5, Set14),
# CALIB (../shared/datasets/train/SunHays80), MODEL (the bundled checkpoint), THREADS (nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results}
WORK=${WORK:-runs/accuracy}
BENCH=${BENCH:-../shared/datasets/benchmark}
CALIB=${CALIB:-../shared/datasets/train/SunHays80}
MODEL=${MODEL:-$(python -c 'from lightbsr.weights import default_checkpoint; print(default_checkpoint())')}
MODEL=$(realpath --relative-to=. "$MODEL")
THREADS=${THREADS:-$(nproc)}
mkdir -p "$WORK" "$OUT"
onnx=$WORK/default.onnx
lightbsr export "$MODEL" -o "$onnx" --split
lightbsr quantize "$onnx" --fp16 -o "$WORK/default.fp16.onnx"
lightbsr quantize "$onnx" --int8 --calib "$CALIB" -o "$WORK/default.int8.onnx"
lightbsr quantize "$onnx" --int8 --calib "$CALIB" --max-drop 0.2 -o "$WORK/default.int8-maxdrop.onnx" \
    | tee "$WORK/int8-maxdrop.txt"

sets=("$BENCH/Set5" "$BENCH/Set14")
lightbsr eval "$MODEL" --dataset "${sets[@]}" --json --no-progress > "$WORK/eval-torch.json"
for name in default default.fp16 default.int8 default.int8-maxdrop; do
    lightbsr eval "$WORK/$name.onnx" --dataset "${sets[@]}" --json --no-progress > "$WORK/eval-$name.json"
done
python -m lightbsr.benchmarks.accuracy --reference "ONNX FP32=$WORK/eval-default.json" \
    --candidate "ONNX FP16=$WORK/eval-default.fp16.json" "ONNX INT8=$WORK/eval-default.int8.json" \
    "ONNX INT8 --max-drop 0.2=$WORK/eval-default.int8-maxdrop.json" \
    --json "$WORK/drops-vs-onnx.json" --markdown "$WORK/drops-vs-onnx.md" > /dev/null
python -m lightbsr.benchmarks.accuracy --reference "PyTorch FP32=$WORK/eval-torch.json" \
    --candidate "ONNX Runtime FP32=$WORK/eval-default.json" \
    --json "$WORK/drops-vs-torch.json" --markdown "$WORK/drops-vs-torch.md" > /dev/null
{
    echo "# Accuracy of the bundled model's deployments"
    echo
    echo "Model: \`$MODEL\`. Made by: \`bash benchmarks/scripts/accuracy_report.sh\`. INT8 calibrated on \`$CALIB\`."
    echo
    cat "$WORK/drops-vs-onnx.md"
    echo
    cat "$WORK/drops-vs-torch.md"
    echo
    echo "\`lightbsr quantize --int8 --max-drop 0.2\` said:"
    echo
    echo '```text'
    cat "$WORK/int8-maxdrop.txt"
    echo '```'
} > "$OUT/accuracy-default.md"
python - "$WORK" "$OUT/accuracy-default.json" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
doc = {name: json.loads((work / f"drops-vs-{name}.json").read_text()) for name in ("onnx", "torch")}
Path(sys.argv[2]).write_text(json.dumps(doc, indent=1))
PY

python -m lightbsr.benchmarks.consistency --checkpoint "$MODEL" --onnx "$onnx" --dataset "$BENCH/Set14" \
    --sigma 2.4 --tile 64 --tile-overlap 16 --json "$OUT/tiling-set14-default.json" > "$OUT/tiling-set14-default.txt"

lightbsr bench "$MODEL" --latency --onnx "$onnx" "$WORK/default.int8.onnx" "$WORK/default.int8-maxdrop.onnx" \
    --targets torch-fp32 ort-cpu --size 64 128 --batch 1 --threads "$THREADS" --warmup 1 --repeats 10 \
    --min-repeats 3 --max-seconds 15 \
    --note "Made by: bash benchmarks/scripts/accuracy_report.sh (the bundled model; INT8 calibrated on $CALIB)." \
    --json "$OUT/int8-cpu-default.json" --markdown "$OUT/int8-cpu-default.md" > /dev/null
echo "wrote $OUT/accuracy-default.{md,json} $OUT/tiling-set14-default.{txt,json} $OUT/int8-cpu-default.{json,md}"
